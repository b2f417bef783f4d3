// dkim-reload: [[dkim]] keys are taken on reload (SIGHUP / petrel reload,
// issue 14): a running Petrel with no key relays unsigned; after a reload
// that adds a key the next message is signed with it (and the signature
// verifies); a reload whose key file cannot be used is refused whole and
// the key in force keeps signing; a reload that removes the key stops
// signing. The signing threads of the old keys stop once idle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dkimVerify as verify } from 'mailauth';
import { parseConfigText } from '../../src/config/load.js';
import { txtRecord } from '../../src/dkim/keys.js';
import { ReloadRefused } from '../../src/petrel.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPeer } from '../helpers/test-peer.js';
import { baseConfig, cleanup, startPetrel, waitFor } from '../helpers/petrel-harness.js';

test('[[dkim]] keys change on reload; a bad key file is refused and the old key keeps signing', async (t) => {
  const peer = await startPeer({});
  const p = await startPetrel(`[smtp]\nlisten = ["127.0.0.1:0"]\n[[routes]]\ndomain = "example.net"\nvia = "smtp:127.0.0.1:${peer.port}"\n`);
  t.after(async () => {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  });
  const key = join(p.dir, 'ed.pem');
  writeFileSync(key, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  writeFileSync(join(p.dir, 'bad.pem'), 'not a key\n', { mode: 0o600 });
  const routes = `[smtp]\nlisten = ["127.0.0.1:0"]\n[[routes]]\ndomain = "example.net"\nvia = "smtp:127.0.0.1:${peer.port}"\n`;
  const withKey = (file: string): string => `${routes}[[dkim]]\ndomain = "example.com"\nselector = "s1"\nkey_file = "${file}"\n`;
  const config = (extra: string) => parseConfigText(baseConfig(p.dir, extra), join(p.dir, 'petrel.toml'), p.dir);

  let n = 0;
  async function relay(): Promise<string> {
    const id = `<reload-${++n}@example.com>`;
    const c = await SmtpTalk.open(p.port);
    await c.read();
    await c.cmd('EHLO inside.test');
    const r = await c.send('alice@example.com', ['bob@example.net'], `From: alice@example.com\r\nTo: bob@example.net\r\nSubject: reload ${n}\r\nMessage-ID: ${id}\r\n\r\nbody ${n}\r\n`);
    c.close();
    assert.equal(r.code, 250);
    const tx = await waitFor(() => peer.transactions.find((x) => x.completed && x.body.includes(id)), 10_000, `relay of ${id}`);
    return tx.body.toString('latin1');
  }
  const resolver = async (name: string, type: string): Promise<string[][]> => {
    if (type === 'TXT' && name === 's1._domainkey.example.com') return [[txtRecord(createPrivateKey(readFileSync(key, 'utf8')))]];
    throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
  };

  assert.ok(!/^DKIM-Signature:/im.test(await relay()), 'no key yet: not signed');

  await p.petrel.reconfigure(config(withKey(key)));
  const signed = await relay();
  assert.match(signed, /^DKIM-Signature: .*d=example\.com; s=s1/im);
  const v = (await verify(Buffer.from(signed, 'latin1'), { resolver })) as { results: { status: { result: string } }[] };
  assert.deepEqual(v.results.map((r) => r.status.result), ['pass']);

  // A bad key file is caught when the file is checked (what petrel reload prints)...
  assert.throws(() => config(withKey(join(p.dir, 'bad.pem'))), /is not a PEM private key/);
  // ...and when it goes bad between that check and the reload, the reload is refused whole.
  const k2 = join(p.dir, 'k2.pem');
  writeFileSync(k2, readFileSync(key));
  const next = config(withKey(k2).replace('selector = "s1"', 'selector = "s2"'));
  writeFileSync(k2, 'gone bad\n');
  await assert.rejects(p.petrel.reconfigure(next), ReloadRefused);
  assert.match(await relay(), /^DKIM-Signature: .*s=s1/im, 'the refused reload changed nothing');

  await p.petrel.reconfigure(config(routes));
  assert.ok(!/^DKIM-Signature:/im.test(await relay()), 'the key removed: not signed');
});
