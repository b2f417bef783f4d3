/*
 * checks/inbound-checks - what an SMTP session asks of the checks: whether
 * a transaction is checked at all, a place to hold its message while it
 * arrives (checks/held-message), and at the end of data the verdict: refuse,
 * or hand the message to enqueue with the results at its top.
 *
 * Which mail is checked: mail on the MX listener (`[smtp] listen`) from a
 * client outside `relay_networks` that has not authenticated. Submission,
 * relay_networks and authenticated sessions are never checked (their senders
 * are ours), nor Petrel's own reports and pickup files (they never pass
 * here).
 *
 * Invariants:
 * - a refused message is never stored: the caller aborts the enqueue;
 * - an accepted message is stored exactly as received, with the results'
 *   header fields added after Received: and any Authentication-Results:
 *   claiming our hostname removed (RFC 8601 §5), and any X-Petrel-Junk:
 *   that came with it removed (only the checks mark junk: DMARC failed
 *   under p=quarantine, or rspamd's "add header");
 * - the checks never throw at the session: whatever fails inside them is a
 *   temporary result (checks/authenticate), and memory is bounded by
 *   checks/held-message;
 * - every DNS look-up goes through one bounded cache (checks/dns) and the
 *   `[delivery] dns_servers` resolvers when set.
 *
 * Untrusted input: the message and the envelope (passed on to the checks).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { smtpReply } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';
import type { Incoming } from '../enqueue/enqueue.js';
import { safeHeaderText, stripOwnResults } from './auth-results.js';
import { checkAuthentication, loadMailauth } from './authenticate.js';
import { CheckResolver } from './dns.js';
import { ClientListing } from './dnsbl.js';
import { RecipientVerifier } from './verify-recipient.js';
import { RouteRecipients } from './route-recipients.js';
import { trace } from '../log/trace.js';
import { HeldMessage } from './held-message.js';
import { JUNK_FIELD, removeFields, replaceSubject, subjectOf } from './header-edit.js';
import { decideFilter, scan } from './rspamd.js';

/** Who sent the transaction, as the session knows it. */
export interface CheckedClient {
  kind: 'smtp' | 'submission';
  inRelayNetworks: boolean;
  authenticated: boolean;
}

export interface CheckedTransaction {
  ip: string;
  helo: string;
  sender: string;
  recipients: string[];
}

export interface CheckOutcome {
  /** Set when the message is refused (the caller aborts the enqueue and sends it). */
  refusal: SmtpReply | null;
  /** Short text for traces and the received event. */
  summary: string;
}

export class InboundChecks {
  private resolverNow: CheckResolver | null = null;
  private resolverKey = '';
  readonly verifier: RecipientVerifier;
  /** The routes' recipients_file tables (read when first needed, again on reloadTables). */
  readonly listed = new RouteRecipients((text) => trace('checks').warn({ problem: text }, 'recipients_file'));
  private readonly scratchDir: string;

  constructor(private readonly config: Config) {
    this.scratchDir = join(config.data_dir, 'tmp', 'checks');
    // `petrel reload` changes the same Config object in place: the verifier reads it at each use.
    this.verifier = new RecipientVerifier(() => config.routes, () => config.delivery.helo_name || config.hostname, () => config.checks.verify_timeout);
    // What a previous run left there was never answered 250: the clients still have it.
    // Once per process and directory: a reload must not delete the files of sessions in flight.
    if (!cleared.has(this.scratchDir)) rmSync(this.scratchDir, { recursive: true, force: true });
    cleared.add(this.scratchDir);
  }

  /** resolver - the checks' cached resolver; a new one (empty cache) when dns_servers or dns_timeout changed (reload). */
  get resolver(): CheckResolver {
    const key = JSON.stringify([this.config.delivery.dns_servers, this.config.checks.dns_timeout]);
    if (!this.resolverNow || key !== this.resolverKey) {
      this.resolverNow = new CheckResolver({ servers: this.config.delivery.dns_servers, timeoutMs: this.config.checks.dns_timeout });
      this.resolverKey = key;
    }
    return this.resolverNow;
  }

  /** applies - is this transaction checked? */
  applies(client: CheckedClient): boolean {
    const any = this.config.checks.authenticate || this.config.filter.rspamd_url !== '';
    const checked = any && client.kind === 'smtp' && !client.inRelayNetworks && !client.authenticated;
    // The checker's library comes in while this transaction's data does (loaded once; see loadMailauth).
    if (checked && this.config.checks.authenticate) void loadMailauth().catch(() => undefined);
    return checked;
  }

  /**
   * dnsblFor - start the block-list look-ups of a client that has just
   * connected; null when there are no lists, or the client is exempt
   * (submission listener, relay_networks).
   */
  dnsblFor(ip: string, kind: 'smtp' | 'submission', inRelayNetworks: (ip: string) => boolean): ClientListing | null {
    const lists = this.config.checks.dnsbl;
    if (!lists.length || kind !== 'smtp' || inRelayNetworks(ip)) return null;
    return new ClientListing(ip, lists, this.resolver.resolve);
  }

  /**
   * verifyRecipient - for a domain whose route has a recipients_file or
   * verify_recipients: the refusal to give at RCPT (550 5.1.1 not listed or
   * unknown to the next hop, 450 4.1.1 cannot ask or file unreadable), or
   * null to go on.
   */
  async verifyRecipient(address: string): Promise<SmtpReply | null> {
    // A recipients_file first: it refuses without asking anyone; a listed address may still be probed.
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    const file = this.config.routes.find((x) => x.domain === domain)?.recipients_file;
    if (file) {
      const listing = this.listed.lookup(file, address);
      if (listing === 'not listed') return smtpReply('recipientNotListed', address);
      if (listing === 'unreadable') return smtpReply('recipientListUnreadable', address);
    }
    const r = await this.verifier.verify(address);
    if (!r || r.verdict === 'known') return null;
    return r.verdict === 'unknown' ? smtpReply('recipientUnknownNextHop', address, r.reply.split('\r\n').pop()!.slice(0, 200)) : smtpReply('recipientNotVerified', address);
  }

  /** reloadTables - re-read the routes' recipients files (SIGHUP, `petrel reload`); returns the problems found. */
  reloadTables(): string[] {
    return this.listed.reload(this.config.routes.flatMap((r) => (r.recipients_file ? [r.recipients_file] : [])));
  }

  /** hold - a holder for one message while it arrives. */
  hold(): HeldMessage {
    return new HeldMessage(this.scratchDir, this.config.smtp.max_header_size, this.config.smtp.max_message_size);
  }

  /**
   * finish - check the held message; when it is accepted, write it (with the
   * results) into `incoming`, which the caller then commits. Disposes of the
   * held message either way.
   */
  async finish(held: HeldMessage, incoming: Incoming, tx: CheckedTransaction): Promise<CheckOutcome> {
    try {
      if (held.oversize) {
        // Not checked, not stored: the same answer enqueue gives.
        return { refusal: smtpReply('messageTooBig', this.config.smtp.max_message_size), summary: 'too big' };
      }
      const c = this.config.checks;
      const f = this.config.filter;
      const hostname = this.config.hostname;
      // Both read the held message, each from the start, at the same time.
      const [auth, filtered] = await Promise.all([
        c.authenticate
          ? checkAuthentication(
              { message: held.replay(), ip: tx.ip, helo: tx.helo, sender: tx.sender, hostname, resolver: this.resolver.resolve, budgetMs: authBudget(c.dns_timeout) },
              { spf_fail: c.spf_fail, dmarc_reject: c.dmarc_reject, arc_trusted: c.arc_trusted },
            )
          : null,
        f.rspamd_url
          ? scan({ url: f.rspamd_url, timeoutMs: f.filter_timeout, message: held.replay(), ip: tx.ip, helo: tx.helo, sender: tx.sender, recipients: tx.recipients, hostname, queueId: incoming.queueId }).then(
              (r) => decideFilter(r, f.filter_failure, f.result_headers),
            )
          : null,
      ]);
      const summary = [auth?.summary, filtered?.note].filter(Boolean).join('; ');
      // A permanent refusal wins over a temporary one: the client should not retry a message that will be refused.
      const refusals = [auth?.refusal, filtered?.refusal].filter((r): r is SmtpReply => !!r).sort((a, b) => b.code - a.code);
      if (refusals.length) return { refusal: refusals[0]!, summary };
      // Mail for the junk folder (delivery/maildir files it there when [checks] junk_folder is set).
      const junk = [auth?.quarantine ? `DMARC quarantine policy of ${auth.quarantine}` : '', filtered?.junk ?? ''].filter(Boolean).join('; ');
      const junkField = junk ? safeHeaderText(`${JUNK_FIELD}: ${junk}`) + '\r\n' : '';
      incoming.addHeaders((auth?.headers ?? '') + (filtered?.headers ?? '') + junkField);
      incoming.note(summary);
      if (filtered?.notScanned) incoming.addEvent('not_scanned', filtered.notScanned);
      const rewrite = filtered?.rewriteSubject ?? null;
      const edit = (header: Buffer): Buffer => {
        // Only Petrel says what is junk: a sender's own X-Petrel-Junk: goes.
        const h = removeFields(c.authenticate ? stripOwnResults(header, hostname).header : header, JUNK_FIELD);
        return rewrite ? replaceSubject(h, rewrite(subjectOf(h))) : h;
      };
      try {
        for await (const chunk of held.replay(edit)) await incoming.write(chunk);
      } catch {
        // The scratch file could not be read back: the client keeps the message.
        return { refusal: smtpReply('storageError'), summary: `${summary} (not stored)` };
      }
      return { refusal: null, summary };
    } finally {
      await held.dispose();
    }
  }
}

/** authBudget - time for all the authentication checks of one message: room for several slow look-ups (two tries each), at least 30 s. */
export function authBudget(dnsTimeoutMs: number): number {
  return Math.max(30_000, 6 * 2 * dnsTimeoutMs);
}

/** Scratch directories already emptied by this process. */
const cleared = new Set<string>();

const perConfig = new WeakMap<Config, InboundChecks>();

/** inboundChecksFor - the checks of a running configuration (one resolver cache per server, made at first use). */
export function inboundChecksFor(config: Config): InboundChecks {
  let checks = perConfig.get(config);
  if (!checks) {
    checks = new InboundChecks(config);
    perConfig.set(config, checks);
  }
  return checks;
}
