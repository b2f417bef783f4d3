/*
 * test/helpers/dns-server - a tiny UDP DNS server on 127.0.0.1 answering MX,
 * A, AAAA, TXT and PTR questions from a table, for MX routing tests, the
 * inbound checks (SPF, DKIM, DMARC, block lists) and the sending identity
 * checks (PTR: key the table with reverseName(address)).
 *
 * A name maps to records, or to a behaviour: "NXDOMAIN", "SERVFAIL", or
 * "SILENT" (never answers: the resolver times out). A name in the table with
 * no record of the asked type gets an empty NOERROR answer (NODATA). A name
 * not in the table is NXDOMAIN. A null MX (RFC 7505) is written
 * `MX: [[0, '.']]`. A key "*.suffix" (a wildcard) answers for every name
 * under suffix that has no entry of its own (the closest wildcard wins), so a
 * bench can give 70,000 domains one MX with one line. Encoding is done by hand (RFC 1035 §4): no compression
 * except the one pointer from each answer back to the question's name.
 *
 * DANE (issue 14): an entry may hold TLSA records, and the AD bit of an
 * answer is the entry's `AD`, else the server's `ad` (default false), as a
 * validating resolver would set it. "MALFORMED" answers with the right id
 * and garbage after the header (a broken or hostile resolver).
 */
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';

/** A TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type, association data. */
export interface TlsaData {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

export type DnsEntry =
  | {
      MX?: [number, string][];
      A?: string[];
      AAAA?: string[];
      TXT?: string[];
      PTR?: string[];
      TLSA?: TlsaData[];
      /** AD bit for this name (else the server's `ad`). */
      AD?: boolean;
      /** TTL of every record of the name (seconds); 60 when absent. */
      ttl?: number;
    }
  | 'NXDOMAIN'
  | 'SERVFAIL'
  | 'SILENT'
  | 'MALFORMED';

export interface DnsServer {
  /** "127.0.0.1:PORT", for [delivery] dns_servers. */
  address: string;
  table: Record<string, DnsEntry>;
  queries: { name: string; type: string }[];
  /** AD bit of every answer whose entry does not say (NXDOMAIN included): a validating resolver's "secure". */
  ad: boolean;
  close(): Promise<void>;
}

const TYPES: Record<number, string> = { 1: 'A', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 52: 'TLSA' };

/** reverseName - the PTR name of an address ("127.0.0.2" -> "2.0.0.127.in-addr.arpa", IPv6 -> nibbles under ip6.arpa), a key for the table. */
export function reverseName(address: string): string {
  if (isIP(address) === 4) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  const hex = ipv6Bytes(address).toString('hex');
  return `${hex.split('').reverse().join('.')}.ip6.arpa`;
}

/** encodeName - labels of a domain name ("." alone is the root: one zero octet). */
function encodeName(name: string): Buffer {
  const parts = name.replace(/\.$/, '').split('.').filter(Boolean);
  const out: Buffer[] = [];
  for (const p of parts) {
    const b = Buffer.from(p, 'ascii');
    out.push(Buffer.from([b.length]), b);
  }
  out.push(Buffer.from([0]));
  return Buffer.concat(out);
}

function ipv6Bytes(addr: string): Buffer {
  const [head, tail] = addr.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail !== undefined ? Array(8 - h.length - t.length).fill('0') : [];
  const groups = [...h, ...fill, ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return b;
}

/** answer - one resource record pointing at the question name (offset 12). */
function record(type: number, rdata: Buffer): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(0xc00c, 0);
  h.writeUInt16BE(type, 2);
  h.writeUInt16BE(1, 4);
  h.writeUInt32BE(60, 6);
  h.writeUInt16BE(rdata.length, 10);
  return Buffer.concat([h, rdata]);
}

/** txtData - one TXT record: the text as character-strings of at most 255 octets (RFC 1035 §3.3.14), as DKIM keys need. */
function txtData(text: string): Buffer {
  const b = Buffer.from(text, 'utf8');
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length || i === 0; i += 255) {
    const piece = b.subarray(i, i + 255);
    parts.push(Buffer.from([piece.length]), piece);
  }
  return Buffer.concat(parts);
}

/** wildcard - the entry of the closest "*.suffix" key above `name`, if any. */
function wildcard(table: Record<string, DnsEntry>, name: string): DnsEntry | undefined {
  for (let i = name.indexOf('.'); i >= 0; i = name.indexOf('.', i + 1)) {
    const entry = table[`*${name.slice(i)}`];
    if (entry !== undefined) return entry;
  }
  return undefined;
}

/** startDnsServer - listen on 127.0.0.1:0 and answer from `table` (which tests may change later). */
export async function startDnsServer(table: Record<string, DnsEntry>): Promise<DnsServer> {
  const socket: Socket = createSocket('udp4');
  const server: DnsServer = {
    address: '',
    table,
    queries: [],
    ad: false,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (msg, rinfo) => {
    if (msg.length < 12) return;
    // Question: name labels from offset 12, then type and class.
    let i = 12;
    const labels: string[] = [];
    while (i < msg.length && msg[i] !== 0) {
      const len = msg[i]!;
      labels.push(msg.subarray(i + 1, i + 1 + len).toString('ascii'));
      i += len + 1;
    }
    i++;
    if (i + 4 > msg.length) return;
    const qtype = msg.readUInt16BE(i);
    const qEnd = i + 4;
    const name = labels.join('.').toLowerCase();
    const type = TYPES[qtype] ?? String(qtype);
    server.queries.push({ name, type });
    const entry = server.table[name] ?? wildcard(server.table, name);
    if (entry === 'SILENT') return;
    if (entry === 'MALFORMED') {
      // The id and QR are right; the counts promise records that are not there.
      socket.send(Buffer.concat([msg.subarray(0, 2), Buffer.from([0x81, 0x80, 0, 1, 0, 5, 0, 0, 0, 0, 0xc0])]), rinfo.port, rinfo.address);
      return;
    }

    let rcode = 0;
    const answers: Buffer[] = [];
    if (entry === undefined || entry === 'NXDOMAIN') rcode = 3;
    else if (entry === 'SERVFAIL') rcode = 2;
    else if (type === 'MX') for (const [pref, host] of entry.MX ?? []) answers.push(record(15, Buffer.concat([Buffer.from([pref >> 8, pref & 255]), encodeName(host)])));
    else if (type === 'A') for (const a of entry.A ?? []) answers.push(record(1, Buffer.from(a.split('.').map(Number))));
    else if (type === 'PTR') for (const host of entry.PTR ?? []) answers.push(record(12, encodeName(host)));
    else if (type === 'TXT') for (const t of entry.TXT ?? []) answers.push(record(16, txtData(t)));
    else if (type === 'TLSA') for (const t of entry.TLSA ?? []) answers.push(record(52, Buffer.concat([Buffer.from([t.usage, t.selector, t.matchingType]), t.data])));
    else if (type === 'AAAA') for (const a of entry.AAAA ?? []) if (isIP(a) === 6) answers.push(record(28, ipv6Bytes(a)));
    const ad = typeof entry === 'object' && entry.AD !== undefined ? entry.AD : server.ad;

    // An entry's own TTL: written over each answer's (offset 6 of a record()).
    if (typeof entry === 'object' && entry.ttl !== undefined) for (const a of answers) a.writeUInt32BE(entry.ttl, 6);
    const header = Buffer.alloc(12);
    msg.copy(header, 0, 0, 2);
    const rd = msg[2]! & 0x01;
    header[2] = 0x80 | 0x04 | rd; // QR, AA, RD copied
    header[3] = 0x80 | (ad && rcode !== 2 ? 0x20 : 0) | rcode; // RA, AD (never with SERVFAIL), RCODE
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answers.length, 6);
    socket.send(Buffer.concat([header, msg.subarray(12, qEnd), ...answers]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  server.address = `127.0.0.1:${socket.address().port}`;
  return server;
}
