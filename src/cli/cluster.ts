/*
 * cli/cluster - `petrel cluster`: the nodes sharing this queue (backend =
 * "postgres"): name, last heartbeat, recipients each holds in flight, and
 * whether it is alive (heartbeat younger than [queue] lease). On a single
 * node it lists that node. Reads through the admin API, or the queue itself
 * when no server answers (cli/admin-client).
 *
 * Exit codes: 0 listed, 69 unavailable. Untrusted input: the command line.
 */
import type { CliCommand } from './command.js';
import { answer, withClient } from './queue.js';

const HELP = `Usage: petrel cluster [--config FILE] [--json]

Lists the Petrel nodes sharing this queue: name, last heartbeat (how long
ago), when it started, the recipients it holds in flight, and "alive" or
"gone" (no heartbeat within [queue] lease: the other nodes take its
recipients over). With the embedded queue there is one node.
Exit: 0 listed, 69 unavailable.
`;

interface NodeView {
  name: string;
  heartbeat_at: string;
  started_at: string;
  in_flight: number;
  alive: boolean;
}

/** ago - "3s ago" / "2m ago" for an ISO time. */
function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

export const clusterCommand: CliCommand = {
  name: 'cluster',
  summary: 'the nodes sharing this queue: heartbeat and recipients in flight',
  help: HELP,
  run(args, out, err) {
    return withClient(args, err, async (c) => {
      const a = await c.call('GET', '/api/cluster');
      return answer(a, args, out, err, (b) => {
        const nodes = b.nodes as NodeView[];
        const width = Math.max(4, ...nodes.map((n) => n.name.length));
        out(`${'NODE'.padEnd(width)}  STATE  HEARTBEAT   IN FLIGHT  STARTED`);
        for (const n of nodes) {
          out(`${n.name.padEnd(width)}  ${(n.alive ? 'alive' : 'gone').padEnd(5)}  ${ago(n.heartbeat_at).padEnd(10)}  ${String(n.in_flight).padStart(9)}  ${n.started_at}`);
        }
      });
    });
  },
};
