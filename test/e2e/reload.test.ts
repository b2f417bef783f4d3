// petrel reload (issue 16; CONTRACT.md "Running"): a running server takes a
// new configuration without a restart and without dropping a connection; the
// next message follows the new route and smarthost; a file with errors is
// refused with the check-config report (exit 1) and the old configuration
// stays in force; a listener added answers, one removed stops accepting; a
// change that needs a restart (data_dir) is refused, nothing of it applied.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { baseConfig, cleanup, freePort, portOpen, startChild, tempDir, waitFor } from '../helpers/petrel-harness.js';
import { runCli } from '../helpers/run-cli.js';
import { startPeer } from '../helpers/test-peer.js';

async function send(port: number, to: string, n: number): Promise<string> {
  const t = await SmtpTalk.open(port);
  try {
    await t.read();
    await t.cmd('EHLO client.test');
    return replyLine(await t.send('alice@example.com', [to], `Subject: reload ${n}\r\nMessage-ID: <reload-${n}@example.com>\r\n\r\nbody ${n}\r\n`));
  } finally {
    t.close();
  }
}

test('reload: new route and smarthost for the next message; bad file refused; listener added and removed; data_dir refused', async () => {
  const dir = tempDir();
  const a = await startPeer();
  const b = await startPeer();
  const port = await freePort();
  const extraPort = await freePort();
  const file = join(dir, 'petrel.toml');
  const conf = (opts: { smarthost: number; route: number; listen?: number[]; dataDir?: string; extra?: string; local?: string[] }): string =>
    baseConfig(
      dir,
      `[smtp]\nlisten = [${(opts.listen ?? [port]).map((p) => `"127.0.0.1:${p}"`).join(', ')}]\n` +
        `[queue]\nretry_intervals = ["200ms"]\n[delivery]\nsmarthost = "127.0.0.1:${opts.smarthost}"\n[local]\ndomains = [${(opts.local ?? []).map((d) => `"${d}"`).join(', ')}]\n` +
        `[[routes]]\ndomain = "routed.example"\nvia = "smtp:127.0.0.1:${opts.route}"\n${opts.extra ?? ''}`,
    ).replace(/^data_dir = .*$/m, `data_dir = "${opts.dataDir ?? join(dir, 'var')}"`);
  const child = await startChild(dir, conf({ smarthost: a.port, route: a.port }));
  try {
    assert.ok(existsSync(join(dir, 'var', 'petrel.pid')), 'the server names itself in data_dir/petrel.pid');
    // A client connected before the reload keeps its session through it.
    const held = await SmtpTalk.open(port);
    await held.read();
    assert.match(replyLine(await held.cmd('EHLO held.test')), /^250/);

    assert.equal((await send(port, 'x1@routed.example', 1)).slice(0, 9), '250 2.0.0');
    assert.equal((await send(port, 'y1@other.example', 2)).slice(0, 9), '250 2.0.0');
    await waitFor(() => a.delivered().length === 2, 10_000, 'both to the first peer');

    // Route and smarthost move to the second peer; a local domain is added.
    writeFileSync(file, conf({ smarthost: b.port, route: b.port, local: ['new.test'] }));
    const r1 = await runCli(['reload', '--config', file], '', { cwd: dir });
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(r1.stdout, /taken \(pid \d+\)/);
    assert.equal((await send(port, 'u@new.test', 30)).slice(0, 9), '250 2.0.0');
    await waitFor(() => existsSync(join(dir, 'var', 'mail', 'new.test', 'u', 'new')) && readdirSync(join(dir, 'var', 'mail', 'new.test', 'u', 'new')).length === 1, 10_000, 'the new local domain delivered to Maildir');
    assert.equal((await send(port, 'x2@routed.example', 3)).slice(0, 9), '250 2.0.0');
    assert.equal((await send(port, 'y2@other.example', 4)).slice(0, 9), '250 2.0.0');
    await waitFor(() => b.delivered().length === 2, 10_000, 'both to the second peer');
    assert.deepEqual(b.delivered().sort(), ['x2@routed.example', 'y2@other.example']);
    assert.equal(a.delivered().length, 2, 'nothing more to the first peer');

    // A file with errors: the check-config report, exit 1, the configuration in force stays.
    writeFileSync(file, conf({ smarthost: a.port, route: a.port }).replace('[smtp]\n', '[smtp]\nmax_recipients = "many"\n'));
    const r2 = await runCli(['reload', '--config', file], '', { cwd: dir });
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /petrel\.toml:\d+: smtp\.max_recipients: /);
    assert.equal((await send(port, 'y3@other.example', 5)).slice(0, 9), '250 2.0.0');
    await waitFor(() => b.delivered().length === 3, 10_000, 'still the second peer');

    // A listener added answers; then removed, it stops accepting; the held session went on all along.
    writeFileSync(file, conf({ smarthost: b.port, route: b.port, listen: [port, extraPort], local: ['new.test'] }));
    const r3 = await runCli(['reload', '--config', file], '', { cwd: dir });
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal((await send(extraPort, 'y4@other.example', 6)).slice(0, 9), '250 2.0.0');
    writeFileSync(file, conf({ smarthost: b.port, route: b.port, local: ['new.test'], extra: '[log]\nlevel = "warn"\n' }));
    const r4 = await runCli(['reload', '--config', file], '', { cwd: dir });
    assert.equal(r4.code, 0, r4.stderr);
    assert.match(r4.stdout, /\[log\] level: at the next restart/);
    assert.equal(await portOpen('127.0.0.1', extraPort), false, 'the removed listener no longer accepts');
    assert.match(replyLine(await held.cmd('NOOP')), /^250/, 'the session from before every reload still works');
    held.close();

    // data_dir cannot change while running: refused, saying so; nothing of the file applied.
    writeFileSync(file, conf({ smarthost: a.port, route: a.port, dataDir: join(dir, 'elsewhere') }));
    // The command finds the server by the file's data_dir: it finds none there, and says why that may be.
    const r5 = await runCli(['reload', '--config', file], '', { cwd: dir });
    assert.equal(r5.code, 69);
    assert.match(r5.stderr, /data_dir cannot change while it runs/);
    // The server itself, told by SIGHUP (kill, systemd), refuses the file whole.
    child.kill('SIGHUP');
    await waitFor(() => /reload refused/.test(child.stderr()), 10_000, 'the refusal');
    assert.match(child.stderr(), /data_dir cannot change while Petrel runs: restart it/);
    assert.equal((await send(port, 'y5@other.example', 7)).slice(0, 9), '250 2.0.0');
    await waitFor(() => b.delivered().length === 5, 10_000, 'the smarthost of the running configuration');
    assert.equal(child.proc.exitCode, null, 'still running');
  } finally {
    child.kill('SIGTERM');
    await child.exited;
    await a.close();
    await b.close();
    cleanup(dir);
  }
});
