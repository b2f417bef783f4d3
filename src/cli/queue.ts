/*
 * cli/queue - `petrel queue`: the queue by destination (like qshape), the
 * message list, one message, and the operator actions (retry, suspend,
 * resume, delete, redirect). Talks to the running server's admin API, or to
 * the store directly when the server is not running (cli/admin-client).
 *
 * Exit codes: 0 done; 1 not found / nothing matched / nothing to change;
 * 64 usage; 69 the server does not answer and the queue cannot be opened;
 * 77 the admin token was refused.
 *
 * Untrusted input: the command line (checked again by admin/actions).
 */
import type { Params } from '../admin/actions.js';
import { isQueueId } from '../core/ids.js';
import { AdminClient, Unavailable, cliOperator, type Answer } from './admin-client.js';
import { age, clip, exitFor, table, when } from './format.js';
import { configFrom, type Args, type CliCommand } from './command.js';

type Out = (s: string) => void;

/** withClient - load the config, run `fn` with an admin client, map failures to exit codes. */
export async function withClient(args: Args, err: Out, fn: (c: AdminClient) => Promise<number>): Promise<number> {
  const id = args.positional[1];
  if (id !== undefined && !isQueueId(id)) {
    err(`petrel: "${id}" is not a queue id (16 characters such as 1M7YZRKW60M0GRV1, as shown by petrel queue list)`);
    return 64;
  }
  const config = configFrom(args, err);
  if (!config) return 64;
  const client = new AdminClient(config, err);
  try {
    return await fn(client);
  } catch (e) {
    if (e instanceof Unavailable) {
      err(`petrel: ${e.message}`);
      return 69;
    }
    throw e;
  } finally {
    await client.close();
  }
}

/** answer - print an API answer (JSON or via `show`) and return the exit code. */
export function answer(a: Answer, args: Args, out: Out, err: Out, show: (body: Answer['body']) => void): number {
  if (a.status !== 200) {
    if (args.flags.has('json')) out(JSON.stringify(a.body, null, 2));
    err(`petrel: ${a.body?.error ?? `error ${a.status}`}`);
    return exitFor(a.status);
  }
  if (args.flags.has('json')) out(JSON.stringify(a.body, null, 2));
  else show(a.body);
  return 0;
}

export function flag(args: Args, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

export function actionBody(args: Args, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { operator: cliOperator(), reason: flag(args, 'reason') ?? '', ...extra };
}

/** printMessage - `queue show` / `quarantine show`: envelope, recipients, history. */
export function printMessage(b: Answer['body'], out: Out): void {
  const m = b.message;
  const now = Date.now();
  if (m) {
    const received = Date.parse(m.received_at);
    out(`queue id:    ${m.queue_id}`);
    out(`message id:  ${m.message_id}`);
    out(`sender:      <${m.sender}>`);
    out(`subject:     ${clip(m.subject, 100)}`);
    out(`received:    ${m.received_at} (${age(received, now)} ago) from ${m.client}`);
    out(`size:        ${m.size} octets${m.smtputf8 ? ', SMTPUTF8' : ''}${m.is_report ? ', a delivery report' : ''}${m.envid ? `, ENVID ${m.envid}` : ''}${m.ret ? `, RET=${m.ret}` : ''}${m.require_tls ? ', REQUIRETLS' : ''}${m.tls_required_no ? ', TLS-Required: No' : ''}`);
    if (m.quarantine) out(`quarantined: ${m.quarantine}`);
    out('');
    out(
      table(
        ['RECIPIENT', 'STATE', 'ATTEMPTS', 'NEXT', 'DESTINATION', 'LAST REPLY'],
        (b.recipients as Array<Record<string, any>>).map((r) => [ // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
          r.address,
          stateText(r),
          String(r.attempts),
          nextText(r, now),
          r.destination,
          clip(r.last_reply || '-', 70),
        ]),
      ),
    );
    if (b.recipients_next !== null) out(`(more recipients: the API's recipients_after=${b.recipients_next})`);
    const withTls = (b.recipients as Array<Record<string, any>>).filter((r) => r.last_tls); // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
    if (withTls.length) {
      out('');
      out('TLS of the last attempt:');
      for (const r of withTls) out(`  ${r.address}: ${tlsText(r.last_tls)}`);
    }
  } else {
    out(`${b.events[0]?.queue_id ?? ''}: no longer in the queue; its history:`);
  }
  out('');
  out('history:');
  for (const e of b.events as Array<Record<string, any>>) out(`  ${eventLine(e)}`); // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
}

/**
 * tlsText - the TLS of an attempt in one line: the policy that applied, what
 * the connection was, and why the policy was not met:
 * "policy verify (example.com): TLSv1.3 TLS_AES_256_GCM_SHA384, not verified; failed: certificate-host-mismatch: ...".
 */
export function tlsText(t: Record<string, any>): string { // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
  const c = t.tls as Record<string, any> | null; // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
  const f = t.tls_failure as Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
  const policy = c ?? f;
  const head = policy ? `policy ${policy.policy}${policy.policy_domain ? ` (${policy.policy_domain})` : ''}: ` : '';
  const conn = c ? `${c.version} ${c.cipher}, ${c.verified ? 'verified' : 'not verified'}` : 'no TLS';
  return clip(`${head}${conn}${f ? `; failed: ${f.type}: ${f.detail}` : ''}`, 300);
}

/** stateText - a recipient's state, with the node delivering it and an operator hold. */
function stateText(r: Record<string, any>): string { // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
  return r.state + (r.node ? ` by ${r.node}` : '') + (r.suspended ? ' (held)' : '');
}

/** nextText - a waiting recipient's next attempt ("now", "in 5m"); "-" for the others. */
function nextText(r: Record<string, any>, now: number): string { // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
  return r.next_attempt ? when(Date.parse(r.next_attempt), now) : '-';
}

/** eventLine - one event for people: time, kind, recipient, state, attempt, remote, reply/error/detail. */
export function eventLine(e: Record<string, unknown>): string {
  const parts = [String(e.ts), String(e.event).padEnd(15)];
  if (e.recipient !== undefined) parts.push(`<${e.recipient}>`);
  if (e.state !== undefined) parts.push(String(e.state));
  if (e.attempt !== undefined) parts.push(`attempt ${e.attempt}`);
  if (e.remote) parts.push(`via ${e.remote}`);
  const text = (e.reply ?? e.error ?? '') as string;
  if (text) parts.push(`"${clip(text, 120)}"`);
  if (e.detail) parts.push(`(${clip(String(e.detail), 160)})`);
  return parts.join(' ');
}

/** target - "ID" or "--destination D" for retry/suspend/resume. */
function targetPath(args: Args, verb: string, err: Out): string | null {
  const id = args.positional[1];
  const dest = flag(args, 'destination');
  if ((id === undefined) === (dest === undefined)) {
    err(`Usage: petrel queue ${verb} QUEUE_ID | --destination D [--reason TEXT]`);
    return null;
  }
  return id !== undefined ? `/api/messages/${encodeURIComponent(id)}/${verb}` : `/api/destinations/${encodeURIComponent(dest!)}/${verb}`;
}

function printResult(verb: string, b: Answer['body'], out: Out): void {
  out(`${verb}: ${b.changed} recipient(s) changed${b.in_flight ? `; ${b.in_flight} being delivered right now were left to their attempt` : ''}`);
}

async function summary(c: AdminClient, args: Args, out: Out, err: Out): Promise<number> {
  const a = await c.call('GET', '/api/queue');
  return answer(a, args, out, err, (b) => {
    const now = Date.now();
    printProviders(b.providers, out);
    if (b.destinations.length === 0) {
      out('The queue is empty.');
      return;
    }
    out(
      table(
        ['DESTINATION', 'RCPTS', 'MSGS', 'DEFERRED', 'HELD', 'OLDEST', 'NOTE', 'LAST ERROR'],
        (b.destinations as Array<Record<string, any>>).map((d) => [ // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
          d.destination,
          String(d.recipients),
          String(d.messages),
          String(d.deferred),
          String(d.suspended),
          d.recipients && d.oldest ? age(Date.parse(d.oldest), now) : '-',
          [d.held ? 'ON HOLD' : '', d.redirect ? `-> ${d.redirect}` : ''].filter(Boolean).join(' ') || '-',
          clip(d.last_reply || '-', 80),
        ]),
      ),
    );
    out(`total: ${b.total.recipients} recipient(s) in ${b.total.messages} message(s) (a message with several destinations counts under each)`);
  });
}

/** printProviders - the traffic-shaping providers met so far: current limits, last minute's messages, suspension (docs/shaping.md). */
function printProviders(providers: unknown, out: Out): void {
  if (!Array.isArray(providers) || providers.length === 0) return;
  out(
    table(
      ['PROVIDER', 'CONNS', 'MAX CONNS', 'CONN RATE', 'MSG RATE', 'MSGS/CONN', 'LAST MIN', 'FACTOR', 'SUSPENDED'],
      (providers as Array<Record<string, any>>).map((p) => [ // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
        String(p.provider),
        String(p.connections),
        p.max_connections === null ? '-' : String(p.max_connections),
        p.connection_rate ?? '-',
        p.message_rate ?? '-',
        p.messages_per_connection === null ? '-' : String(p.messages_per_connection),
        String(p.messages_last_minute),
        String(p.factor),
        p.suspended_until ? `until ${p.suspended_until}: ${clip(String(p.suspend_reply), 60)}` : '-',
      ]),
    ),
  );
  out('');
}

/** ages - `queue --ages`: recipients per destination by age bucket, like qshape. */
async function ages(c: AdminClient, args: Args, out: Out, err: Out): Promise<number> {
  const a = await c.call('GET', '/api/queue/ages');
  return answer(a, args, out, err, (b) => {
    const rows = [b.total, ...b.destinations] as Array<{ destination: string; total: number; counts: number[] }>;
    out(table(['DESTINATION', 'T', ...(b.buckets as string[])], rows.map((r) => [r.destination, String(r.total), ...r.counts.map(String)])));
    out('(recipients still in the queue by the age of their message: "5m" up to 5 minutes, "10m" 5 to 10, ... "1280m+" older)');
  });
}

/** listParams - the list filters from the command line. */
export function listParams(args: Args): Params {
  return {
    destination: flag(args, 'destination'),
    state: flag(args, 'state'),
    sender: flag(args, 'sender'),
    recipient: flag(args, 'recipient'),
    older_than: flag(args, 'older-than'),
    message_id: flag(args, 'message-id'),
    after: flag(args, 'after'),
    limit: flag(args, 'limit'),
  };
}

/** Recipients shown under each message of `queue list` unless --recipients says otherwise. */
const FOLD = 10;

/**
 * printList - a page of messages, each with its recipients under it (state,
 * attempts, next attempt, last reply; folded after `fold`: "… and K more"),
 * as mailq does; says how to get the next page.
 */
export function printList(b: Answer['body'], out: Out, again: string, fold = FOLD): void {
  const now = Date.now();
  if (b.messages.length === 0) return out('No message matches.');
  for (const m of b.messages as Array<Record<string, any>>) { // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
    const counts = Object.entries(m.states as Record<string, number>).map(([s, n]) => `${n} ${s}`).join(', ') + (m.suspended ? ` (${m.suspended} held)` : '');
    out(`${m.queue_id}  ${age(Date.parse(m.received_at), now)}  ${m.size} octets  <${clip(m.sender, 60)}>  ${counts}  "${clip(m.subject, 50)}"`);
    const rs = (m.recipients as Array<Record<string, any>>).slice(0, fold); // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
    if (rs.length) {
      const rows = rs.map((r) => [r.address, stateText(r), `${r.attempts} attempt${r.attempts === 1 ? '' : 's'}`, r.next_attempt ? `next ${nextText(r, now)}` : '-', clip(r.last_reply || '-', 80)]);
      for (const l of table(['', '', '', '', ''], rows).split('\n').slice(1)) out(`    ${l}`);
    }
    const more = (m.recipients.length as number) - rs.length + (m.recipients_more as number);
    if (more > 0) out(`    … and ${more} more (petrel queue show ${m.queue_id})`);
  }
  if (b.next) out(`more: ${again} --after ${b.next}`);
}

async function list(c: AdminClient, args: Args, out: Out, err: Out): Promise<number> {
  const fold = flag(args, 'recipients');
  if (args.flags.has('recipients') && (fold === undefined || !/^\d+$/.test(fold))) return (err('petrel queue list: --recipients=N takes a number'), 64);
  if (args.flags.has('json')) return listJsonLines(c, args, out, err);
  const n = fold === undefined ? FOLD : Number(fold);
  const a = await c.call('GET', '/api/messages', { ...listParams(args), recipients: String(Math.min(n, 1000)) });
  const code = answer(a, args, out, err, (b) => printList(b, out, 'petrel queue list ...', n));
  return code === 0 && a.body.messages.length === 0 ? 1 : code;
}

/**
 * listJsonLines - `queue list --json`: one JSON object a line per message
 * (as `postqueue -j`), each with all its recipients, written as the pages
 * come: any queue size in bounded memory (a page of messages, and one
 * message's recipients, at a time). Without --limit, every match; with it,
 * at most that many. The last queue_id printed is the cursor for --after.
 */
async function listJsonLines(c: AdminClient, args: Args, out: Out, err: Out): Promise<number> {
  const limitFlag = flag(args, 'limit');
  let left = limitFlag === undefined ? Infinity : Number(limitFlag);
  if (!Number.isInteger(left) && left !== Infinity) return (err('petrel queue list: --limit takes a number'), 64);
  const params = listParams(args);
  let after = params.after;
  let printed = 0;
  while (left > 0) {
    const a = await c.call('GET', '/api/messages', { ...params, after, limit: String(Math.min(left, 100)), recipients: '100' });
    if (a.status !== 200) {
      err(`petrel: ${a.body?.error ?? `error ${a.status}`}`);
      return exitFor(a.status);
    }
    for (const m of a.body.messages as Array<Record<string, any>>) { // eslint-disable-line @typescript-eslint/no-explicit-any -- API JSON
      let next = m.recipients_next as number | null;
      while (next !== null) {
        const more = await c.call('GET', `/api/messages/${encodeURIComponent(m.queue_id)}`, { recipients_after: String(next), limit: '500', events_after: String(Number.MAX_SAFE_INTEGER) });
        if (more.status !== 200) break; // it left the queue meanwhile: what was read stands
        m.recipients.push(...more.body.recipients);
        next = more.body.recipients_next;
      }
      const { recipients_more: _m, recipients_next: _n, ...line } = m;
      out(JSON.stringify(line));
      printed++;
    }
    left -= a.body.messages.length;
    if (!a.body.next) break;
    after = a.body.next;
  }
  return printed === 0 ? 1 : 0;
}

const HELP = `Usage:
  petrel queue [--json]                           the shaping providers (limits, rate, suspension),
                                                  then the queue by destination: recipients,
                                                  messages, deferred, held, oldest, last error
  petrel queue --ages [--json]                    recipients per destination by age (like qshape):
                                                  5m 10m 20m 40m 80m 160m 320m 640m 1280m 1280m+
  petrel queue list [--destination D] [--state S] [--sender A] [--recipient A]
                    [--older-than 1h] [--message-id ID] [--limit N] [--after QUEUE_ID]
                    [--recipients=N] [--json]     each message with its recipients: state,
                                                  attempts, next attempt, last reply
  petrel queue show QUEUE_ID [--json]             envelope, each recipient's state, attempts,
                                                  next attempt and last reply, the TLS of its
                                                  last attempt (policy, verified, why it
                                                  failed), and its history
  petrel queue retry QUEUE_ID | --destination D [--reason TEXT]
  petrel queue suspend QUEUE_ID | --destination D [--reason TEXT]
  petrel queue resume QUEUE_ID | --destination D [--reason TEXT]
  petrel queue delete QUEUE_ID [--ndr | --silent] [--reason TEXT]
  petrel queue redirect --destination D (--to HOST:PORT | --clear) [--reason TEXT]

A destination is a recipient domain, or the smarthost / route name that
"petrel queue" shows. States: queued delivering delivered deferred failed
expired quarantined removed. Lists come a page at a time (--limit, at most
500; --after continues). Every action is an event in the log with your user
name and --reason. "delete --ndr" sends the sender a failure report for the
removed recipients; "--silent" (the default) sends none. "suspend
--destination" holds all of a destination's mail until "resume"; "resume" does
not retry at once: "retry" does. "redirect" sends a destination's mail to
HOST:PORT over SMTP from now on (and retries it now); "--clear" ends that.
"retry" makes a real attempt at once, even for a destination that failed to
connect a moment ago (its back-off ends).

Traffic shaping (docs/shaping.md): "petrel queue" first lists each provider
met so far (e.g. google.com for every domain whose MX is Google's) with its
connections, current limits, messages in the last minute and any suspension
after a "blocked" reply. "resume --destination PROVIDER" ends that suspension
at once and its waiting mail goes.

"queue list" prints each message with its recipients under it, the first 10
(--recipients=N) then "… and K more". "queue list --json" writes one JSON
object a line per message, each with a "recipients" array holding all its
recipients (address, state, attempts, next_attempt, last_reply, and node while
delivering), as "postqueue -j" does: without --limit every matching message,
streamed a page at a time, so it suits any queue size (pipe it to jq -c);
the last queue_id is the cursor for --after. Every other --json is one JSON
document. Keys are snake_case and times ISO 8601 UTC (docs/admin.md).

"queue --ages" counts the recipients still in the queue per destination by
the age of their message, in qshape's buckets: "5m" holds up to 5 minutes,
"10m" 5 to 10, ... "1280m+" older than 1280 minutes (21h20m). It reads every
recipient once, a page at a time.

Talks to the running server's admin API ([admin] listen); when the server is
not running it opens the queue in data_dir directly.
Exit: 0 done, 1 not found or nothing matched, 64 usage, 69 neither the server
nor the queue is available, 77 the admin token was refused.
Options: --config FILE, --json.
`;

export const queueCommand: CliCommand = {
  name: 'queue',
  summary: 'show the queue by destination; list, show, retry, suspend, resume, delete, redirect',
  help: HELP,
  run(args, out, err) {
    const sub = args.positional[0] ?? '';
    return withClient(args, err, async (c) => {
      switch (sub) {
        case '':
          return args.flags.has('ages') ? ages(c, args, out, err) : summary(c, args, out, err);
        case 'list':
          return list(c, args, out, err);
        case 'show': {
          const id = args.positional[1];
          if (!id) return (err('Usage: petrel queue show QUEUE_ID'), 64);
          return answer(await c.call('GET', `/api/messages/${encodeURIComponent(id)}`), args, out, err, (b) => printMessage(b, out));
        }
        case 'retry':
        case 'suspend':
        case 'resume': {
          const path = targetPath(args, sub, err);
          if (!path) return 64;
          const a = await c.call('POST', path, {}, actionBody(args));
          const code = answer(a, args, out, err, (b) => (b.provider ? out(`${sub}: provider ${String(b.provider)} resumed; its waiting mail goes now`) : printResult(sub, b, out)));
          return code === 0 && a.body.changed === 0 && !a.body.provider ? 1 : code;
        }
        case 'delete': {
          const id = args.positional[1];
          if (!id || (args.flags.has('ndr') && args.flags.has('silent'))) return (err('Usage: petrel queue delete QUEUE_ID [--ndr | --silent] [--reason TEXT]'), 64);
          const ndr = args.flags.has('ndr');
          const a = await c.call('POST', `/api/messages/${encodeURIComponent(id)}/delete`, {}, actionBody(args, { ndr }));
          const code = answer(a, args, out, err, (b) => {
            printResult('delete', b, out);
            if (ndr && b.changed) out(a.via === 'server' ? 'A failure report goes to the sender.' : 'A failure report goes to the sender when the server starts.');
          });
          return code === 0 && a.body.changed === 0 ? 1 : code;
        }
        case 'redirect': {
          const dest = flag(args, 'destination');
          const to = flag(args, 'to');
          if (!dest || (to === undefined) === !args.flags.has('clear')) return (err('Usage: petrel queue redirect --destination D (--to HOST:PORT | --clear) [--reason TEXT]'), 64);
          const a = await c.call('POST', `/api/destinations/${encodeURIComponent(dest)}/redirect`, {}, actionBody(args, { to: to ?? null }));
          return answer(a, args, out, err, (b) =>
            out(b.to ? `${b.destination}: mail goes to ${b.to} from now on (${b.retried} recipient(s) retried now)` : `${b.destination}: routed as configured again`),
          );
        }
        default:
          err(`petrel queue: unknown subcommand "${sub}"\n\n${HELP}`);
          return 64;
      }
    });
  },
};
