/*
 * checks/authenticate - sender authentication of mail from outside: SPF on
 * the MAIL FROM domain, or the HELO name for the null sender (RFC 7208), DKIM signatures (RFC 6376), DMARC alignment
 * and policy (RFC 7489), the ARC chain (RFC 8617), done by `mailauth`; and
 * the policy of `[checks]` applied to what it found.
 *
 * Why mailauth: it implements all four on one parse of the message, streams
 * the body through its hashes (memory is the header section), takes our
 * resolver (checks/dns) for every DNS look-up, and writes the
 * Authentication-Results: text itself; written and maintained for MTAs
 * (WildDuck, ZoneMTA, EmailEngine). The 4.x line runs on Node 20.
 *
 * Invariants:
 * - a DNS failure is `temperror`, never a permanent refusal: with
 *   `spf_fail = "reject"` an SPF temperror is 451 4.7.24 (RFC 7372); with
 *   `dmarc_reject` a DMARC result that DNS prevented (the DMARC record, or an
 *   SPF or DKIM result DMARC needed, could not be looked up) is 451 4.7.1;
 *   without an enforcing policy the mail is accepted and tagged;
 * - refusals are 550 5.7.23 (SPF fail, RFC 7372) and 550 5.7.1 (DMARC
 *   p=reject, RFC 7489 §6.6.3; sp= for a subdomain);
 * - a valid ARC chain is reported, and overrides a DMARC refusal only when
 *   its last sealer is named in `arc_trusted` (RFC 8617 §7.2);
 * - anything mailauth throws (a message it cannot parse), and a check that
 *   takes longer than its budget (many slow DNS look-ups: an SPF record may
 *   cause ten), is not a reason to refuse: the result is `temperror` for
 *   every method and the mail goes on under the same rules (451 where a
 *   policy enforces, tagged otherwise).
 *
 * Untrusted input: the message, the envelope, HELO, every DNS answer.
 *
 * RFCs: 7208, 6376, 7489, 8617, 8601 (the header), 7372 (status codes).
 */
import { Readable } from 'node:stream';
import type { authenticate } from 'mailauth';
import { smtpReply } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';
import { safeHeaderText } from './auth-results.js';
import type { ResolveFn } from './dns.js';

export interface AuthPolicy {
  spf_fail: 'tag' | 'reject';
  dmarc_reject: boolean;
  arc_trusted: string[];
}

export interface AuthInput {
  /** The message as received (CR LF), from the start. */
  message: AsyncIterable<Buffer>;
  ip: string;
  helo: string;
  /** MAIL FROM; "" for the null sender. */
  sender: string;
  /** authserv-id: our hostname. */
  hostname: string;
  resolver: ResolveFn;
  /** Time allowed for all of it: then every method is temperror (see AuthInput users). */
  budgetMs: number;
}

export interface AuthVerdict {
  /** A reply refusing the message, or null to accept it. */
  refusal: SmtpReply | null;
  /** Header fields to add at the top (CR LF after each). */
  headers: string;
  /** For the event log and traces: "spf=pass dkim=pass dmarc=pass arc=none". */
  summary: string;
  spf: string;
  dkim: string;
  dmarc: string;
  arc: string;
  /** DMARC failed under p=quarantine (and the message is accepted): the policy's domain, for the junk folder; "" otherwise. */
  quarantine: string;
}

interface Status {
  result?: string;
}

/** dkimSummary - the best DKIM result: pass over temperror over the rest; "none" without signatures. */
function dkimSummary(results: { status?: Status }[]): string {
  if (!results.length) return 'none';
  const all = results.map((r) => r.status?.result ?? 'neutral');
  for (const r of ['pass', 'temperror', 'fail', 'policy', 'neutral', 'permerror']) if (all.includes(r)) return r;
  return all[0]!;
}

let mailauth: Promise<typeof import('mailauth')> | null = null;

/**
 * loadMailauth - mailauth is loaded when a session is first checked, not at
 * start: it is about 40 MB resident, which a process that never checks
 * (the primary of `[server] workers`, a submission or relay-only server)
 * need not carry.
 */
export function loadMailauth(): Promise<typeof import('mailauth')> {
  return (mailauth ??= import('mailauth'));
}

/** checkAuthentication - run SPF, DKIM, DMARC and ARC on a message and apply the policy. */
export async function checkAuthentication(input: AuthInput, policy: AuthPolicy): Promise<AuthVerdict> {
  let res: Awaited<ReturnType<typeof authenticate>>;
  try {
    const { authenticate } = await loadMailauth();
    const work = authenticate(Readable.from(input.message), {
      ip: input.ip,
      helo: input.helo,
      sender: input.sender,
      mta: input.hostname,
      resolver: input.resolver as never,
      disableBimi: true,
    });
    // Abandoned when over budget: its late failure must not go unhandled.
    work.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const budget = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no result within ${input.budgetMs} ms (DNS)`)), input.budgetMs);
    });
    try {
      res = await Promise.race([work, budget]);
    } finally {
      clearTimeout(timer);
    }
  } catch (e) {
    const why = (e as Error).message.replace(/[^\x20-\x7e]/g, '?').slice(0, 120);
    return decide(policy, input.hostname, {
      spf: 'temperror',
      dkim: 'temperror',
      dmarc: 'temperror',
      arc: 'none',
      dmarcPolicy: '',
      dmarcDomain: '',
      sealer: '',
      headers: `Authentication-Results: ${input.hostname}; none (checks failed: ${why})\r\n`,
      dnsTrouble: true,
    });
  }
  const spf = (res.spf && (res.spf.status as Status)?.result) || 'none';
  const dkimResults = ((res.dkim as { results?: { status?: Status }[] })?.results ?? []) as { status?: Status }[];
  const dkim = dkimSummary(dkimResults);
  const dmarcObj = res.dmarc as { status?: Status; policy?: string; domain?: string } | false;
  const dmarc = (dmarcObj && dmarcObj.status?.result) || 'none';
  const arcObj = res.arc as { status?: Status; signature?: { signingDomain?: string } } | false;
  const arc = (arcObj && arcObj.status?.result) || 'none';
  const sealer = (arcObj && arcSealer(arcObj)) || '';
  const dnsTrouble = spf === 'temperror' || dkimResults.some((r) => r.status?.result === 'temperror') || dmarc === 'temperror';
  return decide(policy, input.hostname, {
    spf,
    dkim,
    dmarc,
    arc,
    dmarcPolicy: (dmarcObj && dmarcObj.policy) || '',
    dmarcDomain: (dmarcObj && dmarcObj.domain) || '',
    sealer,
    headers: res.headers,
    dnsTrouble,
  });
}

/** arcSealer - the d= of the last ARC-Seal (the sealer vouching for the chain). */
function arcSealer(arc: object): string {
  const chain = (arc as { chain?: { ['arc-seal']?: { parsed?: { d?: { value?: string } } } }[] }).chain;
  const last = Array.isArray(chain) && chain.length ? chain[chain.length - 1] : undefined;
  return (last?.['arc-seal']?.parsed?.d?.value ?? '').toLowerCase();
}

interface Found {
  spf: string;
  dkim: string;
  dmarc: string;
  arc: string;
  dmarcPolicy: string;
  dmarcDomain: string;
  sealer: string;
  headers: string;
  dnsTrouble: boolean;
}

/** decide - the [checks] policy over the results (pure; unit-tested). */
export function decide(policy: AuthPolicy, hostname: string, f: Found): AuthVerdict {
  let refusal: SmtpReply | null = null;
  const extra: string[] = [];
  if (policy.spf_fail === 'reject' && f.spf === 'fail') refusal = smtpReply('spfFail');
  else if (policy.spf_fail === 'reject' && f.spf === 'temperror') refusal = smtpReply('spfTemperror');
  if (!refusal && f.dmarc === 'fail' && f.dmarcPolicy === 'reject') {
    const trustedArc = f.arc === 'pass' && f.sealer !== '' && policy.arc_trusted.includes(f.sealer);
    if (trustedArc) extra.push(`X-Petrel-DMARC: reject policy of ${f.dmarcDomain} overridden by the trusted ARC chain of ${f.sealer}`);
    else if (policy.dmarc_reject && f.dnsTrouble) refusal = smtpReply('dmarcTemperror');
    else if (policy.dmarc_reject) refusal = smtpReply('dmarcReject', f.dmarcDomain);
  } else if (!refusal && f.dmarc === 'temperror' && policy.dmarc_reject) {
    refusal = smtpReply('dmarcTemperror');
  }
  const quarantine = !refusal && f.dmarc === 'fail' && f.dmarcPolicy === 'quarantine' ? f.dmarcDomain || '(unknown domain)' : '';
  if (quarantine) extra.push(`X-Petrel-DMARC: quarantine (policy of ${f.dmarcDomain})`);
  let headers = f.headers.endsWith('\r\n') ? f.headers : `${f.headers}\r\n`;
  headers = safeHeaderText(headers.replace(/\r?\n/g, '\r\n').replace(/\r\n$/, '')) + '\r\n';
  for (const h of extra) headers += safeHeaderText(h) + '\r\n';
  return {
    refusal,
    headers,
    summary: `spf=${f.spf} dkim=${f.dkim} dmarc=${f.dmarc}${f.dmarcPolicy ? ` (p=${f.dmarcPolicy})` : ''} arc=${f.arc}`,
    spf: f.spf,
    dkim: f.dkim,
    dmarc: f.dmarc,
    arc: f.arc,
    quarantine,
  };
}
