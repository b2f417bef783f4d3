// The `petrel` command as a user meets it: --help, check-config (every error
// with key and line, exit 1), start with no configuration at all in an empty
// directory (the `npm start` path), and a graceful SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { spawnPetrel, tempDir, cleanup, waitFor, freePort, startChild, baseConfig } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';

test('petrel --help lists the commands; unknown commands exit 64', async () => {
  const help = spawnPetrel(['--help']);
  assert.equal(await help.exited, 0);
  assert.match(help.stdout(), /Usage: petrel <command>/);
  assert.match(help.stdout(), /start +run the server/);
  assert.match(help.stdout(), /check-config +check a configuration file/);
  const startHelp = spawnPetrel(['start', '--help']);
  assert.equal(await startHelp.exited, 0);
  assert.match(startHelp.stdout(), /SIGTERM/);
  const bad = spawnPetrel(['frobnicate']);
  assert.equal(await bad.exited, 64);
  assert.match(bad.stderr(), /unknown command "frobnicate"/);
});

test('check-config prints every error with key and line and exits 1; a good file exits 0', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'bad.toml'), '[smtp]\nmax_recipients = 0\nlisten = "127.0.0.1:25"\n[queue]\nmax_lifetime = "forever"\n');
    const bad = spawnPetrel(['check-config', join(dir, 'bad.toml')]);
    assert.equal(await bad.exited, 1);
    const lines = bad.stderr().trim().split('\n');
    assert.match(lines[0]!, /bad\.toml:2: smtp\.max_recipients: must be an integer from 1/);
    assert.match(lines[1]!, /bad\.toml:3: smtp\.listen: must be an array/);
    assert.match(lines[2]!, /bad\.toml:5: queue\.max_lifetime: must be a duration/);
    assert.match(lines[3]!, /3 problem\(s\)/);
    writeFileSync(join(dir, 'good.toml'), 'hostname = "mx.example.test"\n[smtp]\nlisten = ["127.0.0.1:2525"]\n');
    const good = spawnPetrel(['check-config', '--config', join(dir, 'good.toml')]);
    assert.equal(await good.exited, 0);
    assert.match(good.stdout(), /good\.toml: OK/);
    // start refuses a bad file before anything starts.
    const start = spawnPetrel(['start', '--config', join(dir, 'bad.toml')], dir);
    assert.equal(await start.exited, 78);
    assert.match(start.stderr(), /smtp\.max_recipients/);
    assert.ok(!existsSync(join(dir, 'var')), 'nothing created');
  } finally {
    cleanup(dir);
  }
});

test('start with no configuration: defaults in the working directory, mail to localhost lands in ./var/mail, SIGTERM stops it', async () => {
  const dir = tempDir();
  // The default port 2525 may be taken on a shared machine; the only thing changed is the port.
  const port = await freePort();
  const child = await startChild(dir, baseConfig(dir, '', port).replace(/data_dir = .*\n/, '').replace(/hostname = .*\n/, ''));
  try {
    assert.match(child.stdout(), new RegExp(`listening smtp 127\\.0\\.0\\.1:${port}`));
    // [server] workers defaults to one per core (CONTRACT): a one-core machine runs one process.
    const cores = Math.min(255, availableParallelism());
    if (cores > 1) assert.match(child.stdout(), new RegExp(`, ${cores} workers \\(pids`));
    else assert.doesNotMatch(child.stdout(), / workers \(pids/);
    const t = await SmtpTalk.open(port);
    await t.read();
    await t.cmd('EHLO c.test');
    const r = await t.send('a@example.com', ['someone@localhost'], 'Subject: default path\r\n\r\nhi\r\n');
    assert.equal(r.code, 250);
    await t.cmd('QUIT');
    t.close();
    const box = join(dir, 'var', 'mail', 'localhost', 'someone', 'new');
    await waitFor(() => existsSync(box) && readdirSync(box).length === 1, 10_000, 'maildir delivery');
    assert.ok(existsSync(join(dir, 'var', 'log', 'events.jsonl')));
    child.kill('SIGTERM');
    assert.equal(await child.exited, 0);
    assert.match(child.stdout(), /SIGTERM received, stopping/);
    assert.match(child.stdout(), /stopped/);
  } finally {
    child.kill('SIGKILL');
    cleanup(dir);
  }
});
