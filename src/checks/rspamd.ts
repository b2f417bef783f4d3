/*
 * checks/rspamd - hands a message from outside to rspamd (its HTTP
 * protocol, POST /checkv2) and turns the answer into a verdict: refuse,
 * tempfail, or accept with headers (and a rewritten Subject:).
 *
 * Invariants:
 * - the scan is bounded in time (`filter_timeout`, for the whole exchange)
 *   and in memory (the message streams from checks/held-message; the answer
 *   is read up to MAX_ANSWER octets);
 * - rspamd slow, down, or answering anything that is not a well-formed
 *   verdict is a failure, never a pass: the caller applies
 *   `filter_failure` ("tempfail": 451 4.7.0; "accept": accepted, with an
 *   event saying the message was not scanned);
 * - actions map to replies: reject -> 550 5.7.1 (rspamd's SMTP message when
 *   it gives one, made printable and short), soft reject and greylist ->
 *   451 4.7.1; add header and rewrite subject -> accepted, changed.
 *
 * Untrusted input: the message (passed on), rspamd's answer (parsed as
 * JSON, every field checked for its type; header names and values it asks
 * for are kept to printable ASCII and bounded).
 *
 * Protocol: https://rspamd.com/doc/developers/protocol.html (checkv2).
 */
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { smtpReply } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';

export interface RspamdRequest {
  url: string;
  timeoutMs: number;
  message: AsyncIterable<Buffer>;
  ip: string;
  helo: string;
  sender: string;
  recipients: string[];
  hostname: string;
  queueId: string;
}

export type RspamdResult =
  | { ok: true; action: string; score: number; required: number; symbols: string[]; smtpMessage: string; headers: [string, string][]; subject: string | null }
  | { ok: false; error: string };

/** Octets of rspamd's answer read at most: a verdict is a few KB; more is not a verdict. */
const MAX_ANSWER = 1024 * 1024;
/** Symbols named in the event and the header: the highest scoring ones. */
const MAX_SYMBOLS = 30;

const printable = (s: string, max: number): string => s.replace(/[^\x20-\x7e]/g, '?').slice(0, max);

/** scan - one message to rspamd; never throws. */
export async function scan(req: RspamdRequest): Promise<RspamdResult> {
  let url: URL;
  try {
    url = new URL('/checkv2', req.url);
  } catch {
    return { ok: false, error: `bad rspamd_url ${req.url}` };
  }
  const headers: Record<string, string | string[]> = {
    IP: req.ip,
    Helo: printable(req.helo, 255),
    From: printable(req.sender, 512),
    Rcpt: req.recipients.map((r) => printable(r, 512)),
    Hostname: printable(req.helo, 255),
    'Queue-Id': req.queueId,
    MTA: req.hostname,
  };
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), req.timeoutMs);
  try {
    const answer = await new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
      const r = request(url, { method: 'POST', headers, signal: controller.signal }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER) {
            res.destroy(new Error('answer too large'));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('answer cut short')));
      });
      r.on('error', reject);
      pipeline(Readable.from(req.message), r).catch(reject);
    });
    if (answer.status !== 200) return { ok: false, error: `HTTP ${answer.status}` };
    return parseVerdict(answer.body.toString('utf8'));
  } catch (e) {
    const err = e as Error;
    return { ok: false, error: controller.signal.aborted ? `no answer within ${req.timeoutMs} ms` : printable(err.message || String(err), 200) };
  } finally {
    clearTimeout(timer);
  }
}

const ACTIONS = new Set(['no action', 'greylist', 'add header', 'rewrite subject', 'soft reject', 'reject']);

/** parseVerdict - rspamd's JSON answer, checked field by field. */
export function parseVerdict(text: string): RspamdResult {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false, error: 'answer is not JSON' };
  }
  if (typeof v !== 'object' || v === null) return { ok: false, error: 'answer is not a JSON object' };
  const o = v as Record<string, unknown>;
  if (typeof o.action !== 'string' || !ACTIONS.has(o.action)) return { ok: false, error: `unknown action ${printable(String(o.action), 40)}` };
  const score = typeof o.score === 'number' && Number.isFinite(o.score) ? o.score : 0;
  const required = typeof o.required_score === 'number' && Number.isFinite(o.required_score) ? o.required_score : 0;
  const symbols: [string, number][] = [];
  if (typeof o.symbols === 'object' && o.symbols !== null) {
    for (const [name, s] of Object.entries(o.symbols as Record<string, unknown>)) {
      const sc = typeof (s as { score?: unknown })?.score === 'number' ? (s as { score: number }).score : 0;
      if (/^[A-Za-z0-9_.-]{1,64}$/.test(name)) symbols.push([name, sc]);
    }
  }
  symbols.sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]) || a[0].localeCompare(b[0]));
  const messages = (typeof o.messages === 'object' && o.messages !== null ? o.messages : {}) as Record<string, unknown>;
  const smtpMessage = typeof messages.smtp_message === 'string' ? printable(messages.smtp_message, 200) : '';
  const headers: [string, string][] = [];
  const milter = (typeof o.milter === 'object' && o.milter !== null ? o.milter : {}) as Record<string, unknown>;
  if (typeof milter.add_headers === 'object' && milter.add_headers !== null) {
    for (const [name, val] of Object.entries(milter.add_headers as Record<string, unknown>)) {
      if (!/^[A-Za-z0-9-]{1,64}$/.test(name)) continue;
      const values = Array.isArray(val) ? val : [val];
      for (const one of values) {
        const text = typeof one === 'string' ? one : typeof (one as { value?: unknown })?.value === 'string' ? (one as { value: string }).value : null;
        if (text !== null) headers.push([name, printable(text.replace(/\r?\n[ \t]*/g, ' '), 900)]);
      }
    }
  }
  const subject = typeof o.subject === 'string' ? printable(o.subject, 900) : null;
  return { ok: true, action: o.action, score, required, symbols: symbols.slice(0, MAX_SYMBOLS).map(([n, s]) => `${n}(${Math.round(s * 100) / 100})`), smtpMessage, headers, subject };
}

export interface FilterVerdict {
  refusal: SmtpReply | null;
  /** Header fields to add (CR LF after each). */
  headers: string;
  /** "rewrite subject": the new Subject: (rspamd's, or "*** SPAM *** " + the old one when it gives none). */
  rewriteSubject: ((old: string) => string) | null;
  /** For the received event: "rspamd: no action 2.7/15 [SYM(1.5), ...]" or "rspamd: not scanned (why)". */
  note: string;
  /** Set when accepted without a scan (filter_failure = "accept"): why, for the not_scanned event. */
  notScanned: string | null;
  /** "add header": why the message belongs in the junk folder ("rspamd add header 7/15"); null otherwise. */
  junk: string | null;
  /** The verdict for the received event (null when not scanned). */
  verdict: { action: string; score: number; required: number; symbols: string[] } | null;
}

/** decideFilter - what rspamd's result means for the message (pure; unit-tested). */
export function decideFilter(r: RspamdResult, failure: 'tempfail' | 'accept', resultHeaders: boolean): FilterVerdict {
  if (!r.ok) {
    const why = `rspamd: ${r.error}`;
    const none = { headers: '', rewriteSubject: null, note: `rspamd: not scanned (${r.error})`, junk: null, verdict: null };
    if (failure === 'tempfail') return { ...none, refusal: smtpReply('filterUnavailable'), notScanned: null };
    return { ...none, refusal: null, notScanned: why };
  }
  const score = `${Math.round(r.score * 100) / 100}/${Math.round(r.required * 100) / 100}`;
  const note = `rspamd: ${r.action} ${score} [${r.symbols.join(' ')}]`.slice(0, 1000);
  let headers = '';
  for (const [name, value] of r.headers) headers += `${name}: ${value}\r\n`;
  if (resultHeaders) headers += `X-Spamd-Result: default: ${r.action === 'reject' ? 'True' : 'False'} [${score}]; action=${r.action};\r\n\t${r.symbols.join(',\r\n\t') || '(none)'}\r\n`;
  let refusal: SmtpReply | null = null;
  let rewriteSubject: FilterVerdict['rewriteSubject'] = null;
  let junk: string | null = null;
  switch (r.action) {
    case 'reject':
      refusal = smtpReply('filterReject', r.smtpMessage || 'Spam message rejected');
      break;
    case 'soft reject':
    case 'greylist':
      refusal = smtpReply('filterSoftReject', r.smtpMessage || 'Try again later');
      break;
    case 'add header':
      if (!r.headers.some(([n]) => n.toLowerCase() === 'x-spam')) headers = `X-Spam: Yes\r\n${headers}`;
      junk = `rspamd add header ${score}`;
      break;
    case 'rewrite subject': {
      const subject = r.subject;
      rewriteSubject = subject ? () => subject : (old) => `*** SPAM *** ${old}`;
      break;
    }
  }
  return { refusal, headers, rewriteSubject, note, notScanned: null, junk, verdict: { action: r.action, score: r.score, required: r.required, symbols: r.symbols } };
}
