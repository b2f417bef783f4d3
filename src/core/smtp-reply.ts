/*
 * core/smtp-reply - the one type for SMTP outcomes, in both directions.
 *
 * A reply is a three-digit code, an optional RFC 3463 enhanced status code and
 * text. Petrel's own replies are built here (so every reply carries an
 * enhanced code, RFC 2034), and replies read from peers are parsed here, both
 * single- and multi-line (RFC 5321 §4.2.1). Text that came from a peer is
 * untrusted: it is kept for the operator and the DSN, with control characters
 * removed, and never interpreted.
 */

export interface SmtpReply {
  code: number;
  /** RFC 3463 "class.subject.detail", e.g. "4.5.3"; empty when the peer sent none. */
  enhanced: string;
  /** Text lines without code and enhanced code. */
  lines: string[];
}

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)/;

export function reply(code: number, enhanced: string, text: string): SmtpReply {
  return { code, enhanced, lines: text.split('\n') };
}

/** formatReply - the wire form, CRLF-terminated, multi-line when needed. */
export function formatReply(r: SmtpReply): string {
  const lines = r.lines.length ? r.lines : [''];
  return lines
    .map((l, i) => `${r.code}${i < lines.length - 1 ? '-' : ' '}${r.enhanced ? `${r.enhanced} ` : ''}${l}`.trimEnd() + '\r\n')
    .join('');
}

/** replyText - one line for logs and reports: "550 5.1.1 No such user". */
export function replyText(r: SmtpReply): string {
  return `${r.code}${r.enhanced ? ` ${r.enhanced}` : ''} ${r.lines.join(' ')}`.trim();
}

/**
 * ReplyParser - feed it lines read from a peer; it returns a complete reply
 * when the last line of one arrives, or null while a multi-line reply goes on.
 * Throws on a line that is not a reply (a protocol error the caller defers on).
 */
export class ReplyParser {
  private code = 0;
  private lines: string[] = [];

  push(line: string): SmtpReply | null {
    const m = /^(\d{3})([ -]|$)(.*)$/.exec(line);
    if (!m) throw new Error(`malformed reply line: ${sanitize(line).slice(0, 200)}`);
    const code = Number(m[1]);
    if (this.lines.length && code !== this.code) throw new Error(`reply code changed inside a multi-line reply: ${sanitize(line).slice(0, 200)}`);
    this.code = code;
    this.lines.push(sanitize(m[3] ?? ''));
    if (m[2] === '-') return null;
    const lines = this.lines;
    this.lines = [];
    let enhanced = '';
    const e = ENHANCED.exec(lines[0] ?? '');
    if (e && e[1] === String(code)[0]) {
      enhanced = `${e[1]}.${e[2]}.${e[3]}`;
      for (let i = 0; i < lines.length; i++) lines[i] = lines[i]!.replace(ENHANCED, '');
    }
    return { code, enhanced, lines };
  }
}

export function sanitize(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\x00-\x08\x0a-\x1f\x7f]/g, ' ');
}

/** Classification of a reply for delivery. */
export function isPositive(r: SmtpReply): boolean {
  return r.code >= 200 && r.code < 400;
}
export function isTemporary(r: SmtpReply): boolean {
  return r.code >= 400 && r.code < 500;
}
export function isPermanent(r: SmtpReply): boolean {
  return r.code >= 500;
}

/**
 * statusOf - the RFC 3463 status to report for a reply: its own enhanced code
 * when it has one of the right class, otherwise the generic one for its class.
 */
export function statusOf(r: SmtpReply): string {
  if (r.enhanced && r.enhanced[0] === String(r.code)[0]) return r.enhanced;
  return r.code >= 500 ? '5.0.0' : r.code >= 400 ? '4.0.0' : '2.0.0';
}
