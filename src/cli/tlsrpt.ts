/*
 * cli/tlsrpt - `petrel tlsrpt send [--date YYYY-MM-DD] [--force]`: asks the
 * running server (admin API, POST /api/tlsrpt/send) to queue one UTC day's
 * TLS reports (RFC 8460) now, and prints, per policy domain, what happened:
 * queued (queue id and addresses), already sent, no rua, or failed.
 *
 * Only the running server sends (it holds the day's counts in memory and
 * queues through its own enqueue path); with no server answering the
 * command says so and exits 69 — the server sends due days itself when it
 * runs. Exit codes: 0 done (whatever each domain's status), 64 usage,
 * 69 the server does not answer.
 *
 * Untrusted input: the command line (the date is checked by the server too).
 */
import type { Args, CliCommand } from './command.js';
import { actionBody, answer, withClient } from './queue.js';

const HELP = `Usage: petrel tlsrpt send [--date YYYY-MM-DD] [--force] [--config FILE] [--json]

Sends the TLS reports (RFC 8460) of one UTC day now: for each recipient
domain Petrel delivered to that day, the report goes to the mailto:
addresses of the domain's _smtp._tls TXT record (https: addresses are
skipped), queued like any other message. The running server does the same
by itself for yesterday, once.
  --date   the UTC day (default: yesterday); today sends what was counted so
           far and does not count as sent
  --force  send again the domains already sent for that day
Prints one line per domain: queued (queue id, addresses), already sent,
no rua (the domain takes no reports), or failed (tried again later).
Exit: 0 done, 64 usage, 69 the server does not answer.
`;

interface Entry {
  domain: string;
  status: string;
  to: string[];
  queue_id?: string;
  detail: string;
}

/** dateOf - --date's value; the parser gives "--date X" as a flag without value and X as a positional. */
function dateOf(args: Args): { date?: string; rest: string[] } | null {
  const v = args.flags.get('date');
  const rest = args.positional.slice(1);
  if (v === undefined) return { rest };
  if (typeof v === 'string') return { date: v, rest };
  if (!rest.length) return null;
  return { date: rest[0]!, rest: rest.slice(1) };
}

export const tlsrptCommand: CliCommand = {
  name: 'tlsrpt',
  summary: 'TLS reports (RFC 8460): send one day\'s reports now',
  help: HELP,
  run(args, out, err) {
    const d = dateOf(args);
    if (args.positional[0] !== 'send' || !d || d.rest.length) {
      err(HELP);
      return 64;
    }
    if (d.date !== undefined && !/^\d{4}-\d{2}-\d{2}$/.test(d.date)) {
      err(`petrel tlsrpt send: --date must be a UTC day as YYYY-MM-DD (got "${d.date.slice(0, 40)}")`);
      return 64;
    }
    const force = args.flags.get('force') === true;
    // withClient reads positional[1] as a queue id: give it only the subcommand.
    return withClient({ ...args, positional: ['send'] }, err, async (c) => {
      const a = await c.call('POST', '/api/tlsrpt/send', {}, actionBody(args, { ...(d.date ? { date: d.date } : {}), force }));
      if (a.via === 'store') {
        // Answered offline (cli/admin-client): no server, so nothing can be sent.
        err(`petrel: ${a.body?.error ?? 'TLS reports are sent by the running server, and it does not answer'}`);
        return 69;
      }
      return answer(a, args, out, err, (b) => {
        const reports = b.reports as Entry[];
        if (!reports.length) out(`${b.date}: nothing to report (no TLS results counted that day)`);
        for (const r of reports) out(`${b.date}  ${r.domain}  ${r.status.toUpperCase()}${r.queue_id ? `  ${r.queue_id}` : ''}${r.to.length ? `  to ${r.to.join(', ')}` : ''}: ${r.detail}`);
      });
    });
  },
};
