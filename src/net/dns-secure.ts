/*
 * net/dns-secure - a small DNSSEC-aware stub resolver: one question to the
 * operator's validating resolver (`[delivery] dns_servers`), with EDNS0 and
 * the DO bit, returning the answer records, the RCODE and the AD bit. DANE
 * (delivery/tls/dane) needs both TLSA records and the AD bit, and node:dns
 * (c-ares) exposes neither.
 *
 * Packets are encoded and decoded by `dns-packet` (well kept, used by
 * multicast-dns and others; it knows TLSA and OPT). The transport is written
 * here because it is small and has to be strict about what it accepts:
 * UDP first, TCP (RFC 7766, two-octet length prefix) when the UDP answer is
 * truncated (TC).
 *
 * Invariants:
 * - every query has a fresh random 16-bit id; a reply counts only when it
 *   comes from the server's address and port, has QR set, the same id, and
 *   exactly our question (name case-insensitive, type, class IN); anything
 *   else is ignored (an off-path spoof or a stray packet), not an error;
 * - every wait is bounded (timeoutMs per server, default 3 s) and every
 *   answer is bounded (UDP: the datagram; TCP: the 16-bit length, at most
 *   65,535 octets); sockets are closed on every path;
 * - servers are tried in order; only a timeout, a network error or an
 *   undecodable reply moves on to the next. An RCODE (SERVFAIL, NXDOMAIN,
 *   REFUSED...) is an answer and is returned as it is, for the caller to
 *   judge;
 * - this module never throws for what the network sends: it rejects with a
 *   SecureDnsError whose `code` is 'timeout', 'malformed' or 'network'.
 *
 * Untrusted input: every octet of every reply (dns-packet decodes inside a
 * try; the question and id are checked before anything is used). The AD bit
 * is only as trustworthy as the path to the resolver: the operator must run
 * a validating resolver on a trusted path (RFC 7672 §2.1, docs/dane.md).
 *
 * RFCs: 1035 (messages, TCP framing), 6891 (EDNS0), 3225 (DO), 4035 §3.2.3
 * (AD), 7766 (TCP), 6698 (TLSA).
 */
import { randomInt } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect as tcpConnect, isIP, type Socket as TcpSocket } from 'node:net';
import type * as DnsPacket from 'dns-packet';

/** dns-packet, loaded at the first secure query (only DANE asks them): a server without DANE does not carry it. */
let dnsPacket: typeof DnsPacket;
async function loadDnsPacket(): Promise<void> {
  dnsPacket ??= ((await import('dns-packet')) as unknown as { default: typeof DnsPacket }).default;
}

/** One resource record of the answer section, as dns-packet decodes it. */
export type DnsRecord = DnsPacket.Answer;

export interface SecureAnswer {
  /** "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ... (dns-packet's names). */
  rcode: string;
  /** The resolver says it validated every record in the answer (RFC 4035 §3.2.3). */
  ad: boolean;
  answers: DnsRecord[];
  /** "ip:port" of the server that answered. */
  server: string;
}

export type SecureDnsErrorCode = 'timeout' | 'malformed' | 'network';

export class SecureDnsError extends Error {
  constructor(
    readonly code: SecureDnsErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'SecureDnsError';
  }
}

export interface SecureQueryOptions {
  /** "ip:port" or "[ipv6]:port" ([delivery] dns_servers form). */
  servers: string[];
  /** Per server and transport (UDP, then TCP when truncated); default 3000 ms. */
  timeoutMs?: number;
}

/** The UDP payload size we advertise (RFC 6891 §6.2.5; 1232 as the DNS flag day 2020 advises, no fragmentation). */
const UDP_PAYLOAD = 1232;
/** The largest TCP message (RFC 1035 §4.2.2: a 16-bit length). */
const MAX_TCP_MESSAGE = 65_535;

/** parseServer - "1.2.3.4:53" / "[::1]:53" / "1.2.3.4" -> host and port; null when not an IP address. */
export function parseServer(s: string): { host: string; port: number } | null {
  const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(s) ?? /^([^:]+)(?::(\d{1,5}))?$/.exec(s) ?? null;
  const host = m ? m[1]! : s;
  const port = m?.[2] ? Number(m[2]) : 53;
  if (isIP(host) === 0 || port < 1 || port > 65_535) return null;
  return { host, port };
}

/** query - the encoded question: RD, EDNS0 with DO (RFC 3225), no CD (the resolver must validate). */
function encodeQuery(id: number, name: string, type: DnsPacket.RecordType): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    // dns-packet's types ask for the decoded-only fields of OPT too (extendedRcode, ednsVersion, flag_do); its encoder reads these.
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: UDP_PAYLOAD, flags: dnsPacket.DNSSEC_OK, options: [] } as unknown as DnsPacket.Answer],
  });
}

/** sameName - DNS names compare case-insensitively, without the trailing dot. */
export function sameName(a: string, b: string): boolean {
  return a.replace(/\.$/, '').toLowerCase() === b.replace(/\.$/, '').toLowerCase();
}

type Checked = { ok: DnsPacket.Packet } | { ignore: 'malformed' | 'mismatch' };

/** check - decode a reply and keep it only if it answers our question (see the invariants). */
function check(buf: Buffer, id: number, name: string, type: string): Checked {
  let p: DnsPacket.Packet;
  try {
    p = dnsPacket.decode(buf);
  } catch {
    return { ignore: 'malformed' };
  }
  if (p.id !== id || p.type !== 'response') return { ignore: 'mismatch' };
  const q = p.questions ?? [];
  if (q.length !== 1 || !sameName(q[0]!.name, name) || q[0]!.type !== type || (q[0]!.class ?? 'IN') !== 'IN') return { ignore: 'mismatch' };
  return { ok: p };
}

/** toAnswer - the parts callers use. dns-packet's decoded flags carry AD at bit 0x20 of the second header octet. */
function toAnswer(p: DnsPacket.Packet, server: string): SecureAnswer {
  const flags = p.flags ?? 0;
  return {
    rcode: (p as { rcode?: string }).rcode ?? 'NOERROR',
    ad: (flags & dnsPacket.AUTHENTIC_DATA) !== 0,
    answers: p.answers ?? [],
    server,
  };
}

/** truncated - the TC bit. */
function truncated(p: DnsPacket.Packet): boolean {
  return ((p.flags ?? 0) & dnsPacket.TRUNCATED_RESPONSE) !== 0;
}

/** udpExchange - send the query over UDP and wait for a reply that checks out, or the timeout. */
function udpExchange(server: { host: string; port: number }, label: string, query: Buffer, id: number, name: string, type: string, timeoutMs: number): Promise<DnsPacket.Packet> {
  return new Promise((resolve, reject) => {
    const socket: UdpSocket = createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    let malformed = false;
    let done = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try {
        socket.close();
      } catch {
        /* already closed */
      }
      f();
    };
    const timer = setTimeout(
      () => finish(() => reject(new SecureDnsError(malformed ? 'malformed' : 'timeout', `${type} ${name}: ${malformed ? 'only malformed replies' : 'no reply'} from ${label} within ${timeoutMs} ms`))),
      timeoutMs,
    );
    socket.on('error', (e) => finish(() => reject(new SecureDnsError('network', `${type} ${name}: ${label}: ${e.message}`))));
    socket.on('message', (msg, rinfo) => {
      if (rinfo.address !== server.host || rinfo.port !== server.port) return;
      const c = check(msg, id, name, type);
      if ('ok' in c) return finish(() => resolve(c.ok));
      if (c.ignore === 'malformed') malformed = true;
    });
    socket.send(query, server.port, server.host, (e) => {
      if (e) finish(() => reject(new SecureDnsError('network', `${type} ${name}: ${label}: ${e.message}`)));
    });
  });
}

/** tcpExchange - the same question over TCP (after a truncated UDP reply): one length-prefixed message each way. */
function tcpExchange(server: { host: string; port: number }, label: string, query: Buffer, id: number, name: string, type: string, timeoutMs: number): Promise<DnsPacket.Packet> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const socket: TcpSocket = tcpConnect({ host: server.host, port: server.port });
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      f();
    };
    const fail = (code: SecureDnsErrorCode, why: string): void => finish(() => reject(new SecureDnsError(code, `${type} ${name} (TCP): ${label}: ${why}`)));
    const timer = setTimeout(() => fail('timeout', `no reply within ${timeoutMs} ms`), timeoutMs);
    socket.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length, 0);
      socket.write(Buffer.concat([len, query]));
    });
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > MAX_TCP_MESSAGE + 2) return fail('malformed', 'reply longer than a DNS message can be');
      if (buf.length < 2) return;
      const need = buf.readUInt16BE(0);
      if (buf.length < need + 2) return;
      const c = check(buf.subarray(2, need + 2), id, name, type);
      if ('ok' in c) return finish(() => resolve(c.ok));
      // One question per connection: a reply that is not ours ends it.
      fail('malformed', c.ignore === 'malformed' ? 'undecodable reply' : 'reply does not match the question');
    });
    socket.on('error', (e) => fail('network', e.message));
    socket.on('close', () => fail('network', 'connection closed before a whole reply'));
  });
}

/**
 * querySecure - ask `name`/`type` of the servers in turn; see the module
 * comment for what counts as an answer. Rejects with SecureDnsError only
 * when no server gave one.
 */
export async function querySecure(name: string, type: DnsPacket.RecordType, options: SecureQueryOptions): Promise<SecureAnswer> {
  const timeoutMs = options.timeoutMs ?? 3000;
  if (options.servers.length === 0) throw new SecureDnsError('network', 'no DNS servers configured ([delivery] dns_servers): DNSSEC needs a validating resolver');
  await loadDnsPacket();
  let last: SecureDnsError | null = null;
  for (const label of options.servers) {
    const server = parseServer(label);
    if (!server) {
      last = new SecureDnsError('network', `not a DNS server address: ${label}`);
      continue;
    }
    const id = randomInt(0, 65_536);
    const query = encodeQuery(id, name, type);
    try {
      let p = await udpExchange(server, label, query, id, name, type, timeoutMs);
      if (truncated(p)) p = await tcpExchange(server, label, query, id, name, type, timeoutMs);
      return toAnswer(p, label);
    } catch (e) {
      last = e instanceof SecureDnsError ? e : new SecureDnsError('network', String((e as Error)?.message ?? e));
    }
  }
  throw last!;
}
