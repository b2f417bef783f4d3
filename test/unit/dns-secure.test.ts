/*
 * dns-secure - net/dns-secure against scripted resolvers on 127.0.0.1: the
 * query carries EDNS0 with the DO bit, the AD bit is read, replies with the
 * wrong id, the wrong question or from the wrong port are ignored, a
 * truncated UDP reply is asked again over TCP, a silent server gives way to
 * the next one, and RCODEs are returned as answers. The TCP server of the
 * truncation test shares the UDP port number: taken by another process over
 * TCP (tests run side by side), new ports are tried.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { createServer, type Server, type Socket as TcpSocket } from 'node:net';
import dnsPacket from 'dns-packet';
import { parseServer, querySecure, SecureDnsError } from '../../src/net/dns-secure.js';
import { startDnsServer } from '../helpers/dns-server.js';

type Handler = (q: dnsPacket.Packet, reply: (p: Partial<dnsPacket.Packet> & { rcode?: string }, raw?: Buffer) => void, rinfo: RemoteInfo) => void;

/** udpResolver - a UDP socket on 127.0.0.1 that hands each decoded query to `handler`. */
async function udpResolver(handler: Handler): Promise<{ socket: Socket; address: string; port: number; close(): Promise<void> }> {
  const socket = createSocket('udp4');
  socket.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    handler(
      q,
      (p, raw) => socket.send(raw ?? dnsPacket.encode({ type: 'response', id: q.id, questions: q.questions, ...p } as dnsPacket.Packet), rinfo.port, rinfo.address),
      rinfo,
    );
  });
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const port = socket.address().port;
  return { socket, address: `127.0.0.1:${port}`, port, close: () => new Promise<void>((r) => socket.close(() => r())) };
}

const TLSA = { name: '_25._tcp.mx.example', type: 'TLSA' as const, ttl: 60, data: { usage: 3, selector: 1, matchingType: 1, certificate: Buffer.alloc(32, 7) } };

test('the query has RD, EDNS0 and DO, no CD; the answer gives AD and the records', async () => {
  let seen: dnsPacket.Packet | null = null;
  const r = await udpResolver((q, reply) => {
    seen = q;
    reply({ flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHENTIC_DATA, answers: [TLSA] });
  });
  try {
    const a = await querySecure('_25._tcp.mx.example', 'TLSA', { servers: [r.address] });
    assert.equal(a.ad, true);
    assert.equal(a.rcode, 'NOERROR');
    assert.equal(a.answers.length, 1);
    assert.deepEqual((a.answers[0] as { data: unknown }).data, TLSA.data);
    const q = seen as unknown as dnsPacket.Packet;
    assert.ok((q.flags! & dnsPacket.RECURSION_DESIRED) !== 0);
    assert.equal(q.flags! & dnsPacket.CHECKING_DISABLED, 0);
    const opt = (q.additionals ?? []).find((x) => x.type === 'OPT') as { flags?: number; udpPayloadSize?: number } | undefined;
    assert.ok(opt, 'EDNS0 OPT record');
    assert.ok((opt.flags! & dnsPacket.DNSSEC_OK) !== 0, 'DO bit');
  } finally {
    await r.close();
  }
});

test('replies with the wrong id or the wrong question are ignored; the right one that follows is used', async () => {
  const r = await udpResolver((q, reply) => {
    reply({ id: (q.id! + 1) & 0xffff, flags: dnsPacket.AUTHENTIC_DATA, answers: [TLSA] } as never);
    reply({ questions: [{ name: 'evil.example', type: 'TLSA', class: 'IN' }], flags: dnsPacket.AUTHENTIC_DATA, answers: [TLSA] });
    reply({ questions: [{ name: '_25._tcp.mx.example', type: 'A', class: 'IN' }], flags: dnsPacket.AUTHENTIC_DATA });
    reply({}, Buffer.from([0, 1, 2]));
    setTimeout(() => reply({ flags: 0, answers: [] }), 30);
  });
  try {
    const a = await querySecure('_25._TCP.MX.example.', 'TLSA', { servers: [r.address], timeoutMs: 2000 });
    assert.equal(a.ad, false);
    assert.equal(a.answers.length, 0);
  } finally {
    await r.close();
  }
});

test('only wrong replies until the timeout: a timeout (or "malformed" when garbage came)', async () => {
  const wrongId = await udpResolver((q, reply) => reply({ id: (q.id! + 1) & 0xffff } as never));
  const garbage = await udpResolver((_q, reply) => reply({}, Buffer.from('garbage!garbage!')));
  try {
    await assert.rejects(querySecure('x.example', 'TLSA', { servers: [wrongId.address], timeoutMs: 200 }), (e: unknown) => e instanceof SecureDnsError && e.code === 'timeout');
    await assert.rejects(querySecure('x.example', 'TLSA', { servers: [garbage.address], timeoutMs: 200 }), (e: unknown) => e instanceof SecureDnsError && e.code === 'malformed');
  } finally {
    await wrongId.close();
    await garbage.close();
  }
});

test('a reply from another port than the server asked is ignored', async () => {
  const stranger = createSocket('udp4');
  await new Promise<void>((r) => stranger.bind(0, '127.0.0.1', () => r()));
  const r = await udpResolver((q, _reply, rinfo) => {
    const spoof = dnsPacket.encode({ type: 'response', id: q.id, questions: q.questions, flags: dnsPacket.AUTHENTIC_DATA, answers: [TLSA] } as dnsPacket.Packet);
    stranger.send(spoof, rinfo.port, rinfo.address);
  });
  try {
    await assert.rejects(querySecure('_25._tcp.mx.example', 'TLSA', { servers: [r.address], timeoutMs: 200 }), (e: unknown) => e instanceof SecureDnsError && e.code === 'timeout');
  } finally {
    await r.close();
    await new Promise<void>((res) => stranger.close(() => res()));
  }
});

/**
 * sameTcpPort - a TCP server on the UDP resolver's port number. The UDP port
 * came free from the kernel, but the same number over TCP may be another
 * process's (a test running beside this one): then try new ports, a few times.
 */
async function sameTcpPort(handler: Handler, serve: (s: TcpSocket) => void): Promise<{ udp: Awaited<ReturnType<typeof udpResolver>>; tcp: Server }> {
  for (let attempt = 1; ; attempt++) {
    const udp = await udpResolver(handler);
    const tcp: Server = createServer(serve);
    const listening = await new Promise<Error | null>((r) => {
      tcp.once('error', (e) => r(e));
      tcp.listen(udp.port, '127.0.0.1', () => r(null));
    });
    if (!listening) return { udp, tcp };
    await udp.close();
    if (attempt === 5) throw listening;
  }
}

test('a truncated UDP reply is asked again over TCP (same port); the TCP answer is used', async () => {
  const many = Array.from({ length: 40 }, (_, i) => ({ ...TLSA, data: { ...TLSA.data, certificate: Buffer.alloc(64, i) } }));
  const { udp, tcp } = await sameTcpPort(
    (_q, reply) => reply({ flags: dnsPacket.TRUNCATED_RESPONSE | dnsPacket.AUTHENTIC_DATA, answers: [] }),
    (s) => {
      let buf = Buffer.alloc(0);
      s.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2 || buf.length < buf.readUInt16BE(0) + 2) return;
        const q = dnsPacket.decode(buf.subarray(2));
        s.end(dnsPacket.streamEncode({ type: 'response', id: q.id, questions: q.questions, flags: dnsPacket.AUTHENTIC_DATA, answers: many } as dnsPacket.Packet));
      });
      s.on('error', () => {});
    },
  );
  try {
    const a = await querySecure('_25._tcp.mx.example', 'TLSA', { servers: [udp.address] });
    assert.equal(a.ad, true);
    assert.equal(a.answers.length, 40);
  } finally {
    await udp.close();
    await new Promise<void>((r) => tcp.close(() => r()));
  }
});

test('a silent server gives way to the next; an RCODE is an answer, not a reason to move on', async () => {
  const dns = await startDnsServer({ 'a.example': 'SILENT', 'b.example': 'SERVFAIL' });
  const second = await startDnsServer({ 'a.example': { TXT: ['x'], AD: true }, 'b.example': { TXT: ['y'] } });
  try {
    const a = await querySecure('a.example', 'TXT', { servers: [dns.address, second.address], timeoutMs: 200 });
    assert.equal(a.server, second.address);
    assert.equal(a.ad, true);
    const b = await querySecure('b.example', 'TXT', { servers: [dns.address, second.address], timeoutMs: 200 });
    assert.equal(b.rcode, 'SERVFAIL');
    assert.equal(b.server, dns.address);
    assert.equal(second.queries.filter((q) => q.name === 'b.example').length, 0);
  } finally {
    await dns.close();
    await second.close();
  }
});

test('parseServer takes the dns_servers forms and refuses names', () => {
  assert.deepEqual(parseServer('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
  assert.deepEqual(parseServer('127.0.0.1'), { host: '127.0.0.1', port: 53 });
  assert.deepEqual(parseServer('[::1]:53'), { host: '::1', port: 53 });
  assert.equal(parseServer('resolver.example:53'), null);
  assert.equal(parseServer('127.0.0.1:99999'), null);
});
