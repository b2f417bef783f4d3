/*
 * cli/quarantine - `petrel quarantine list|show|release|delete`: messages set
 * aside because their stored copy could not be read (invariant 7). Release
 * puts a message's quarantined recipients back into the queue, due now;
 * delete removes them (removed events, never silently), with a failure report
 * to the sender when asked (--ndr).
 *
 * Exit codes as `petrel queue`. Untrusted input: the command line.
 */
import { age, clip, table } from './format.js';
import type { CliCommand } from './command.js';
import { actionBody, answer, flag, printMessage, withClient } from './queue.js';

const HELP = `Usage:
  petrel quarantine list [--limit N] [--after QUEUE_ID] [--json]
  petrel quarantine show QUEUE_ID [--json]
  petrel quarantine release QUEUE_ID [--reason TEXT]
  petrel quarantine delete QUEUE_ID [--ndr] [--reason TEXT]

A message whose stored copy cannot be read (missing or truncated body) is
quarantined, never deleted. "release" puts its quarantined recipients back in
the queue (state queued, due now); "delete" removes them, each with a
"removed" event naming you and --reason; --ndr also sends the sender a failure
report. Exit: 0 done, 1 not found / not quarantined / nothing listed,
64 usage, 69 neither the server nor the queue is available.
Options: --config FILE, --json.
`;

export const quarantineCommand: CliCommand = {
  name: 'quarantine',
  summary: 'list, show, release or delete quarantined messages',
  help: HELP,
  run(args, out, err) {
    const sub = args.positional[0] ?? '';
    const id = args.positional[1];
    return withClient(args, err, async (c) => {
      switch (sub) {
        case 'list': {
          const a = await c.call('GET', '/api/quarantine', { limit: flag(args, 'limit'), after: flag(args, 'after') });
          const code = answer(a, args, out, err, (b) => {
            if (b.messages.length === 0) return out('Nothing is quarantined.');
            const now = Date.now();
            out(
              table(
                ['QUEUE ID', 'AGE', 'SENDER', 'RECIPIENTS', 'REASON'],
                (b.messages as Array<Record<string, any>>).map((m) => [m.queue_id, age(Date.parse(m.received_at), now), `<${clip(m.sender, 40)}>`, String(m.states.quarantined ?? 0), clip(m.quarantine, 90)]), // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
              ),
            );
            if (b.next) out(`more: petrel quarantine list --after ${b.next}`);
          });
          return code === 0 && a.body.messages.length === 0 ? 1 : code;
        }
        case 'show':
          if (!id) return (err('Usage: petrel quarantine show QUEUE_ID'), 64);
          return answer(await c.call('GET', `/api/quarantine/${encodeURIComponent(id)}`), args, out, err, (b) => printMessage(b, out));
        case 'release':
        case 'delete': {
          if (!id) return (err(`Usage: petrel quarantine ${sub} QUEUE_ID [--reason TEXT]`), 64);
          const a = await c.call('POST', `/api/quarantine/${encodeURIComponent(id)}/${sub}`, {}, actionBody(args, sub === 'delete' ? { ndr: args.flags.has('ndr') } : {}));
          const code = answer(a, args, out, err, (b) => out(`${sub}: ${b.changed} recipient(s) ${sub === 'release' ? 'back in the queue' : 'removed'}`));
          return code === 0 && a.body.changed === 0 ? 1 : code;
        }
        default:
          err(`petrel quarantine: ${sub ? `unknown subcommand "${sub}"` : 'a subcommand is needed'}\n\n${HELP}`);
          return 64;
      }
    });
  },
};
