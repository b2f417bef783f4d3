/*
 * dsn/build - writes one delivery status notification (RFC 3464, RFC 3462
 * multipart/report, RFC 3461 fields) about one message, for any number of
 * recipients, as a stream: recipients are read one by one from an async
 * iterator and written out, so a report about 100,000 recipients never holds
 * them all in memory.
 *
 * Untrusted input: the original message's headers and the remote replies
 * quoted in the report (folded, control characters removed).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { MessageRecord, RecipientRecord, ReportKind } from '../queue/store.js';

export interface ReportInput {
  kind: ReportKind;
  /** Reporting-MTA, and the domain of the report's Message-ID. */
  hostname: string;
  /** The message reported on. */
  message: MessageRecord;
  /** The recipients it covers, in order. */
  recipients: AsyncIterable<RecipientRecord>;
  /** Opens the stored original (headers, or all of it with RET=FULL). */
  original: () => Promise<Readable>;
  /** Cap on the returned original with RET=FULL; past it only headers go back. */
  returnSizeLimit: number;
  /** For "delayed": when Petrel gives up (Will-Retry-Until). */
  retryUntil?: number;
  /** Where the report goes (the original sender, or the postmaster for a failed report). */
  to: string;
  now?: Date;
}

export interface ReportWritten {
  messageId: string;
  subject: string;
  /** Recipients covered, to be cleared of their pending report in the same commit. */
  recipientIds: number[];
  /** True when the original message needed SMTPUTF8 (the report then does too). */
  smtputf8: boolean;
}

const ACTION: Record<ReportKind, string> = { failed: 'failed', expired: 'failed', delayed: 'delayed', delivered: 'delivered', relayed: 'relayed' };

const SUBJECT: Record<ReportKind, string> = {
  failed: 'Undelivered Mail Returned to Sender',
  expired: 'Undelivered Mail Returned to Sender',
  delayed: 'Delayed Mail (still being retried)',
  delivered: 'Successful Mail Delivery Report',
  relayed: 'Successful Mail Delivery Report',
};

function rfc822Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

function clean(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x1f\x7f]/g, ' ');
}

/** writeReport - stream a report through `write`. */
export async function writeReport(input: ReportInput, write: (chunk: Buffer) => Promise<void>): Promise<ReportWritten> {
  const now = input.now ?? new Date();
  const boundary = `${input.message.queueId}/${input.hostname}/${randomBytes(6).toString('hex')}`;
  const messageId = `<${input.message.queueId}.${randomBytes(6).toString('hex')}.dsn@${input.hostname}>`;
  const subject = SUBJECT[input.kind];
  const out = (text: string): Promise<void> => write(Buffer.from(text.replace(/\r?\n/g, '\r\n'), 'utf8'));
  const m = input.message;
  await out(
    `From: Mail Delivery System <MAILER-DAEMON@${input.hostname}>\n` +
      `To: <${input.to}>\n` +
      `Subject: ${subject}\n` +
      `Date: ${rfc822Date(now)}\n` +
      `Message-ID: ${messageId}\n` +
      `Auto-Submitted: auto-replied\n` +
      `MIME-Version: 1.0\n` +
      `Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="${boundary}"\n\n` +
      `This is a MIME-encapsulated message.\n\n` +
      `--${boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n` +
      `This is the mail system at ${input.hostname}.\n\n` +
      `About your message ${clean(m.messageId)}${m.subject ? ` ("${clean(m.subject)}")` : ''}:\n\n`,
  );
  const ids: number[] = [];
  const perRecipient: string[] = [];
  for await (const r of input.recipients) {
    ids.push(r.id);
    await out(`<${r.address}>: ${clean(r.lastReply) || r.lastStatus}\n`);
    let block = '';
    if (r.orcpt) block += `Original-Recipient: ${clean(r.orcpt)}\n`;
    block += `Final-Recipient: rfc822; ${r.address}\nAction: ${ACTION[input.kind]}\nStatus: ${input.kind === 'expired' ? '4.4.7' : r.lastStatus || '5.0.0'}\n`;
    if (r.remote) block += `Remote-MTA: dns; ${clean(r.remote)}\n`;
    if (r.lastReply) block += `Diagnostic-Code: smtp; ${clean(r.lastReply)}\n`;
    if (r.lastAttemptAt) block += `Last-Attempt-Date: ${rfc822Date(new Date(r.lastAttemptAt))}\n`;
    if (input.kind === 'delayed' && input.retryUntil) block += `Will-Retry-Until: ${rfc822Date(new Date(input.retryUntil))}\n`;
    perRecipient.push(block);
  }
  await out(`\n--${boundary}\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; ${input.hostname}\n`);
  if (m.envid) await out(`Original-Envelope-Id: ${clean(m.envid)}\n`);
  await out(`Arrival-Date: ${rfc822Date(new Date(m.receivedAt))}\n`);
  for (const block of perRecipient) await out(`\n${block}`);
  await out(`\n--${boundary}\nContent-Type: text/rfc822-headers\n\n`);
  const original = await input.original();
  let pending = Buffer.alloc(0);
  for await (const chunk of original as AsyncIterable<Buffer>) {
    pending = Buffer.concat([pending, chunk]);
    const end = pending.indexOf('\r\n\r\n');
    if (end >= 0) {
      await write(pending.subarray(0, end + 2));
      pending = Buffer.alloc(0);
      break;
    }
  }
  if (pending.length) await write(pending);
  original.destroy();
  await out(`\n--${boundary}--\n`);
  return { messageId, subject, recipientIds: ids, smtputf8: m.smtputf8 };
}
