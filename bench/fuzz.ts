/*
 * bench/fuzz - the long fuzz run (issue 7): the CI fuzzers' generators
 * (test/fuzz/smtp-generators, config-generators) for at least a million SMTP
 * sessions, each run through test/fuzz/session-runner (an inbound Session over
 * an in-memory socket, real enqueue path), plus configuration files through
 * parseConfigText.
 *
 * Bounded: stops at --sessions or --max-seconds, whichever comes first.
 * Prints a progress line every 10 s and at the end:
 *
 *   sessions=N crashes=N hangs=N violations=N unhandled=N configs=N config_violations=N seconds=N
 *
 * violations: any other property broken (malformed reply, a reply without an
 * enhanced code, acknowledged but not stored, a bare CR/LF stored). The first
 * few failures are printed with their seed and index, so one can be replayed
 * with `--seed S --replay I`.
 *
 * Usage: node dist/bench/fuzz.js [--sessions 1000000] [--configs 100000] [--seed 1] [--max-seconds 7200] [--replay I]
 */
import fc from 'fast-check';
import { arg } from './lib.js';
import { chunking, cut, hostileInput } from '../test/fuzz/smtp-generators.js';
import { fuzzConfig, runSession } from '../test/fuzz/session-runner.js';
import { anyConfig, checkConfigText } from '../test/fuzz/config-generators.js';

const BATCH = 1000;
const ADDRESSES = ['127.0.0.1', '10.9.8.7', '::ffff:127.0.0.1', '::1', '192.0.2.1', undefined];
const sessionArb = fc.tuple(hostileInput, chunking, fc.constantFrom(...ADDRESSES));

async function main(): Promise<void> {
  const sessions = Number(arg('sessions', '1000000'));
  const configs = Number(arg('configs', '100000'));
  const seed = Number(arg('seed', String(Date.now() % 1_000_000)));
  const maxSeconds = Number(arg('max-seconds', '7200'));
  const replay = arg('replay', '');
  const config = fuzzConfig();
  let unhandled = 0;
  process.on('unhandledRejection', (e) => {
    unhandled++;
    if (unhandled <= 5) console.log(`unhandled rejection: ${String(e)}`);
  });

  if (replay !== '') {
    // --replay I: session I of the run with this seed, verbose.
    const i = Number(replay);
    const [input, cuts, remoteAddress] = fc.sample(sessionArb, { numRuns: BATCH, seed: seed + Math.floor(i / BATCH) })[i % BATCH]!;
    const r = await runSession(cut(input, cuts), { config, remoteAddress });
    console.log(JSON.stringify({ input: input.toString('latin1'), cuts, remoteAddress }));
    console.log(r.output.toString('latin1'));
    console.log(r.problems);
    return;
  }

  const t0 = Date.now();
  let done = 0;
  let crashes = 0;
  let hangs = 0;
  let violations = 0;
  let shown = 0;
  let lastPrint = t0;
  const elapsed = (): number => (Date.now() - t0) / 1000;
  const progress = (): void => console.log(`progress sessions=${done} crashes=${crashes} hangs=${hangs} violations=${violations} seconds=${elapsed().toFixed(0)} rss_mb=${Math.round(process.memoryUsage().rss / 1e6)}`);
  for (let batch = 0; done < sessions && elapsed() < maxSeconds; batch++) {
    const samples = fc.sample(sessionArb, { numRuns: BATCH, seed: seed + batch });
    for (let j = 0; j < samples.length && done < sessions; j++) {
      const [input, cuts, remoteAddress] = samples[j]!;
      const r = await runSession(cut(input, cuts), { config, remoteAddress });
      done++;
      if (r.crash) crashes++;
      else if (r.hang) hangs++;
      else if (r.problems.length) violations++;
      if (r.problems.length && shown < 10) {
        shown++;
        console.log(`failure seed=${seed} index=${batch * BATCH + j}: ${r.problems.join(' | ').slice(0, 500)}`);
      }
    }
    if (Date.now() - lastPrint >= 10_000) {
      lastPrint = Date.now();
      progress();
    }
  }
  const sessionSeconds = elapsed();

  let configsDone = 0;
  let configViolations = 0;
  for (let batch = 0; configsDone < configs && elapsed() < maxSeconds; batch++) {
    for (const text of fc.sample(anyConfig, { numRuns: BATCH, seed: seed + batch })) {
      if (configsDone >= configs) break;
      configsDone++;
      const p = checkConfigText(text);
      if (p.length) {
        configViolations++;
        if (shown++ < 20) console.log(`config failure: ${p.join(' | ').slice(0, 300)} in ${JSON.stringify(text).slice(0, 300)}`);
      }
    }
  }
  console.log(
    `sessions=${done} crashes=${crashes} hangs=${hangs} violations=${violations} unhandled=${unhandled} session_seconds=${sessionSeconds.toFixed(0)} configs=${configsDone} config_violations=${configViolations} seconds=${elapsed().toFixed(0)} seed=${seed}`,
  );
  process.exit(crashes + hangs + violations + unhandled + configViolations > 0 ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
