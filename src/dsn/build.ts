/*
 * dsn/build - writes one delivery status notification about one message
 * (RFC 3464 inside RFC 3462 multipart/report; RFC 6533 global types when the
 * original needed SMTPUTF8), for any number of recipients, as a stream.
 *
 * Design. The report lists every recipient twice - in the human part, which
 * must come first (RFC 3462 §2), grouped by what happened, then in the
 * machine part - but the recipients are read ONCE, from an async iterator,
 * and never held: each one is appended to two bounded buffers (dsn/spill),
 * the entry to its group's section and the fields to the machine part, which
 * keep a little in memory and overflow to a private scratch file. When the
 * recipients are done, the counts are known and the parts are copied out in
 * order. The alternatives were weighed:
 * - two passes over the recipients (a re-iterable source) would need no disk,
 *   but the store may change between the passes (a deferred recipient fails,
 *   a report is cleared), and then the two parts, and recipientIds, could
 *   disagree; grouping the human part would need still more passes;
 * - the machine part first breaks RFC 3462's order, and a short human part
 *   without the replies would fail the senders it is written for.
 * A single read gives one consistent snapshot, an exact summary and grouping,
 * no API change, and a useful property: nothing reaches `write` until the
 * whole report is ready, so a failure while reading leaves nothing written.
 * The cost is scratch disk about the size of the report (~500 octets per
 * recipient), only for reports past a few hundred KB.
 *
 * Invariants:
 * - memory is bounded whatever the number of recipients: a few Spill
 *   thresholds (dsn/spill) plus recipientIds (one number per recipient);
 * - every line is CRLF-terminated and at most 998 octets;
 * - the boundary cannot occur in the content: the writer's own lines never
 *   start with "--=" (dsn/human, dsn/fields), and the copy of the original is
 *   checked line by line and redone with a new boundary on a collision;
 * - a report covers only recipients waiting for this kind of report (a
 *   record whose `report` names another kind is left for its own report),
 *   and at least one: with none, ReportEmpty is thrown before any write;
 * - an original that cannot be read does not stop the report: it goes out
 *   without its third part (optional in RFC 3462) and says so.
 *
 * Untrusted input: the original message, remote replies and host names,
 * addresses, ORCPT, ENVID, the original's subject (dsn/mime cleans them).
 *
 * RFCs: 3461, 3462 (6522), 3463, 3464, 3834 (Auto-Submitted), 5322, 2045-2047,
 * 6532, 6533.
 */
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import type { Readable } from 'node:stream';
import type { MessageRecord, ReportKind } from '../queue/store.js';
import { explain, type Explanation } from './explain.js';
import { causeStatus, perMessageFields, prepare, recipientFields, type ReportRecipient } from './fields.js';
import { closing, entry, opening, section, type ReturnedNote } from './human.js';
import { capText, cleanText, encodedWords, foldField, hasNonAscii, newBoundary } from './mime.js';
import { rfc5322Date } from '../core/dates.js';
import { copyOriginal, HEADERS_LIMIT, type CopyMode, type CopyResult } from './original.js';
import { Batch, Scratch, Spill } from './spill.js';

export type { ReportRecipient } from './fields.js';

export interface ReportInput {
  kind: ReportKind;
  /** Reporting-MTA, and the domain of the report's Message-ID. */
  hostname: string;
  /** The message reported on. */
  message: MessageRecord;
  /**
   * The recipients it covers, in order; read once, never held. Records whose
   * `report` is another kind are skipped (left for their own report).
   */
  recipients: AsyncIterable<ReportRecipient>;
  /**
   * Opens the stored original (headers, or all of it with RET=FULL). May be
   * called more than once: again for the headers when the whole message
   * proves larger than returnSizeLimit.
   */
  original: () => Promise<Readable>;
  /** Cap on the returned original with RET=FULL; past it only headers go back. */
  returnSizeLimit: number;
  /** For "delayed": when Petrel gives up (Will-Retry-Until). */
  retryUntil?: number;
  /** Where the report goes (the original sender, or the postmaster for a failed report). Never "". */
  to: string;
  now?: Date;
  /** Parent directory for the scratch files of a large report; default os.tmpdir(). */
  scratchDir?: string;
}

export interface ReportWritten {
  messageId: string;
  subject: string;
  /** Recipients covered, to be cleared of their pending report in the same commit. */
  recipientIds: number[];
  /** True when the original message needed SMTPUTF8 (the report then does too). */
  smtputf8: boolean;
  /** True when the report holds octets >= 0x80: send it with BODY=8BITMIME. */
  eightBit: boolean;
  /** Octets written. */
  size: number;
  /** What the third part holds: the whole original, its headers, or nothing (unreadable). */
  returned: 'full' | 'headers' | 'none';
  /** Why the original could not be attached, when returned is "none" (for the event log). */
  originalError?: string;
}

/** ReportEmpty - asked for a report about no recipient (a caller's broken invariant). */
export class ReportEmpty extends Error {
  constructor(
    readonly queueId: string,
    readonly kind: ReportKind,
  ) {
    super(`no recipient of ${queueId} is waiting for a "${kind}" report`);
    this.name = 'ReportEmpty';
  }
}

/** Fresh boundaries tried before giving up: each collision has odds of 2^-128. */
const BOUNDARY_TRIES = 8;

const SUBJECT_PREFIX: Record<ReportKind, string> = {
  failed: 'Undeliverable',
  expired: 'Undeliverable (expired)',
  delayed: 'Delivery delayed',
  delivered: 'Delivered',
  relayed: 'Relayed',
  expanded: 'Expanded',
};

/** The longest part of the original's subject repeated in the report's. */
const SUBJECT_MAX = 200;

const MSG_ID = /^<[\x21-\x3b\x3d\x3f-\x7e]{1,450}@[\x21-\x3b\x3d\x3f-\x7e]{1,450}>$/;

interface Group {
  e: Explanation;
  count: number;
  entries: Spill;
}

/** subjectOf - the report's Subject, as text and as a header field. */
function subjectOf(kind: ReportKind, m: MessageRecord, utf8: boolean): { text: string; field: string } {
  const original = capText(cleanText(m.subject ?? ''), SUBJECT_MAX) || '(no subject)';
  const prefix = `${m.isReport ? 'Postmaster notice: ' : ''}${SUBJECT_PREFIX[kind]}:`;
  const text = `${prefix} ${original}`;
  const value = utf8 || !hasNonAscii(original) ? text : `${prefix} ${encodedWords(original).join(' ')}`;
  return { text, field: foldField('Subject', value) };
}

/** writeReport - build the report and stream it through `write`, in chunks of about 64 KB. */
export async function writeReport(input: ReportInput, write: (chunk: Buffer) => Promise<void>): Promise<ReportWritten> {
  const to = cleanText(input.to ?? '').replace(/[<>]/g, '');
  // Invariant 9 (DESIGN): the null sender is never sent a report.
  if (!to) throw new Error('writeReport: a report is never sent to the null sender <>');
  const kind = input.kind;
  const m = input.message;
  const now = input.now ?? new Date();
  const global = m.smtputf8;
  const hostname = cleanText(input.hostname);
  const scratch = new Scratch(input.scratchDir ?? tmpdir());
  const spills: Spill[] = [];
  const newSpill = (): Spill => {
    const s = new Spill(scratch);
    spills.push(s);
    return s;
  };

  try {
    // 1. The original, before anything else: its copy settles the boundary.
    const original = newSpill();
    let boundary = newBoundary();
    // A REQUIRETLS message's report goes out without REQUIRETLS (RFC 8689; docs/dane.md): it never carries the body.
    const wantFull = m.ret === 'FULL' && m.requireTls !== true;
    let mode: CopyMode = wantFull && m.size <= input.returnSizeLimit ? 'full' : 'headers';
    let tooBig = wantFull && mode === 'headers';
    let truncated = false;
    let returned: ReportWritten['returned'] = mode;
    let originalError: string | undefined;
    for (let tries = 1; ; tries++) {
      let result: CopyResult;
      try {
        result = await copyOriginal({ open: input.original, mode, limit: input.returnSizeLimit, boundary, into: original });
      } catch (e) {
        await original.reset();
        returned = 'none';
        originalError = e instanceof Error ? e.message : String(e);
        break;
      }
      if (result.status === 'ok') {
        truncated = result.truncated;
        returned = mode;
        break;
      }
      await original.reset();
      if (result.status === 'too-big') {
        mode = 'headers';
        tooBig = true;
      } else if (tries >= BOUNDARY_TRIES) {
        throw new Error(`writeReport: the original of ${m.queueId} contains ${tries} random boundaries in a row`);
      } else {
        boundary = newBoundary();
      }
    }

    // 2. The recipients, read once: entries into their group, fields into the machine part.
    const groups = new Map<string, Group>();
    const machine = newSpill();
    const ids: number[] = [];
    const fieldContext = { kind, global, retryUntil: input.retryUntil };
    for await (const r of input.recipients) {
      if (r.report !== null && r.report !== undefined && r.report !== kind) continue;
      ids.push(r.id);
      const clean = prepare(r);
      const e = explain(kind, causeStatus(kind, clean.lastStatus), clean.remoteReply);
      let g = groups.get(e.key);
      if (!g) groups.set(e.key, (g = { e, count: 0, entries: newSpill() }));
      g.count++;
      await g.entries.append(entry(clean, kind));
      await machine.append(recipientFields(clean, fieldContext));
    }
    if (ids.length === 0) throw new ReportEmpty(m.queueId, kind);

    // 3. Everything is known: write the report out, part by part.
    const human = { kind, hostname, message: m, now, retryUntil: input.retryUntil };
    const note: ReturnedNote = { returned, tooBig, truncated, size: m.size, limit: input.returnSizeLimit, headersLimit: HEADERS_LIMIT };
    const intro = opening(human, ids.length);
    const sections = [...groups.values()].map((g) => ({ g, head: section(g.e, g.count) }));
    const outro = closing(human, note);
    const perMessage = perMessageFields(m, hostname, global);
    const humanEightBit = hasNonAscii(intro) || hasNonAscii(outro) || sections.some((s) => s.g.entries.eightBit || hasNonAscii(s.head));
    const machineEightBit = machine.eightBit || hasNonAscii(perMessage);
    const eightBit = humanEightBit || machineEightBit || (returned !== 'none' && original.eightBit);
    const cte = (eight: boolean): string => `Content-Transfer-Encoding: ${eight ? '8bit' : '7bit'}\r\n`;

    const subject = subjectOf(kind, m, global);
    const messageId = `<${cleanText(m.queueId)}.${randomBytes(6).toString('hex')}.dsn@${hostname}>`;
    const originalId = cleanText(m.messageId ?? '');
    const undelivered = kind === 'delivered' || kind === 'relayed' || kind === 'expanded' ? 'Delivered' : 'Undelivered';
    const out = new Batch(write);
    await out.text(
      `From: Mail Delivery System <MAILER-DAEMON@${hostname}>\r\n` +
        `${foldField('To', `<${to}>`)}\r\n` +
        `${subject.field}\r\n` +
        `Date: ${rfc5322Date(now)}\r\n` +
        `Message-ID: ${messageId}\r\n` +
        (MSG_ID.test(originalId) ? `References: ${originalId}\r\n` : '') +
        'Auto-Submitted: auto-replied\r\n' +
        'MIME-Version: 1.0\r\n' +
        `Content-Type: multipart/report; report-type=${global ? 'global-delivery-status' : 'delivery-status'};\r\n` +
        `\tboundary="${boundary}"\r\n` +
        (eightBit ? 'Content-Transfer-Encoding: 8bit\r\n' : '') +
        '\r\n' +
        'This is a MIME-encapsulated message.\r\n' +
        `\r\n--${boundary}\r\n` +
        'Content-Description: Notification\r\n' +
        'Content-Type: text/plain; charset=utf-8\r\n' +
        cte(humanEightBit) +
        '\r\n' +
        intro,
    );
    for (const s of sections) {
      await out.text(s.head);
      await s.g.entries.drain((c) => out.bytes(c));
    }
    await out.text(
      outro +
        `\r\n--${boundary}\r\n` +
        'Content-Description: Delivery report\r\n' +
        `Content-Type: ${global ? 'message/global-delivery-status' : 'message/delivery-status'}\r\n` +
        cte(machineEightBit) +
        '\r\n' +
        perMessage,
    );
    await machine.drain((c) => out.bytes(c));
    if (returned !== 'none') {
      const full = returned === 'full';
      const type = full ? (global ? 'message/global' : 'message/rfc822') : global ? 'message/global-headers' : 'text/rfc822-headers';
      await out.text(
        `\r\n--${boundary}\r\n` +
          `Content-Description: ${undelivered} Message${full ? '' : ' Headers'}\r\n` +
          `Content-Type: ${type}\r\n` +
          cte(original.eightBit) +
          '\r\n',
      );
      await original.drain((c) => out.bytes(c));
    }
    await out.text(`\r\n--${boundary}--\r\n`);
    await out.flush();

    const result: ReportWritten = {
      messageId,
      subject: subject.text,
      recipientIds: ids,
      smtputf8: global || hasNonAscii(to),
      eightBit,
      size: out.size,
      returned,
    };
    if (originalError !== undefined) result.originalError = originalError;
    return result;
  } finally {
    // Best effort: a scratch file left behind must not turn a written report into a failure.
    for (const s of spills) await s.dispose().catch(() => undefined);
    await scratch.dispose().catch(() => undefined);
  }
}
