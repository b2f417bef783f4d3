// dkim-cli: `petrel dkim keygen` writes a key (0600, never over an existing
// file) and prints its TXT record; `petrel dkim check` compares the published
// record (from the loopback DNS server, via [delivery] dns_servers) with the
// key: match 0, different or missing 1, look-up failure 69; check-config
// refuses a missing key file, a key too weak and an unknown [[dkim]] key, each
// with its key and line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, tempDir } from '../helpers/petrel-harness.js';
import { runCli } from '../helpers/run-cli.js';
import { startDnsServer } from '../helpers/dns-server.js';

test('dkim keygen writes the key (0600) and prints the record; dkim check: match 0, mismatch or missing 1, DNS failure 69', async (t) => {
  const dir = tempDir('petrel-dkim-cli-');
  const dns = await startDnsServer({});
  t.after(async () => {
    await dns.close();
    cleanup(dir);
  });
  const key = join(dir, 'example.com.s1.pem');
  const gen = await runCli(['dkim', 'keygen', '--domain', 'example.com', '--selector', 's1', '--out', key]);
  assert.equal(gen.code, 0, gen.stderr);
  assert.equal(statSync(key).mode & 0o777, 0o600);
  const txt = /IN TXT \(?\s*(.*?)\s*\)?$/m.exec(gen.stdout)![1]!.replace(/"\s*"/g, '').replace(/"/g, '');
  assert.match(txt, /^v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]{300,}$/);
  assert.match(gen.stdout, /s1\._domainkey\.example\.com\. IN TXT/);
  const again = await runCli(['dkim', 'keygen', '--domain', 'example.com', '--selector', 's1', '--out', key]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /exists/);

  const edKey = join(dir, 'ed.pem');
  const ed = await runCli(['dkim', 'keygen', '--domain', 'example.com', '--selector', 'e1', '--ed25519', '--out', edKey]);
  assert.equal(ed.code, 0, ed.stderr);
  const edTxt = /IN TXT "(.*)"$/m.exec(ed.stdout)![1]!;
  assert.match(edTxt, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);

  const conf = join(dir, 'petrel.toml');
  writeFileSync(conf, `data_dir = "${join(dir, 'var')}"\n[delivery]\ndns_servers = ["${dns.address}"]\n[[dkim]]\ndomain = "example.com"\nselector = "s1"\nkey_file = "${key}"\n[[dkim]]\ndomain = "example.com"\nselector = "e1"\nkey_file = "${edKey}"\n`);
  dns.table['s1._domainkey.example.com'] = { TXT: [txt] };
  dns.table['e1._domainkey.example.com'] = { TXT: [edTxt] };
  const ok = await runCli(['dkim', 'check', '--domain', 'example.com', '--config', conf]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.equal(ok.stdout.match(/MATCH/g)?.length, 2, ok.stdout);

  dns.table['e1._domainkey.example.com'] = { TXT: [txt.replace('k=rsa', 'k=ed25519')] };
  const bad = await runCli(['dkim', 'check', '--domain', 'example.com', '--config', conf, '--json']);
  assert.equal(bad.code, 1, bad.stdout + bad.stderr);
  const j = JSON.parse(bad.stdout) as { keys: { selector: string; status: string }[] };
  assert.deepEqual(j.keys.map((k) => [k.selector, k.status]), [['s1', 'match'], ['e1', 'mismatch']]);

  dns.table['e1._domainkey.example.com'] = 'NXDOMAIN';
  const missing = await runCli(['dkim', 'check', '--domain', 'example.com', '--config', conf]);
  assert.equal(missing.code, 1);
  assert.match(missing.stdout, /e1\._domainkey\.example\.com .*MISSING/);

  dns.table['e1._domainkey.example.com'] = 'SERVFAIL';
  const failed = await runCli(['dkim', 'check', '--domain', 'example.com', '--config', conf]);
  assert.equal(failed.code, 69, failed.stdout + failed.stderr);

  const none = await runCli(['dkim', 'check', '--domain', 'other.example', '--config', conf]);
  assert.equal(none.code, 64);
});

test('check-config: a missing key file, an RSA key under 2048 bits, an unknown [[dkim]] key - each named with its line', async (t) => {
  const dir = tempDir('petrel-dkim-conf-');
  t.after(() => cleanup(dir));
  const weak = join(dir, 'weak.pem');
  writeFileSync(weak, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  const notKey = join(dir, 'not-a-key.pem');
  writeFileSync(notKey, 'hello\n');
  const conf = join(dir, 'petrel.toml');
  writeFileSync(
    conf,
    [
      `data_dir = "${join(dir, 'var')}"`,
      '[[dkim]]',
      'domain = "a.example"',
      'selector = "s1"',
      `key_file = "${join(dir, 'missing.pem')}"`,
      '[[dkim]]',
      'domain = "b.example"',
      'selector = "s1"',
      `key_file = "${weak}"`,
      '[[dkim]]',
      'domain = "c.example"',
      'selector = "s1"',
      `key_file = "${notKey}"`,
      'selectr = "x"',
      '',
    ].join('\n'),
  );
  const r = await runCli(['check-config', conf]);
  assert.equal(r.code, 1);
  const text = r.stdout + r.stderr;
  assert.match(text, /:5: dkim\[0\]\.key_file: cannot read key file .*missing\.pem: ENOENT/);
  assert.match(text, /:9: dkim\[1\]\.key_file: .*RSA key of 1024 bits is too weak \(at least 2048\)/);
  assert.match(text, /:13: dkim\[2\]\.key_file: .*not a PEM private key/);
  assert.match(text, /:14: dkim\[2\]\.selectr: unknown key; did you mean selector\?/);
});
