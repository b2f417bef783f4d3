/*
 * cli/track - `petrel track`: message tracking. Every event of the messages
 * that match a Message-ID (with or without <>), a sender, a recipient or a
 * queue id, message by message, each in order — from the event log's indexed
 * table (answers in milliseconds on millions of events; bench/track.ts).
 *
 * Exit codes: 0 found, 1 nothing matched, 64 usage, 69 unavailable.
 * Untrusted input: the command line.
 */
import type { CliCommand } from './command.js';
import { answer, eventLine, flag, withClient } from './queue.js';

const HELP = `Usage: petrel track (--message-id ID | --sender A | --recipient A | --queue-id Q)
                    [--since 2h | --since 2026-11-21T12:00:00Z] [--limit N] [--json]

Prints every event of each matching message, oldest message first, each
message's events in order: received, every attempt (deferred with the reply or
error), delivered / failed / expired, reports, operator actions with who and
why. Several criteria must all match one event. --since keeps messages with a
matching event at or after that time (a duration means "that long ago").
--limit caps the number of messages (default 100, newest matches first); the
last line says how to see older ones. Use "<>" for the null sender.
Events are kept for [log] retention (default 30 days).
Exit: 0 found, 1 nothing matched, 64 usage, 69 unavailable.
Options: --config FILE, --json.
`;

export const trackCommand: CliCommand = {
  name: 'track',
  summary: 'message tracking: every event of the messages matching an id, sender or recipient',
  help: HELP,
  run(args, out, err) {
    const params = {
      message_id: flag(args, 'message-id'),
      sender: flag(args, 'sender'),
      recipient: flag(args, 'recipient'),
      queue_id: flag(args, 'queue-id'),
      since: flag(args, 'since'),
      limit: flag(args, 'limit'),
      before: flag(args, 'before'),
    };
    if (!params.message_id && params.sender === undefined && !params.recipient && !params.queue_id) {
      err(HELP);
      return 64;
    }
    return withClient(args, err, async (c) => {
      const a = await c.call('GET', '/api/track', params);
      const code = answer(a, args, out, err, (b) => {
        if (b.messages.length === 0) return out('No message matches.');
        for (const m of b.messages as Array<{ queue_id: string; events: Array<Record<string, unknown>> }>) {
          const first = m.events[0];
          out(`${m.queue_id} ${first?.message_id ?? ''} from <${first?.sender ?? ''}>`);
          for (const e of m.events) out(`  ${eventLine(e)}`);
          out('');
        }
        if (b.next !== null) out(`older matches: add --before ${b.next}`);
      });
      return code === 0 && a.body.messages.length === 0 ? 1 : code;
    });
  },
};
