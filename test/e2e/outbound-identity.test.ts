// The sending identity (issue 18): outbound connections bind [delivery]
// source_ipv4 / source_ipv6 and say the HELO name of that source; a source
// address this machine lacks stops start and is a check-config problem; the
// PTR / forward-confirmed / HELO checks warn at start and in
// `check-config --dns`; address_family filters and address_preference orders
// the addresses tried; --dns also checks the [[dkim]] records. Peers on 127.0.0.x (and ::1 when this machine has it),
// the loopback DNS server for MX and PTR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { baseConfig, cleanup, freePort, spawnPetrel, startChild, startPetrel, tempDir, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';
import { reverseName, startDnsServer, type DnsEntry } from '../helpers/dns-server.js';
import { runCli } from '../helpers/run-cli.js';
import { txtRecord } from '../../src/dkim/keys.js';

async function send(p: InProcess, rcpts: string[], from = 'alice@home.test'): Promise<void> {
  const t = await SmtpTalk.open(p.port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send(from, rcpts, 'Subject: identity\r\n\r\nbody\r\n');
  assert.equal(r.code, 250);
  t.close();
}

/** seenBy - for each delivered recipient: the client address and HELO name the peer saw on its connection. */
function seenBy(peer: TestPeer): Record<string, [string, string]> {
  const out: Record<string, [string, string]> = {};
  for (const tx of peer.transactions.filter((x) => x.completed)) {
    const conn = peer.connections[tx.connection - 1]!;
    for (const r of tx.accepted) out[r] = [conn.remoteAddress, conn.helo];
  }
  return out;
}

/** Forward-confirmed PTRs for 127.0.0.2 (mail2.test) and 127.0.0.3 (mail3.test). */
const GOOD_PTR: Record<string, DnsEntry> = {
  [reverseName('127.0.0.2')]: { PTR: ['mail2.test'] },
  'mail2.test': { A: ['127.0.0.2'] },
  [reverseName('127.0.0.3')]: { PTR: ['mail3.test'] },
  'mail3.test': { A: ['127.0.0.3'] },
};

test('source binding: Petrels bound to 127.0.0.2 and 127.0.0.3 reach the peer from those addresses, each with its HELO name', async () => {
  const peer = await startPeer();
  const dns = await startDnsServer({ ...GOOD_PTR });
  const conf = (n: number): string =>
    `[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\ndns_servers = ["${dns.address}"]\nsource_ipv4 = "127.0.0.${n}"\nhelo_name = "mail${n}.test"\n[local]\ndomains = ["home.test"]\n`;
  const a = await startPetrel(conf(2));
  const b = await startPetrel(conf(3));
  try {
    await send(a, ['x@far.example']);
    await send(b, ['y@far.example']);
    await waitFor(() => peer.delivered().length === 2, 10_000, 'both delivered');
    assert.deepEqual(seenBy(peer), { 'x@far.example': ['127.0.0.2', 'mail2.test'], 'y@far.example': ['127.0.0.3', 'mail3.test'] });
    // The start-up DNS check found both identities in order (PTR, confirmed, = HELO).
    for (const [p, n] of [[a, 2], [b, 3]] as const) {
      const reports = await p.petrel.identityCheck!.done;
      assert.deepEqual(reports.map((r) => [r.identity.address, r.confirmed, r.warnings]), [[`127.0.0.${n}`, [`mail${n}.test`], []]]);
    }
  } finally {
    await a.stop();
    await b.stop();
    await peer.close();
    await dns.close();
    cleanup(a.dir);
    cleanup(b.dir);
  }
});

test('a source address this machine does not have: start refuses (exit 78), check-config names the key and line (exit 1)', async () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'petrel.toml');
    writeFileSync(file, baseConfig(dir, '[delivery]\nsource_ipv4 = "192.0.2.1"\n'));
    const check = await runCli(['check-config', file]);
    assert.equal(check.code, 1);
    assert.match(check.stderr, /petrel\.toml:\d+: delivery\.source_ipv4: 192\.0\.2\.1 is not an address of this machine \(EADDRNOTAVAIL\)/);
    const start = spawnPetrel(['start', '--config', file], dir);
    const code = await start.exited;
    assert.equal(code, 78, start.stderr());
    assert.match(start.stderr(), /cannot start: delivery\.source_ipv4: 192\.0\.2\.1 is not an address of this machine/);
    await assert.rejects(startPetrel('[delivery]\nsource_ipv4 = "192.0.2.1"\n', {}, dir), /delivery\.source_ipv4: 192\.0\.2\.1 is not an address/);
  } finally {
    cleanup(dir);
  }
});

test('PTR mismatch: check-config --dns prints WARNING lines (exit 2), petrel start logs the warning; a good identity is OK (exit 0)', async () => {
  const dns = await startDnsServer({
    ...GOOD_PTR,
    // 127.0.0.4 points at a name that resolves elsewhere; 127.0.0.5 has no PTR at all.
    [reverseName('127.0.0.4')]: { PTR: ['other.test'] },
    'other.test': { A: ['127.0.0.9'] },
  });
  const dir = tempDir();
  let child: Awaited<ReturnType<typeof startChild>> | null = null;
  try {
    const write = (name: string, delivery: string): string => {
      const file = join(dir, name);
      writeFileSync(file, baseConfig(dir, `[delivery]\ndns_servers = ["${dns.address}"]\n${delivery}`));
      return file;
    };
    const good = await runCli(['check-config', write('good.toml', 'source_ipv4 = "127.0.0.3"\nhelo_name = "mail3.test"\naddress_family = "ipv4"\n'), '--dns']);
    assert.equal(good.code, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /source_ipv4 127\.0\.0\.3: PTR mail3\.test, forward-confirmed, is the HELO name mail3\.test: OK/);
    assert.doesNotMatch(good.stdout, /WARNING/);

    const badFile = write('bad.toml', 'source_ipv4 = "127.0.0.4"\nhelo_name = "mail4.test"\n');
    const bad = await runCli(['check-config', badFile, '--dns']);
    assert.equal(bad.code, 2, bad.stdout + bad.stderr);
    assert.match(bad.stdout, /^WARNING: source_ipv4 127\.0\.0\.4: the PTR name\(s\) of 127\.0\.0\.4 \(other\.test\) do not resolve back to it \(A\)/m);
    assert.match(bad.stdout, /^WARNING: source_ipv4 127\.0\.0\.4: the HELO name mail4\.test sent from 127\.0\.0\.4 is not its PTR name \(other\.test\)/m);
    // Without --dns the same file is simply valid: DNS is not asked.
    assert.equal((await runCli(['check-config', badFile])).code, 0);

    const none = await runCli(['check-config', write('nopt.toml', 'source_ipv4 = "127.0.0.5"\n'), '--dns']);
    assert.equal(none.code, 2);
    assert.match(none.stdout, /^WARNING: source_ipv4 127\.0\.0\.5: 127\.0\.0\.5 has no PTR record \(ENOTFOUND\)/m);

    // Nothing bound: the address the system would use is named (checked only when public: this machine decides, so the
    // exit code follows what was found).
    const unbound = await runCli(['check-config', write('unbound.toml', ''), '--dns']);
    assert.equal(unbound.code, /^WARNING/m.test(unbound.stdout) ? 2 : 0, unbound.stdout);
    assert.match(unbound.stdout, /IPv4(: no source_ipv4 configured, nothing is bound| \S+ \(chosen by the system)/);
    assert.match(unbound.stdout, /IPv6(: no source_ipv6 configured, nothing is bound| \S+ \(chosen by the system)/);
    const only4 = await runCli(['check-config', write('only4.toml', 'address_family = "ipv4"\n'), '--dns']);
    assert.match(only4.stdout, /outbound IPv4 only; IPv4 from \(system chooses\) helo petrel\.test\n/);
    assert.doesNotMatch(only4.stdout, /IPv6/);

    child = await startChild(dir, baseConfig(dir, `[delivery]\ndns_servers = ["${dns.address}"]\nsource_ipv4 = "127.0.0.4"\nhelo_name = "mail4.test"\n`));
    const c = child;
    await waitFor(() => /HELO name mail4\.test sent from 127\.0\.0\.4 is not its PTR name/.test(c.stderr()), 15_000, 'the start-up warning');
    assert.match(c.stderr(), /^petrel: warning: sending identity: the PTR name\(s\) of 127\.0\.0\.4 \(other\.test\) do not resolve back to it/m);
    assert.match(c.stderr(), /"level":40.*sending identity: the HELO name mail4\.test/); // the warn-level trace line
  } finally {
    if (child) {
      child.kill('SIGTERM');
      await child.exited;
    }
    await dns.close();
    cleanup(dir);
  }
});

/** ipv6Loopback - whether this machine can listen on ::1. */
function ipv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(0, '::1', () => s.close(() => resolve(true)));
  });
}

/** dualPeers - one peer on 127.0.0.1 and one on ::1, on the same port (smtp_port is one port for every host). */
async function dualPeers(): Promise<{ v4: TestPeer; v6: TestPeer }> {
  for (let i = 0; ; i++) {
    const v4 = await startPeer();
    try {
      return { v4, v6: await startPeer({ host: '::1', port: v4.port }) };
    } catch (e) {
      await v4.close();
      if (i >= 20) throw e;
    }
  }
}

test('address_family and address_preference over 127.0.0.1 and ::1: filtered, ordered, and a host with no usable family is deferred, not failed', async (t) => {
  if (!(await ipv6Loopback())) return t.skip('no IPv6 loopback on this machine');
  const { v4, v6 } = await dualPeers();
  const dns = await startDnsServer({
    'dual.example': { MX: [[10, 'mx.dual.example']] },
    'mx.dual.example': { A: ['127.0.0.1'], AAAA: ['::1'] },
    'v4only.example': { MX: [[10, 'mx.v4only.example']] },
    'mx.v4only.example': { A: ['127.0.0.1'] },
    // ::1's PTR under ip6.arpa, forward-confirmed by AAAA: the IPv6 identity checks out.
    [reverseName('::1')]: { PTR: ['mail6.test'] },
    'mail6.test': { AAAA: ['::1'] },
  });
  const conf = (extra: string): string =>
    `[delivery]\nsmtp_port = ${v4.port}\ndns_servers = ["${dns.address}"]\nhelo_name = "mail4.test"\nhelo_name_ipv6 = "mail6.test"\n${extra}[queue]\nretry_intervals = ["1h"]\n[local]\ndomains = ["home.test"]\n`;
  const only6 = await startPetrel(conf('address_family = "ipv6"\nsource_ipv6 = "::1"\n'));
  const first4 = await startPetrel(conf('address_preference = "ipv4"\n'));
  const first6 = await startPetrel(conf('address_preference = "ipv6"\n'));
  try {
    await send(only6, ['a@dual.example', 'b@v4only.example']);
    await send(first4, ['c@dual.example']);
    await send(first6, ['d@dual.example']);
    await waitFor(() => v4.delivered().length + v6.delivered().length === 3, 10_000, 'three delivered');
    assert.deepEqual(seenBy(v6), { 'a@dual.example': ['::1', 'mail6.test'], 'd@dual.example': ['::1', 'mail6.test'] });
    assert.deepEqual(seenBy(v4), { 'c@dual.example': ['127.0.0.1', 'mail4.test'] });
    const reports = await only6.petrel.identityCheck!.done;
    assert.deepEqual(reports.map((r) => [r.identity.address, r.identity.heloName, r.confirmed, r.warnings]), [['::1', 'mail6.test', ['mail6.test'], []]]);
    const deferred = await waitFor(() => only6.events().find((e) => e.recipient === 'b@v4only.example' && e.event !== 'received'), 10_000, 'the v4-only outcome');
    assert.equal(deferred.event, 'deferred');
    assert.equal(deferred.attempt, 1);
    assert.match(JSON.stringify(deferred), /4\.4\.3/);
    assert.match(JSON.stringify(deferred), /has no IPv6 address \(\[delivery\] address_family = \\"ipv6\\"; it has 127\.0\.0\.1\)/);
  } finally {
    for (const p of [only6, first4, first6]) {
      await p.stop();
      cleanup(p.dir);
    }
    await v4.close();
    await v6.close();
    await dns.close();
  }
});

test('check-config --dns also compares each [[dkim]] key with its published record (as petrel dkim check): a mismatch is a WARNING, exit 2', async () => {
  const dns = await startDnsServer({ ...GOOD_PTR });
  const dir = tempDir();
  try {
    const key = generateKeyPairSync('ed25519').privateKey;
    const keyFile = join(dir, 'example.com.e1.pem');
    writeFileSync(keyFile, key.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    const file = join(dir, 'petrel.toml');
    writeFileSync(file, baseConfig(dir, `[delivery]\ndns_servers = ["${dns.address}"]\nsource_ipv4 = "127.0.0.2"\nhelo_name = "mail2.test"\naddress_family = "ipv4"\n[[dkim]]\ndomain = "example.com"\nselector = "e1"\nkey_file = "${keyFile}"\n`));
    dns.table['e1._domainkey.example.com'] = { TXT: [txtRecord(key)] };
    const ok = await runCli(['check-config', file, '--dns']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /^ {2}e1\._domainkey\.example\.com ed25519-sha256 MATCH/m);
    dns.table['e1._domainkey.example.com'] = { TXT: [txtRecord(generateKeyPairSync('ed25519').privateKey)] };
    const bad = await runCli(['check-config', file, '--dns']);
    assert.equal(bad.code, 2, bad.stdout + bad.stderr);
    assert.match(bad.stdout, /^WARNING: dkim e1\._domainkey\.example\.com ed25519-sha256 MISMATCH: the published key \(p=\) is not the public half of the key file/m);
    assert.match(bad.stdout, /source_ipv4 127\.0\.0\.2: .*: OK/);
  } finally {
    await dns.close();
    cleanup(dir);
  }
});

test('a connection that fails from a bound source says which source: the deferred event names it', async () => {
  const port = await freePort();
  const dns = await startDnsServer({ ...GOOD_PTR });
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${port}"\ndns_servers = ["${dns.address}"]\nsource_ipv4 = "127.0.0.2"\nhelo_name = "mail2.test"\n[queue]\nretry_intervals = ["1h"]\n[local]\ndomains = ["home.test"]\n`);
  try {
    await send(p, ['z@far.example']);
    const ev = await waitFor(() => p.events().find((e) => e.event === 'deferred'), 10_000, 'the deferred attempt');
    assert.match(JSON.stringify(ev), /connect to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+ from 127\.0\.0\.2: Connection refused/);
  } finally {
    await p.stop();
    await dns.close();
    cleanup(p.dir);
  }
});
