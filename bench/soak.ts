/*
 * bench/soak - the long soak (issue 7, seed 002): at least 200,000 messages
 * with unique headers through a Petrel child process relaying to a peer that
 * defers the first attempt of every 100th message (test/helpers/soak has the
 * details). Prints a `sample ...` line every 10 s (RSS, heap, queue latency
 * from the event log, backlog, oldest waiting recipient, retry-schedule
 * violations) and a summary:
 *
 *   messages=N refused=N connection_errors=N delivered=N lost=N duplicates=N deferred_attempts=N
 *   schedule_violations=N warmup_rss_mb=N end_rss_mb=N rss_ratio=R
 *   warmup_heap_mb=N end_heap_mb=N max_latency_ms=N seconds=N finished=B
 *   verdict=PASS|FAIL
 *
 * PASS: finished, nothing refused, lost or doubled, no schedule violation,
 * and memory at the end within 20% of memory after warm-up.
 *
 * Bounded: --messages and --max-seconds. Usage:
 *   node dist/bench/soak.js [--messages 200000] [--sessions 16] [--rate 0]
 *     [--sample-seconds 10] [--max-seconds 3600] [--defer-every 100] [--workers N]
 */
import { arg } from './lib.js';
import { runSoak, summaryLine } from '../test/helpers/soak.js';

async function main(): Promise<void> {
  const messages = Number(arg('messages', '200000'));
  const r = await runSoak({
    messages,
    sessions: Number(arg('sessions', '16')),
    rate: Number(arg('rate', '0')),
    sampleMs: Number(arg('sample-seconds', '10')) * 1000,
    maxSeconds: Number(arg('max-seconds', '3600')),
    deferEvery: Number(arg('defer-every', '100')),
    retrySeconds: [5, 15, 60],
    warmupFraction: Number(arg('warmup', '0.1')),
    firstAttemptSlackMs: 60_000,
    bodySize: Number(arg('size', '2000')),
    ...(arg('workers', '') ? { workers: Number(arg('workers', '')) } : {}),
    log: (l) => console.log(l),
  });
  const pass = r.finished && r.refused === 0 && r.connectionErrors === 0 && r.lost === 0 && r.duplicates === 0 && r.scheduleViolations === 0 && r.endRssMb <= r.warmupRssMb * 1.2;
  console.log(`${summaryLine(r)} verdict=${pass ? 'PASS' : 'FAIL'}`);
  process.exit(pass ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
