/*
 * test/helpers/dsn-writer - fixtures and readers for the DSN writer tests
 * (test/unit/dsn-*.test.ts): a message and recipients as the store gives
 * them, a report captured in memory, golden-file masking, and two real MIME
 * parsers to read reports back - Python's `email` package (in a child
 * process) for the structure and the delivery-status fields, mailparser for
 * what a mail client shows.
 */
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import type { MessageRecord, RecipientRecord } from '../../src/queue/store.js';
import { writeReport, type ReportInput, type ReportRecipient, type ReportWritten } from '../../src/dsn/build.js';

/** Arrival of the fixture message, and the fixed "now" of every golden report. */
export const ARRIVAL = Date.UTC(2026, 2, 3, 9, 15, 0);
export const NOW = new Date(Date.UTC(2026, 2, 3, 9, 42, 0));
export const LAST_ATTEMPT = Date.UTC(2026, 2, 3, 9, 41, 30);

export const ORIGINAL =
  'Received: from client.example.org (client.example.org [198.51.100.7])\r\n' +
  '\tby mx.petrel.example with ESMTPS id 01JNPX3V7Q0000AB; Tue, 03 Mar 2026 09:15:00 +0000\r\n' +
  'From: Alice Example <alice@example.org>\r\n' +
  'To: Bob <bob@example.com>, Carol <carol@example.net>\r\n' +
  'Subject: Quarterly report\r\n' +
  'Date: Tue, 03 Mar 2026 10:14:58 +0100\r\n' +
  'Message-ID: <q1-report.4711@example.org>\r\n' +
  'MIME-Version: 1.0\r\n' +
  'Content-Type: text/plain; charset=us-ascii\r\n' +
  '\r\n' +
  'Hello,\r\n' +
  '\r\n' +
  'the figures for the first quarter are below.\r\n' +
  '-- \r\n' +
  'Alice\r\n';

export function message(over: Partial<MessageRecord> = {}): MessageRecord {
  return {
    queueId: '01JNPX3V7Q0000AB',
    messageId: '<q1-report.4711@example.org>',
    sender: 'alice@example.org',
    envid: null,
    ret: null,
    size: Buffer.byteLength(ORIGINAL),
    receivedAt: ARRIVAL,
    smtputf8: false,
    eightBit: false,
    isReport: false,
    client: 'client.example.org [198.51.100.7]',
    subject: 'Quarterly report',
    recipientCount: 1,
    quarantine: '',
    ...over,
  };
}

export function recipient(id: number, over: Partial<ReportRecipient> = {}): ReportRecipient {
  const r: RecipientRecord = {
    id,
    queueId: '01JNPX3V7Q0000AB',
    address: `user${id}@example.com`,
    orcpt: null,
    notify: null,
    destination: 'example.com',
    state: 'failed',
    attempts: 1,
    nextAttemptAt: 0,
    lastAttemptAt: LAST_ATTEMPT,
    lastReply: '550 5.1.1 No such user',
    lastStatus: '5.1.1',
    remote: 'mx1.example.com [192.0.2.10]',
    report: 'failed',
    delayNotified: false,
    suspended: false,
  };
  return { ...r, ...over };
}

export async function* iterate<T>(items: Iterable<T>): AsyncIterable<T> {
  for (const item of items) yield item;
}

export function originalFrom(text: string | Buffer): () => Promise<Readable> {
  return async () => Readable.from([typeof text === 'string' ? Buffer.from(text, 'utf8') : text]);
}

export type Case = Omit<ReportInput, 'recipients' | 'hostname' | 'original' | 'returnSizeLimit' | 'to' | 'message'> & {
  recipients: ReportRecipient[];
  message?: MessageRecord;
  original?: ReportInput['original'];
  returnSizeLimit?: number;
  to?: string;
};

/** build - write one report into memory with the usual fixture defaults. */
export async function build(c: Case): Promise<{ raw: Buffer; result: ReportWritten; writes: number }> {
  const chunks: Buffer[] = [];
  const result = await writeReport(
    {
      hostname: 'mx.petrel.example',
      original: originalFrom(ORIGINAL),
      returnSizeLimit: 256 * 1024,
      to: 'alice@example.org',
      now: NOW,
      ...c,
      message: c.message ?? message(),
      recipients: iterate(c.recipients),
    },
    async (chunk) => {
      chunks.push(chunk);
    },
  );
  return { raw: Buffer.concat(chunks), result, writes: chunks.length };
}

/** mask - the parts of a report that change on every run: boundary, and the report's own Date and Message-ID. */
export function mask(raw: Buffer | string): string {
  return raw
    .toString()
    .replace(/=_petrel-[0-9a-f]{32}/g, '=_petrel-BOUNDARY')
    .replace(/^Date: .*$/m, 'Date: DATE')
    .replace(/^Message-ID: <([^.>]+)\.[0-9a-f]{12}\.dsn@/m, 'Message-ID: <$1.RANDOM.dsn@');
}

/** lines - every line of a report, split at CRLF; throws on a bare CR or LF. */
export function lines(raw: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x0a) {
      if (i === 0 || raw[i - 1] !== 0x0d) throw new Error(`bare LF at octet ${i}`);
      out.push(raw.subarray(start, i - 1));
      start = i + 1;
    } else if (raw[i] === 0x0d && raw[i + 1] !== 0x0a) {
      throw new Error(`bare CR at octet ${i}`);
    }
  }
  if (start !== raw.length) throw new Error('the report does not end with CRLF');
  return out;
}

export interface Parsed {
  defects: string[];
  headers: Record<string, string[]>;
  contentType: string;
  params: Record<string, string>;
  parts: { type: string; headers: Record<string, string[]>; text?: string }[];
  perMessage: Record<string, string>;
  recipients: Record<string, string>[];
  statusBlocks: number;
  original: { headers: [string, string][]; body: string | null } | null;
}

/**
 * The reader in Python (policy "default" decodes headers and text; "compat32"
 * is three times faster for 100,000 recipients). message/delivery-status is
 * parsed by `email` itself into one Message per block; the global type is
 * not known to it, so its blocks are parsed here the same way.
 */
const PY = String.raw`
import email, email.policy, json, sys
from email.parser import Parser, HeaderParser
policy = email.policy.default if sys.argv[1] == 'default' else email.policy.compat32
raw = sys.stdin.buffer.read().decode('utf-8', 'surrogateescape')
msg = Parser(policy=policy).parsestr(raw)
defects = []
def heads(m):
    out = {}
    for k, v in m.items():
        out.setdefault(k.lower(), []).append(str(v))
    return out
for part in msg.walk():
    defects += [type(d).__name__ + ': ' + str(d) for d in part.defects]
res = {'defects': defects, 'headers': heads(msg), 'contentType': msg.get_content_type(),
       'params': {k.lower(): v for k, v in (msg.get_params() or [])[1:]}, 'parts': [],
       'perMessage': {}, 'recipients': [], 'statusBlocks': 0, 'original': None}
parts = msg.get_payload() if msg.is_multipart() else []
def fields(m):
    return dict((k.lower(), str(v)) for k, v in m.items())
def split_blocks(text):
    out = []
    for chunk in text.replace('\r\n', '\n').split('\n\n'):
        if chunk.strip():
            out.append(fields(HeaderParser(policy=policy).parsestr(chunk + '\n')))
    return out
def blocks_of(part):
    payload = part.get_payload()
    if part.get_content_type() == 'message/delivery-status':
        # email itself parses this type into one Message per block.
        return [fields(b) for b in payload]
    # message/global-delivery-status is unknown to email, which reads it as
    # an embedded message: its header is the per-message block, its body the rest.
    inner = payload[0] if isinstance(payload, list) else payload
    if isinstance(inner, str):
        return split_blocks(inner)
    return [fields(inner)] + split_blocks(inner.get_payload())
def embedded(part):
    inner = part.get_payload()
    inner = inner[0] if isinstance(inner, list) else inner
    if isinstance(inner, str):
        inner = Parser(policy=policy).parsestr(inner)
    return inner
for i, part in enumerate(parts):
    p = {'type': part.get_content_type(), 'headers': heads(part)}
    t = part.get_content_type()
    if t == 'text/plain':
        # The report is parsed from text and uses no transfer encoding but 7bit/8bit: the payload is the text.
        assert part.get('Content-Transfer-Encoding', '7bit') in ('7bit', '8bit')
        p['text'] = part.get_payload()
    elif t in ('message/delivery-status', 'message/global-delivery-status'):
        blocks = blocks_of(part)
        res['statusBlocks'] = len(blocks)
        res['perMessage'] = blocks[0] if blocks else {}
        res['recipients'] = blocks[1:]
    elif t == 'text/rfc822-headers':
        h = HeaderParser(policy=policy).parsestr(part.get_payload())
        res['original'] = {'headers': [[k, str(v)] for k, v in h.items()], 'body': None}
    elif t in ('message/global-headers', 'message/rfc822', 'message/global'):
        inner = embedded(part)
        body = inner.get_payload() if not inner.is_multipart() else None
        res['original'] = {'headers': [[k, str(v)] for k, v in inner.items()], 'body': body if t != 'message/global-headers' else None}
    res['parts'].append(p)
json.dump(res, sys.stdout)
`;

/** python - parse a report with Python's email package. */
export function python(raw: Buffer, policy: 'default' | 'compat32' = 'default'): Promise<Parsed> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', PY, policy], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`python3 exited ${code}: ${Buffer.concat(err).toString()}`));
      try {
        resolve(JSON.parse(Buffer.concat(out).toString()) as Parsed);
      } catch (e) {
        reject(e);
      }
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(raw);
  });
}
