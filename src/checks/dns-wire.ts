/*
 * checks/dns-wire - one DNS question asked on the wire (RFC 1035), for the
 * answers whose TTL node:dns does not report (TXT, MX): the records and
 * their TTL, so that checks/dns can cache them as long as they may be kept
 * (RFC 1035 §3.2.1; negative answers per RFC 2308 §5, from the SOA).
 *
 * Over UDP with EDNS(0) (RFC 6891, 4096-octet buffer); an answer with the
 * TC bit set is asked again over TCP (RFC 7766). Each server is tried in
 * turn, twice, each try bounded by the timeout.
 *
 * Invariants:
 * - never throws anything but an Error with a node:dns-like `.code`:
 *   ENOTFOUND (NXDOMAIN), ENODATA (no record of the type), ESERVFAIL,
 *   EREFUSED, EBADRESP (a reply that cannot be parsed), ETIMEOUT; the two
 *   first carry the negative TTL (`ttl`, seconds) when the SOA gives one;
 * - a reply is read only within its own length: every offset is checked,
 *   compression pointers may only point backwards and at most 64 times per
 *   name (no loops); a UDP datagram whose id does not match is ignored.
 *
 * Untrusted input: every octet of the replies.
 */
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';

const TYPE_CODES: Record<string, number> = { A: 1, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28 };

export interface WireAnswer {
  /** As node:dns gives them: string[][] for TXT, {exchange, priority}[] for MX. */
  records: unknown[];
  /** Lowest TTL of the records and the CNAMEs leading to them (seconds). */
  ttl: number;
}

/** wireError - an error shaped like node:dns's. */
function wireError(code: string, name: string, ttl?: number): Error {
  return Object.assign(new Error(`${code} ${name}`), { code, hostname: name, ...(ttl === undefined ? {} : { ttl }) });
}

/** encodeQuery - a query for name/type with RD and an EDNS(0) OPT record. */
export function encodeQuery(id: number, name: string, type: number): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter(Boolean);
  const parts: Buffer[] = [];
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(1, 10); // ARCOUNT: the OPT record
  parts.push(header);
  for (const l of labels) {
    const b = Buffer.from(l, 'latin1');
    if (b.length === 0 || b.length > 63) throw wireError('EBADNAME', name);
    parts.push(Buffer.from([b.length]), b);
  }
  const tail = Buffer.alloc(1 + 4 + 11);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3); // IN
  // OPT: root name, type 41, UDP size 4096, no extended flags, no options.
  tail.writeUInt16BE(41, 6);
  tail.writeUInt16BE(4096, 8);
  return Buffer.concat([...parts, tail]);
}

/** readName - a (possibly compressed) name at `off`; where the record goes on after it. */
function readName(msg: Buffer, off: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = off;
  let next = -1;
  for (let jumps = 0; ; ) {
    if (pos >= msg.length) throw new Error('name past the end');
    const len = msg[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= msg.length) throw new Error('pointer past the end');
      const target = ((len & 0x3f) << 8) | msg[pos + 1]!;
      if (next < 0) next = pos + 2;
      if (target >= pos || ++jumps > 64) throw new Error('bad compression pointer');
      pos = target;
      continue;
    }
    if (len & 0xc0) throw new Error('bad label');
    if (pos + 1 + len > msg.length) throw new Error('label past the end');
    labels.push(msg.subarray(pos + 1, pos + 1 + len).toString('latin1'));
    pos += 1 + len;
  }
  return { name: labels.join('.'), next };
}

/** parseReply - the records of `type` in a reply and their TTL; throws the node:dns-like errors. */
export function parseReply(msg: Buffer, id: number, name: string, type: number): WireAnswer {
  if (msg.length < 12 || msg.readUInt16BE(0) !== id || !(msg[2]! & 0x80)) throw wireError('EBADRESP', name);
  const rcode = msg[3]! & 0x0f;
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  const ns = msg.readUInt16BE(8);
  try {
    let off = 12;
    for (let i = 0; i < qd; i++) off = readName(msg, off).next + 4;
    const records: unknown[] = [];
    let ttl = Infinity;
    let negativeTtl: number | undefined;
    for (let i = 0; i < an + ns; i++) {
      off = readName(msg, off).next;
      if (off + 10 > msg.length) throw new Error('record past the end');
      const rtype = msg.readUInt16BE(off);
      const rttl = msg.readUInt32BE(off + 4) & 0x7fffffff;
      const rdlen = msg.readUInt16BE(off + 8);
      const start = off + 10;
      const end = start + rdlen;
      if (end > msg.length) throw new Error('rdata past the end');
      if (i < an && (rtype === type || rtype === TYPE_CODES.CNAME)) {
        ttl = Math.min(ttl, rttl);
        if (rtype === TYPE_CODES.TXT && type === TYPE_CODES.TXT) {
          const chunks: string[] = [];
          for (let p = start; p < end; ) {
            const l = msg[p]!;
            if (p + 1 + l > end) throw new Error('TXT string past its record');
            chunks.push(msg.subarray(p + 1, p + 1 + l).toString('utf8'));
            p += 1 + l;
          }
          records.push(chunks);
        } else if (rtype === TYPE_CODES.MX && type === TYPE_CODES.MX) {
          if (rdlen < 3) throw new Error('short MX');
          records.push({ priority: msg.readUInt16BE(start), exchange: readName(msg, start + 2).name });
        }
      } else if (i >= an && rtype === TYPE_CODES.SOA && rdlen >= 20) {
        // RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM).
        negativeTtl = Math.min(rttl, msg.readUInt32BE(end - 4));
      }
      off = end;
    }
    if (rcode === 3) throw wireError('ENOTFOUND', name, negativeTtl);
    if (rcode === 2) throw wireError('ESERVFAIL', name);
    if (rcode === 5) throw wireError('EREFUSED', name);
    if (rcode !== 0) throw wireError('EBADRESP', name);
    if (!records.length) throw wireError('ENODATA', name, negativeTtl);
    return { records, ttl };
  } catch (e) {
    if ((e as { code?: string }).code) throw e;
    throw wireError('EBADRESP', name);
  }
}

/** splitServer - "ip", "ip:port", "[v6]:port" -> host and port. */
export function splitServer(s: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return { host: v6[1]!, port: Number(v6[2] ?? 53) };
  if (isIP(s) === 6) return { host: s, port: 53 };
  const i = s.lastIndexOf(':');
  return i > 0 ? { host: s.slice(0, i), port: Number(s.slice(i + 1)) } : { host: s, port: 53 };
}

/** udpExchange - one UDP try; resolves with the reply, or null on timeout. */
function udpExchange(server: { host: string; port: number }, query: Buffer, id: number, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const socket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    const timer = setTimeout(() => done(null), timeoutMs);
    const done = (reply: Buffer | null): void => {
      clearTimeout(timer);
      socket.removeAllListeners('message');
      try {
        socket.close();
      } catch {
        // already closed
      }
      resolve(reply);
    };
    socket.on('error', () => done(null));
    socket.on('message', (msg) => {
      // Not ours (a late reply to an earlier try, a spoof): keep waiting.
      if (msg.length >= 2 && msg.readUInt16BE(0) === id) done(msg);
    });
    socket.send(query, server.port, server.host, (e) => e && done(null));
  });
}

/** tcpExchange - the same question over TCP (2-octet length prefix); null on timeout or a broken connection. */
function tcpExchange(server: { host: string; port: number }, query: Buffer, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const socket = connect({ host: server.host, port: server.port });
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => done(null), timeoutMs);
    const done = (reply: Buffer | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(reply);
    };
    socket.on('error', () => done(null));
    socket.on('close', () => done(null));
    socket.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      socket.write(Buffer.concat([len, query]));
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      size += c.length;
      const all = size >= 2 ? Buffer.concat(chunks) : null;
      if (all && all.length >= 2 + all.readUInt16BE(0)) done(all.subarray(2, 2 + all.readUInt16BE(0)));
    });
  });
}

/** wireQuery - ask `servers` (in turn, two tries each) about name/type; the records and their TTL. */
export async function wireQuery(servers: readonly string[], name: string, rrtype: 'TXT' | 'MX', timeoutMs: number): Promise<WireAnswer> {
  const type = TYPE_CODES[rrtype]!;
  for (let attempt = 0; attempt < 2; attempt++) {
    for (const s of servers) {
      const server = splitServer(s);
      const id = randomInt(0, 0x10000);
      const query = encodeQuery(id, name, type);
      let reply = await udpExchange(server, query, id, timeoutMs);
      if (reply && reply.length >= 3 && reply[2]! & 0x02) reply = await tcpExchange(server, query, timeoutMs);
      if (!reply) continue;
      return parseReply(reply, id, name, type);
    }
  }
  throw wireError('ETIMEOUT', name);
}
