/*
 * bench/gc - what V8's garbage collector cost each Petrel process during a
 * run: reads the lines `node --trace-gc` prints (bench/relay --gc on runs
 * Petrel, and so its workers, with it) and sums, per process, the young
 * generation's collections (Scavenge) and the full ones (Mark-Compact: the
 * pause plus the incremental marking steps before it), in main-thread ms.
 * Time V8's helper threads spend is in relay's cpu_share lines ("node").
 *
 * Written by hand: the trace is a line per collection, and a regular
 * expression is all a summary needs.
 *
 *   gc process=worker1 scavenges=24 scavenge_ms=128 mark_compacts=5 mark_compact_ms=116 ms_per_msg=0.081
 */

export interface GcTotals {
  scavenges: number;
  scavengeMs: number;
  markCompacts: number;
  markCompactMs: number;
}

// [pid:0xisolate]   time ms: Kind[ (reason)] before (committed) -> after (committed) MB, pause / external ms  (+ steps ms in N steps ...)
const LINE = /^\[(\d+):[^\]]*\]\s+\d+ ms: (Scavenge|Mark-Compact)\b.*?MB, ([\d.]+) \/ [\d.]+ ms(?:\s+\(\+ ([\d.]+) ms in)?/;

/** gcTotals - the collections in `trace`, by process id. */
export function gcTotals(trace: string): Map<number, GcTotals> {
  const out = new Map<number, GcTotals>();
  for (const line of trace.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const pid = Number(m[1]);
    let t = out.get(pid);
    if (!t) out.set(pid, (t = { scavenges: 0, scavengeMs: 0, markCompacts: 0, markCompactMs: 0 }));
    const ms = Number(m[3]) + Number(m[4] ?? 0);
    if (m[2] === 'Scavenge') {
      t.scavenges++;
      t.scavengeMs += ms;
    } else {
      t.markCompacts++;
      t.markCompactMs += ms;
    }
  }
  return out;
}

/** gcLines - one `gc` line per process, named as relay's cpu_share lines name them (primary, workerN). */
export function gcLines(trace: string, pids: readonly number[], messages: number): string[] {
  const totals = gcTotals(trace);
  return pids.map((pid, i) => {
    const t = totals.get(pid) ?? { scavenges: 0, scavengeMs: 0, markCompacts: 0, markCompactMs: 0 };
    const name = i === 0 ? 'primary' : `worker${i}`;
    return `gc process=${name} scavenges=${t.scavenges} scavenge_ms=${t.scavengeMs.toFixed(0)} mark_compacts=${t.markCompacts} mark_compact_ms=${t.markCompactMs.toFixed(0)} ms_per_msg=${((t.scavengeMs + t.markCompactMs) / messages).toFixed(3)}`;
  });
}
