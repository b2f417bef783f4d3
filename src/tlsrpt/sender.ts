/*
 * tlsrpt/sender - sends one UTC day's TLS reports (RFC 8460): for each
 * policy domain with counts that day, the `_smtp._tls` TXT record names the
 * mailto: addresses (tlsrpt/rua); the report (tlsrpt/report) goes to them
 * as one message (tlsrpt/message), queued through the Enqueuer like every
 * message Petrel makes. A daily timer in the server sends yesterday's
 * reports; `petrel tlsrpt send` asks the running server to send a day now.
 *
 * Once: what was sent is remembered in data_dir/tlsrpt/sent/<day>.json
 * (written temp + fsync + rename after each domain), so a restart or a
 * second run does not send a domain's report twice. A crash between the
 * queue's commit and that write can send one report twice; its report-id is
 * the same, so the receiver can tell (RFC 8460 §4.4 report-id).
 * A day is "complete" when every domain was sent or cannot take reports; a
 * domain whose TXT look-up failed (DNS trouble) is tried again at the next
 * hourly run, up to MAX_DAYS_BACK days after the day.
 *
 * No loop (RFC 8460 §5.3: reports are delivered despite TLS failures and
 * their sessions are not reported): the report messages are queued with
 * `client` TLSRPT_CLIENT; the SMTP agent checks isTlsReport(message) and
 * then neither enforces a TLS policy nor calls the recorder. Sender <>,
 * isReport: a failed report goes to the postmaster as a notice, never back.
 *
 * Untrusted input: TXT records (tlsrpt/rua); the day files (tlsrpt/report).
 */
import { Resolver } from 'node:dns/promises';
import { mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Enqueuer } from '../enqueue/enqueue.js';
import { fsyncDir } from '../core/durable-fs.js';
import type { Trace } from '../log/trace.js';
import type { TlsRecorder } from './recorder.js';
import { utcDay } from './recorder.js';
import { buildReport, readDay, type ReportContext } from './report.js';
import { buildReportMessage } from './message.js';
import { parseTlsrptTxt } from './rua.js';

/** The `client` of a queued TLS report: how the SMTP agent knows not to report on it. */
export const TLSRPT_CLIENT = 'tlsrpt';

/** isTlsReport - a queued message that is one of Petrel's TLS reports (see the file comment). */
export function isTlsReport(message: { client: string; isReport: boolean }): boolean {
  return message.isReport && (message.client === TLSRPT_CLIENT || message.client.startsWith(`${TLSRPT_CLIENT} `));
}

/** Days after a day that its unsent reports are still tried (then the day is given up). */
export const MAX_DAYS_BACK = 3;
/** Day files older than this many days are removed by the daily run. */
export const KEEP_DAYS = 31;

export interface SentEntry {
  domain: string;
  status: 'queued' | 'already-sent' | 'no-rua' | 'failed';
  to: string[];
  queue_id?: string;
  report_id?: string;
  detail: string;
}

interface SentFile {
  /** domain -> what happened (queued or no-rua are final; failed is tried again). */
  domains: Record<string, SentEntry>;
  complete: boolean;
}

export interface TlsReportSenderDeps {
  config: Config;
  enqueuer: Enqueuer;
  /** Flushed before a day is read, so its last counts are in. */
  recorder?: TlsRecorder;
  trace?: Pick<Trace, 'info' | 'warn'>;
  /** TXT look-up; default a Resolver on [delivery] dns_servers. */
  resolveTxt?: (name: string) => Promise<string[][]>;
  now?: () => number;
}

export class TlsReportSender {
  private running: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private readonly dir: string;
  private readonly resolveTxt: (name: string) => Promise<string[][]>;
  private readonly now: () => number;

  constructor(private readonly deps: TlsReportSenderDeps) {
    this.dir = join(deps.config.data_dir, 'tlsrpt');
    this.now = deps.now ?? Date.now;
    if (deps.resolveTxt) this.resolveTxt = deps.resolveTxt;
    else {
      const r = new Resolver({ timeout: 5000, tries: 2 });
      if (deps.config.delivery.dns_servers.length) r.setServers(deps.config.delivery.dns_servers);
      this.resolveTxt = (name) => r.resolveTxt(name);
    }
  }

  /** start - the daily run: a minute after start, then every hour (it sends only what is due and unsent). */
  start(intervalMs = 3_600_000, firstMs = 60_000): void {
    const run = () => void this.sendDue().catch((e: Error) => this.deps.trace?.warn({ err: e.message }, 'TLS reports not sent'));
    const first = setTimeout(() => {
      run();
      this.timer = setInterval(run, intervalMs);
      this.timer.unref();
    }, firstMs);
    first.unref();
    this.timer = first;
  }

  /** stop - no more runs; resolves when the one running (if any) has ended. */
  async stop(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      clearInterval(this.timer);
    }
    this.timer = null;
    await this.running;
  }

  /** sendDue - the days before today, up to MAX_DAYS_BACK back, that have counts and are not complete; old day files removed. */
  async sendDue(): Promise<SentEntry[]> {
    const out: SentEntry[] = [];
    const today = utcDay(this.now());
    // Counts still in memory may belong to yesterday (recorded just before midnight).
    await this.deps.recorder?.flush();
    let files: string[] = [];
    try {
      files = await readdir(this.dir);
    } catch {
      return out;
    }
    for (let back = MAX_DAYS_BACK; back >= 1; back--) {
      const day = utcDay(this.now() - back * 86_400_000);
      if (!files.includes(`${day}.jsonl`)) continue;
      const sent = await this.readSent(day);
      if (sent.complete) continue;
      // The oldest day gets its last try now.
      out.push(...(await this.sendDay(day, { final: back === MAX_DAYS_BACK })));
    }
    const oldest = utcDay(this.now() - KEEP_DAYS * 86_400_000);
    for (const f of files) {
      const m = /^(\d{4}-\d{2}-\d{2})\.jsonl$/.exec(f);
      if (m && m[1]! < oldest && m[1]! < today) {
        await unlink(join(this.dir, f)).catch(() => undefined);
        await unlink(join(this.dir, 'sent', `${m[1]}.json`)).catch(() => undefined);
      }
    }
    return out;
  }

  /**
   * sendDay - send the reports of one UTC day (serialised with every other
   * run). Domains already sent are skipped (status already-sent) unless
   * `force`. A day not over yet (today) is sent but not remembered as sent.
   */
  sendDay(day: string, o: { force?: boolean; final?: boolean } = {}): Promise<SentEntry[]> {
    const next = this.running.then(() => this.sendDayNow(day, o));
    this.running = next.catch(() => undefined);
    return next;
  }

  private async sendDayNow(day: string, o: { force?: boolean; final?: boolean }): Promise<SentEntry[]> {
    await this.deps.recorder?.flush();
    const config = this.deps.config;
    const over = day < utcDay(this.now());
    const counts = await readDay(this.dir, day);
    if (counts.badLines) this.deps.trace?.warn({ day, bad_lines: counts.badLines }, 'TLS report day file has lines that do not parse: skipped');
    const sent = await this.readSent(day);
    const ctx: ReportContext = {
      organization: config.tlsrpt.organization || config.hostname,
      contact: config.dsn.postmaster || `postmaster@${config.hostname}`,
      submitter: config.hostname,
      day,
      ...(config.queue.backend === 'postgres' ? { node: config.queue.node_name } : {}),
    };
    const out: SentEntry[] = [];
    for (const [domain, lines] of [...counts.domains].sort(([a], [b]) => a.localeCompare(b))) {
      const before = sent.domains[domain];
      if (before && before.status !== 'failed' && !o.force) {
        out.push({ ...before, status: 'already-sent', detail: `sent before: ${before.detail}` });
        continue;
      }
      const entry = await this.sendOne(ctx, domain, lines);
      out.push(entry);
      if (over) {
        sent.domains[domain] = entry;
        await this.writeSent(day, sent);
      }
      this.deps.trace?.info({ day, domain, status: entry.status, to: entry.to, qid: entry.queue_id }, `TLS report: ${entry.detail}`);
    }
    if (over) {
      const pending = Object.values(sent.domains).some((e) => e.status === 'failed');
      if (!pending || o.final) {
        sent.complete = true;
        await this.writeSent(day, sent);
      }
    }
    return out;
  }

  private async sendOne(ctx: ReportContext, domain: string, lines: Parameters<typeof buildReport>[2]): Promise<SentEntry> {
    let records: string[];
    try {
      records = (await this.resolveTxt(`_smtp._tls.${domain}`)).map((r) => r.join(''));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (code === 'ENOTFOUND' || code === 'ENODATA') records = [];
      else return { domain, status: 'failed', to: [], detail: `look-up of _smtp._tls.${domain} failed (${code || (e as Error).message}); tried again later` };
    }
    const rua = parseTlsrptTxt(records);
    if (!rua.mailto.length) return { domain, status: 'no-rua', to: [], detail: `not sent: ${rua.problem ?? 'no mailto: address'}` };
    const report = buildReport(ctx, domain, lines);
    const message = buildReportMessage({ ...ctx, from: `noreply-tlsrpt@${this.deps.config.hostname}`, to: rua.mailto, now: new Date(this.now()) }, domain, report);
    const incoming = this.deps.enqueuer.begin({
      sender: '',
      recipients: rua.mailto.map((address) => ({ address, orcpt: null, notify: 'NEVER' })),
      smtputf8: false,
      eightBit: false,
      ret: null,
      envid: null,
      client: TLSRPT_CLIENT,
      received: null,
      isReport: true,
      maxSize: 0,
      maxReceived: 0,
      // Signed with the key of the hostname's domain when there is one (RFC 8460 §5.3 recommends DKIM).
      sign: true,
    });
    try {
      await incoming.write(message.data);
      await incoming.commit();
    } catch (e) {
      await incoming.abort().catch(() => undefined);
      return { domain, status: 'failed', to: rua.mailto, detail: `could not be queued: ${(e as Error).message}; tried again later` };
    }
    const skipped = rua.skipped.length ? ` (https: URIs skipped: ${rua.skipped.join(', ')})` : '';
    return { domain, status: 'queued', to: rua.mailto, queue_id: incoming.queueId, report_id: report['report-id'], detail: `report ${report['report-id']} queued as ${incoming.queueId} to ${rua.mailto.join(', ')}${skipped}` };
  }

  private async readSent(day: string): Promise<SentFile> {
    try {
      const v = JSON.parse(await readFile(join(this.dir, 'sent', `${day}.json`), 'utf8')) as SentFile;
      if (v && typeof v.domains === 'object' && v.domains !== null) return { domains: v.domains, complete: v.complete === true };
    } catch {
      // none yet (or unreadable: then at worst a report is sent again)
    }
    return { domains: {}, complete: false };
  }

  private async writeSent(day: string, sent: SentFile): Promise<void> {
    const dir = join(this.dir, 'sent');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.${day}.json.tmp`);
    const fd = await open(tmp, 'w', 0o640);
    try {
      await fd.writeFile(JSON.stringify(sent, null, 1));
      await fd.sync();
    } finally {
      await fd.close();
    }
    await rename(tmp, join(dir, `${day}.json`));
    await fsyncDir(dir);
  }
}
