// Reload takes new TLS certificates (issue 16): after reconfigure() the next
// STARTTLS presents the new certificate while a session that negotiated TLS
// before goes on; a key that cannot be read refuses the reload whole.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { baseConfig, cleanup, startPetrel, tempDir } from '../helpers/petrel-harness.js';
import { parseConfigText } from '../../src/config/load.js';
import { ReloadRefused } from '../../src/petrel.js';

function makePair(dir: string, name: string, cn: string): void {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.pem`)], { stdio: 'pipe' });
}

async function tlsSubject(port: number): Promise<{ t: SmtpTalk; cn: string }> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  await t.startTls();
  const socket = (t as unknown as { socket: TLSSocket }).socket;
  return { t, cn: String(socket.getPeerCertificate().subject.CN) };
}

test('reload: the next STARTTLS presents the new certificate; an unreadable key refuses the reload whole', async () => {
  const dir = tempDir();
  makePair(dir, 'one', 'one.test');
  makePair(dir, 'two', 'two.test');
  const extra = (name: string, relay: string): string => `[tls]\ncert = "${join(dir, `${name}.pem`)}"\nkey = "${join(dir, `${name}.key`)}"\n[smtp]\nlisten = ["127.0.0.1:0"]\nrelay_networks = [${relay}]\n`;
  const p = await startPetrel(extra('one', '"127.0.0.0/8"'), {}, dir);
  try {
    const before = await tlsSubject(p.port);
    assert.equal(before.cn, 'one.test');
    // The running listener's port stays (port 0 in both files names the same listener).
    const next = (name: string, relay: string) => parseConfigText(baseConfig(dir, extra(name, relay)), join(dir, 'petrel.toml'), dir);
    assert.deepEqual(await p.petrel.reconfigure(next('two', '"127.0.0.0/8"')), []);
    const after = await tlsSubject(p.port);
    assert.equal(after.cn, 'two.test');
    after.t.close();
    assert.match(replyLine(await before.t.cmd('NOOP')), /^250/, 'the session from before the reload goes on over its TLS');
    before.t.close();

    // An unreadable key: refused, nothing applied (relay_networks would have changed too).
    rmSync(join(dir, 'two.key'));
    await assert.rejects(p.petrel.reconfigure(next('two', '')), (e: Error) => e instanceof ReloadRefused && /TLS: .*two\.key/.test(e.message));
    assert.deepEqual(p.petrel.config.smtp.relay_networks, ['127.0.0.0/8']);
    const again = await tlsSubject(p.port);
    assert.equal(again.cn, 'two.test', 'the certificate in force stays');
    again.t.close();
  } finally {
    await p.stop();
    cleanup(dir);
  }
});
