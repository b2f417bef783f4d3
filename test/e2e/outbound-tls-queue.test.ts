// outbound-tls-queue: checked TLS as an operator sees it. A real Petrel
// (`petrel start`, `[delivery] tls = "verify"`, a test CA in tls_ca_file, MX
// records from the loopback DNS server) delivers to the MX whose certificate
// verifies and defers (4.7.5, a counted attempt, not failed) the one whose
// certificate names another host; each attempt's event carries `tls` (and
// `tls_failure`), and `petrel queue show` says which policy applied and why
// it failed. Also: check-config names a tls_ca_file that cannot be used.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnPetrel, tempDir, cleanup, freePort, startChild, baseConfig, waitFor, readEvents } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPeer } from '../helpers/test-peer.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { makeCa } from '../helpers/test-ca.js';
import { ConfigError, parseConfigText } from '../../src/config/load.js';

const ca = makeCa();
after(() => ca.dispose());

async function cli(args: string[], cwd: string): Promise<{ code: number | string; out: string; err: string }> {
  const c = spawnPetrel(args, cwd);
  const code = await c.exited;
  return { code, out: c.stdout(), err: c.stderr() };
}

test('verify end to end: the good MX gets its mail, the wrong-name one is deferred 4.7.5 with the failure in its event and in queue show', async (t) => {
  // Every process and socket is stopped by t.after, whatever fails (a failed start must not keep the file running).
  const good = await startPeer({ host: '127.0.0.3', starttls: true, tlsCert: ca.issue(['mx.good.test']) });
  t.after(() => good.close());
  const bad = await startPeer({ host: '127.0.0.2', port: good.port, starttls: true, tlsCert: ca.issue(['mail.elsewhere.test']) });
  t.after(() => bad.close());
  const dns = await startDnsServer({
    'good.test': { MX: [[10, 'mx.good.test']] },
    'mx.good.test': { A: ['127.0.0.3'] },
    'bad.test': { MX: [[10, 'mx.bad.test']] },
    'mx.bad.test': { A: ['127.0.0.2'] },
  });
  t.after(() => dns.close());
  const dir = tempDir();
  const adminPort = await freePort();
  let smtpPort = await freePort();
  while (smtpPort === adminPort) smtpPort = await freePort();
  const cfg = join(dir, 'petrel.toml');
  const text = baseConfig(
    dir,
    `[queue]\nretry_intervals = ["1h"]\n[delivery]\ntls = "verify"\ntls_ca_file = "${ca.caFile}"\ndns_servers = ["${dns.address}"]\nsmtp_port = ${good.port}\n[admin]\nlisten = "127.0.0.1:${adminPort}"\n`,
    smtpPort,
  );
  const child = await startChild(dir, text).catch((e: unknown) => {
    cleanup(dir);
    throw e;
  });
  // After hooks run in order: the server stops before its directory goes.
  t.after(async () => {
    child.kill('SIGTERM');
    await child.exited;
  });
  t.after(() => cleanup(dir));
  {
    const t = await SmtpTalk.open(smtpPort);
    await t.read();
    await t.cmd('EHLO c.test');
    assert.equal((await t.send('alice@example.com', ['a@good.test', 'b@bad.test'], 'Subject: tls\r\nMessage-ID: <tls1@c.test>\r\n\r\nhi\r\n')).code, 250);
    await t.cmd('QUIT');
    t.close();
    const log = join(dir, 'var', 'log', 'events.jsonl');
    const delivered = await waitFor(() => readEvents(log).find((e) => e.event === 'delivered' && e.recipient === 'a@good.test'), 20_000, 'a@good.test delivered');
    const deferred = await waitFor(() => readEvents(log).find((e) => e.event === 'deferred' && e.recipient === 'b@bad.test'), 20_000, 'b@bad.test deferred');
    assert.equal(delivered.tls?.verified, true);
    assert.equal(delivered.tls?.policy, 'verify');
    assert.equal(delivered.tls?.policy_domain, 'good.test');
    assert.match(delivered.tls?.version ?? '', /^TLSv1\.[23]$/);
    assert.equal(deferred.status, '4.7.5');
    assert.equal(deferred.attempt, 1);
    assert.equal(deferred.tls_failure?.type, 'certificate-host-mismatch');
    assert.equal(deferred.tls_failure?.policy, 'verify');
    assert.equal(deferred.tls?.verified, false);
    assert.equal(bad.transactions.length, 0, 'nothing sent to the host that failed the check');
    assert.equal(good.transactions.length, 1);
    assert.ok(!readEvents(log).some((e) => e.event === 'failed'), 'a TLS policy failure never fails a recipient');

    const show = await cli(['queue', 'show', deferred.queue_id, '--config', cfg], dir);
    assert.equal(show.code, 0, show.err);
    assert.match(show.out, /^TLS of the last attempt:$/m);
    assert.match(show.out, /^\s+b@bad\.test: policy verify \(bad\.test\): TLSv1\.[23] \S+, not verified; failed: certificate-host-mismatch: .*mx\.bad\.test$/m);
    assert.match(show.out, /^\s+a@good\.test: policy verify \(good\.test\): TLSv1\.[23] \S+, verified$/m);
    const json = JSON.parse((await cli(['queue', 'show', deferred.queue_id, '--json', '--config', cfg], dir)).out);
    const b = json.recipients.find((r: { address: string }) => r.address === 'b@bad.test');
    assert.equal(b.last_tls.tls_failure.type, 'certificate-host-mismatch');
    assert.equal(b.state, 'deferred');
  }
});

test('config: tls modes globally and per route (a route without tls takes the global one); a tls_ca_file that cannot be used is an error naming the key', () => {
  const dir = tempDir();
  try {
    const c = parseConfigText(`[delivery]\ntls = "verify"\ntls_ca_file = "${ca.caFile}"\n[[routes]]\ndomain = "a.test"\nvia = "smtp:127.0.0.1:25"\n[[routes]]\ndomain = "b.test"\nvia = "smtp:127.0.0.1:25"\ntls = "opportunistic"\n`, 'x.toml', dir);
    assert.equal(c.delivery.tls, 'verify');
    assert.deepEqual(c.routes.map((r) => r.tls), ['verify', 'opportunistic']);
    assert.equal(parseConfigText('', 'x.toml', dir).delivery.tls, 'opportunistic');
    writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n');
    writeFileSync(join(dir, 'broken.pem'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    for (const [file, why] of [['missing.pem', /cannot read .*ENOENT/], ['junk.pem', /holds no PEM certificate/], ['broken.pem', /cannot be parsed/]] as const) {
      assert.throws(
        () => parseConfigText(`[delivery]\ntls_ca_file = "${file}"\n`, 'x.toml', dir),
        (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.key === 'delivery.tls_ca_file' && p.line === 2 && why.test(p.message)),
        file,
      );
    }
    assert.throws(
      () => parseConfigText(`[delivery]\ntls = "always"\n`, 'x.toml', dir),
      (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.key === 'delivery.tls' && /"opportunistic", "verify", "required"/.test(p.message)),
    );
  } finally {
    cleanup(dir);
  }
});
