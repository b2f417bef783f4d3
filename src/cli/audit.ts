/*
 * cli/audit - `petrel audit`: the fate audit (log/audit). Prints, for every
 * message the event log knows, where its recipients stand, and lists every
 * exception. Exit 0 when there is none, 1 when there is any.
 *
 * Reads the store directly (never running crash recovery, so it is safe
 * while the server runs) and the event log files under data_dir/log.
 */
import { join } from 'node:path';
import { runAudit } from '../log/audit.js';
import { openQueue } from '../queue/open.js';
import { auditJson } from '../admin/json.js';
import { configFrom, type CliCommand } from './command.js';

export const auditCommand: CliCommand = {
  name: 'audit',
  summary: 'prove every accepted recipient is at an end or still queued; list exceptions',
  help: `Usage: petrel audit [--config FILE] [--json]

Reconciles the event log (data_dir/log/events.jsonl and its rotated files)
with the queue store. Every recipient of every message ever accepted must be
at an end (delivered; failed or expired with its report queued; removed by an
operator) or still in the queue with a future attempt (or quarantined, or on
hold). Prints counts per state and every exception:
  lost             accepted, not finished, and not in the queue
  unrecorded       the queue shows a change no event explains
  report-missing   a failure (or requested success) report was never queued
  bad-line         a line of the event log is not an event
Exit 0: no exception. Exit 1: at least one. Safe while the server runs.
`,
  async run(args, out, err) {
    const config = configFrom(args, err);
    if (!config) return 78;
    let store;
    try {
      store = await openQueue(config, { recover: false });
    } catch (e) {
      err(`petrel audit: ${(e as Error).message}`);
      return 69;
    }
    try {
      // A cluster's events are all in its database; each node's file holds only its own.
      const r = await runAudit(store, config.queue.backend === 'postgres' ? null : join(config.data_dir, 'log', 'events.jsonl'));
      if (args.flags.has('json')) {
        out(JSON.stringify(auditJson(r), null, 2));
      } else {
        const n = (x: number): string => x.toLocaleString('en');
        out(`petrel audit: ${n(r.events)} events (seq ${r.firstSeq ?? '-'}..${r.lastSeq ?? '-'}), ${n(r.messages)} messages, ${n(r.recipients)} recipients, ${r.seconds.toFixed(1)} s`);
        for (const [state, count] of Object.entries(r.byState).sort((a, b) => b[1] - a[1])) out(`  ${state.padEnd(12)} ${n(count).padStart(10)}`);
        out(`  reports owed ${n(r.reports.owed)}, queued ${n(r.reports.queued)}, still to be made ${n(r.reports.pending)}`);
        if (r.historyIncomplete) out(`  ${n(r.historyIncomplete)} recipient(s) whose early events are no longer in the log (rotated or pruned)`);
        out(`exceptions: ${n(r.exceptions.length)}`);
        for (const x of r.exceptions.slice(0, 200)) out(`  ${x.kind.padEnd(15)} ${x.queueId} ${x.recipient ? `<${x.recipient}> ` : ''}${x.detail}`);
        if (r.exceptions.length > 200) out(`  ... and ${n(r.exceptions.length - 200)} more (use --json for all)`);
      }
      return r.exceptions.length ? 1 : 0;
    } finally {
      await store.close();
    }
  },
};
