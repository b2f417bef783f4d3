/*
 * tlsrpt/message - one TLS report as a mail message, RFC 8460 §5.3:
 * Subject "Report Domain: <d> Submitter: <org> Report-ID: <<id>>", the
 * TLS-Report-Domain and TLS-Report-Submitter fields, a multipart/report;
 * report-type="tlsrpt" with a short text/plain part and the gzip'd JSON as an
 * application/tlsrpt+gzip part (base64) named as §5.1 says; and
 * "TLS-Required: No" (RFC 8689 §5), so that every relay on the way delivers
 * it even where the recipient's TLS policy fails (RFC 8460 §5.3).
 *
 * Invariants: every line is CRLF-ended, ASCII and at most 998 octets (the
 * domain and organisation are cleaned and folded through dsn/mime; base64
 * lines are 76 characters); the boundary cannot occur in base64 or in our
 * own text.
 *
 * Untrusted input: the policy domain (from the recorder, i.e. the recipient
 * domain) and the organisation name (the operator's); both cleaned.
 */
import { gzipSync } from 'node:zlib';
import { rfc5322Date } from '../core/dates.js';
import { asciiText, cleanText, foldField, newBoundary } from '../dsn/mime.js';
import { reportFileName, type ReportContext, type TlsReportJson } from './report.js';

export interface ReportMessage {
  /** The whole message, CRLF line ends. */
  data: Buffer;
  /** The gzip'd JSON (for tests and the CLI's --json). */
  gzip: Buffer;
  fileName: string;
}

/** buildReportMessage - the report of `domain` as a message to `to` (all of them in To:). */
export function buildReportMessage(ctx: ReportContext & { from: string; to: string[]; now?: Date }, domain: string, report: TlsReportJson): ReportMessage {
  const clean = (s: string) => asciiText(cleanText(s));
  const d = clean(domain);
  const submitter = clean(ctx.organization);
  const boundary = newBoundary();
  const gzip = gzipSync(Buffer.from(JSON.stringify(report), 'utf8'));
  const fileName = clean(reportFileName(ctx, domain));
  const b64 = gzip.toString('base64').replace(/.{76}/g, '$&\r\n').replace(/\r\n$/, '');
  const lines = [
    foldField('From', `TLS reporting <${ctx.from}>`),
    foldField('To', ctx.to.map((a) => `<${a}>`).join(', ')),
    `Date: ${rfc5322Date(ctx.now ?? new Date())}`,
    foldField('Subject', `Report Domain: ${d} Submitter: ${submitter} Report-ID: <${clean(report['report-id'])}>`),
    foldField('TLS-Report-Domain', d),
    foldField('TLS-Report-Submitter', submitter),
    'Auto-Submitted: auto-generated',
    // RFC 8689 §5: deliver this message whatever the recipient's TLS policy (RFC 8460 §5.3: reports get through despite TLS failures).
    'TLS-Required: No',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt";`,
    ` boundary="${boundary}"`,
    '',
    'This is a multipart message in MIME format.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset="us-ascii"',
    'Content-Transfer-Encoding: 7bit',
    '',
    `This is an aggregate TLS report (RFC 8460) from ${submitter}`,
    `about mail sent to ${d} on ${ctx.day} (UTC).`,
    '',
    `--${boundary}`,
    'Content-Type: application/tlsrpt+gzip',
    'Content-Transfer-Encoding: base64',
    foldField('Content-Disposition', `attachment; filename="${fileName}"`),
    '',
    b64,
    '',
    `--${boundary}--`,
    '',
  ];
  return { data: Buffer.from(lines.join('\r\n'), 'latin1'), gzip, fileName };
}
