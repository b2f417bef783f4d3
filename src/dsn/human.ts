/*
 * dsn/human - the first part of a report (RFC 3462 §2: text/plain, for
 * people): an opening that says in plain words what happened to the
 * message, then one section per explanation (dsn/explain) listing every
 * recipient it applies to with the server that answered and its exact
 * reply, then a note on what is attached.
 *
 * Invariants:
 * - every line is at most 998 octets and wrapped near 76 characters;
 * - a line that quotes untrusted text (address, subject, reply) starts with
 *   spaces: no line of this part can start with "--" (so none can be a MIME
 *   boundary), and the fixed lines start with letters or "=";
 * - an explanation is written once per section; per recipient only its
 *   address, server and reply, so 100,000 recipients read as a list.
 *
 * Untrusted input: recipient addresses, ORCPT, remote host names and
 * replies, the original's subject and Message-ID (cleaned, capped, wrapped).
 *
 * RFCs: 3462 §2, 3464 §3 (what a human-readable part should say), 5322.
 */
import type { MessageRecord, ReportKind } from '../queue/store.js';
import type { Explanation } from './explain.js';
import { decodeEmbedded, type CleanRecipient } from './fields.js';
import { capText, cleanText, formatSize, formatSpan, plural, wrapText } from './mime.js';
import { rfc5322Date } from '../core/dates.js';

const WIDTH = 76;
const RULE = '='.repeat(WIDTH);
/** Width of the labels in a recipient entry ("Last reply: "). */
const LABEL = 13;

/** What the third part holds, for the closing note. */
export interface ReturnedNote {
  returned: 'full' | 'headers' | 'none';
  /** RET=FULL was asked for, but the message is larger than the limit. */
  tooBig: boolean;
  /** Only the first fields of a very large header section are attached. */
  truncated: boolean;
  size: number;
  limit: number;
  headersLimit: number;
}

export interface HumanContext {
  kind: ReportKind;
  hostname: string;
  message: MessageRecord;
  now: Date;
  retryUntil?: number;
}

function para(text: string, indent = ''): string {
  return wrapText(text, WIDTH, indent).map((l) => `${l}\r\n`).join('');
}

/** labelled - "      Reply:      text" wrapped with a hanging indent under the text. */
function labelled(label: string, text: string, margin = '      '): string {
  const lead = `${margin}${label.padEnd(LABEL)}`;
  return wrapText(text, WIDTH, ' '.repeat(lead.length), lead)
    .map((l) => `${l}\r\n`)
    .join('');
}

/** opening - the first paragraphs: who writes, what happened, which message. */
export function opening(c: HumanContext, total: number): string {
  const m = c.message;
  const recipients = plural(total, 'recipient');
  const msg = m.isReport ? 'The delivery report described below' : 'Your message';
  const since = formatSpan(Math.max(0, c.now.getTime() - m.receivedAt));
  let out = para(`This is the mail system at ${cleanText(c.hostname)}.`) + '\r\n';
  if (m.isReport) {
    out += para(
      `This notice is for the postmaster. The message it is about is a delivery report that this mail system made, and that report could not be delivered itself. Reports about reports are never sent to their sender, the null sender <>, since that could loop for ever; so this one comes to you.`,
    );
    out += '\r\n';
  }
  switch (c.kind) {
    case 'failed':
      out += para(`${msg} could not be delivered to ${recipients}. This is a permanent error: the mail system will not try again.`);
      break;
    case 'expired':
      out += para(
        `${msg} could not be delivered to ${recipients}. This mail system kept trying for ${since}, the longest it keeps a message, and has now given up. For each recipient, the last problem it met is shown below.`,
      );
      break;
    case 'delayed': {
      const until = c.retryUntil !== undefined && Number.isFinite(c.retryUntil) ? c.retryUntil : null;
      out += para('THIS IS A WARNING ONLY. YOU DO NOT NEED TO SEND YOUR MESSAGE AGAIN.') + '\r\n';
      out += para(
        until !== null
          ? `${msg} has not yet been delivered to ${recipients}. This mail system has been trying for ${since} and will keep trying for another ${formatSpan(
              Math.max(0, until - c.now.getTime()),
            )} (until the time shown below). If it still cannot deliver it by then, you will get another message.`
          : `${msg} has not yet been delivered to ${recipients}. This mail system has been trying for ${since} and will keep trying. If it finally cannot deliver it, you will get another message.`,
      );
      break;
    }
    case 'delivered':
      out += para(`${msg} was delivered to ${recipients}. You asked to be told when it was delivered, and this is that notice. It does not mean that the message has been read.`);
      break;
    case 'expanded':
      out += para(
        `${msg} was accepted for ${recipients}, an alias on this mail system, and passed on to the addresses it stands for. You asked to be told when it was delivered: this is that notice for the alias. You will get another notice about those addresses only if delivery to one of them fails or is delayed.`,
      );
      break;
    case 'relayed':
      out += para(
        `${msg} was passed on to the next mail server for ${recipients}. You asked to be told when it was delivered, but that server does not send delivery notices, so this is the last notice about these recipients that you will get from this mail system.`,
      );
      break;
  }
  out += '\r\n';
  out += labelled('Subject:', capText(cleanText(m.subject ?? ''), 500) || '(no subject)', '  ');
  if (cleanText(m.messageId ?? '')) out += labelled('Message-ID:', capText(cleanText(m.messageId), 500), '  ');
  out += labelled('Received:', rfc5322Date(new Date(m.receivedAt)), '  ');
  if (c.kind === 'delayed' && c.retryUntil !== undefined && Number.isFinite(c.retryUntil)) out += labelled('Retry until:', rfc5322Date(new Date(c.retryUntil)), '  ');
  out += labelled('Reference:', `${cleanText(m.queueId)} at ${cleanText(c.hostname)}`, '  ');
  return out;
}

/** section - the heading and explanation of one group of recipients. */
export function section(e: Explanation, count: number): string {
  let out = `\r\n${RULE}\r\n`;
  out += para(`${e.title} (${plural(count, 'recipient')})`);
  out += `${RULE}\r\n\r\n`;
  out += para(e.what);
  if (e.advice) out += '\r\n' + para(`What you can do: ${e.advice}`);
  return out + '\r\n';
}

/** entry - one recipient in its section: address, server, exact reply. */
export function entry(r: CleanRecipient, kind: ReportKind): string {
  const address = capText(r.address, 300);
  let line = `<${address}>`;
  if (r.orcpt) {
    const original = capText(decodeEmbedded(r.orcpt.address), 300);
    if (original && original.toLowerCase() !== address.toLowerCase()) line += ` (originally sent to <${original}>)`;
  }
  let out = wrapText(line, WIDTH, '      ', '  ').map((l) => `${l}\r\n`).join('');
  const last = kind === 'expired' || kind === 'delayed';
  // The server is shown whenever one is known, also when the error was local (a connection timed out).
  if (r.server) out += labelled('Server:', capText(r.server, 300));
  if (r.reply) {
    const label = r.remoteReply ? (last ? 'Last reply:' : 'Reply:') : kind === 'delivered' || kind === 'relayed' || kind === 'expanded' ? 'Details:' : last ? 'Last error:' : 'Error:';
    out += labelled(label, r.reply);
  }
  return out;
}

/** closing - what is attached, and where the technical details are. */
export function closing(c: HumanContext, note: ReturnedNote): string {
  let out = `\r\n${RULE}\r\n\r\n`;
  switch (note.returned) {
    case 'full':
      out += para('Your original message is attached below.');
      break;
    case 'headers':
      if (note.tooBig) {
        out += para(
          `You asked for the whole message to be returned, but at ${formatSize(note.size)} it is larger than the ${formatSize(note.limit)} this mail system returns, so only its header section is attached below.`,
        );
      } else {
        out += para("The header section of your original message (not its text) is attached below.");
      }
      if (note.truncated) {
        out += para(
          `That header section is longer than ${formatSize(note.headersLimit)}, so only its first ${formatSize(note.headersLimit)} (whole header fields) are included.`,
        );
      }
      break;
    case 'none':
      out += para('A copy of the original message could not be attached: it could not be read from the queue.');
      break;
  }
  out += '\r\n';
  out += para(
    `Technical details for mail administrators are in the attached delivery report. If you ask the postmaster of ${cleanText(c.hostname)} <postmaster@${cleanText(c.hostname)}> for help, please include this whole message.`,
  );
  return out;
}
