// A signal that reaches `petrel start` while it is still starting. With
// `[server] workers` the port takes mail as soon as the first worker listens,
// while the primary still waits for the others: a SIGTERM then (a test, a
// supervisor, a quick Ctrl-C) must stop the server cleanly, never kill it by
// the signal's default action; a SIGHUP must not kill it either. The window is
// held open on purpose: one worker is stopped (SIGSTOP) before it can say it
// is ready, and continued after the signal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { baseConfig, cleanup, freePort, portOpen, spawnPetrel, tempDir, waitFor, type Child } from '../helpers/petrel-harness.js';
import { alive, childPids } from '../helpers/processes.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';

/** worker - `pid` is a worker process already running its own program: not the primary's copy between fork and exec (stopped there, it would hold the primary up). */
function worker(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes('PETREL_WORKER=1');
  } catch {
    return false;
  }
}

/** startHeld - `petrel start` with two workers, one of them stopped before it is ready; resolves once the port takes mail. */
async function startHeld(dir: string, port: number): Promise<{ child: Child; held: number }> {
  const file = join(dir, 'petrel.toml');
  writeFileSync(file, baseConfig(dir, '[server]\nworkers = 2\n[local]\ndomains = ["here.test"]\n', port));
  for (let attempt = 1; ; attempt++) {
    const child = spawnPetrel(['start', '--config', file], dir);
    const pid = child.proc.pid!;
    let held = 0;
    try {
      // The workers are forked side by side and need a few hundred milliseconds to load: stop one as soon as it runs.
      const found = await waitFor(() => childPids(pid).find(worker) ?? child.proc.exitCode !== null, 20_000, 'a worker to be forked');
      assert.equal(typeof found, 'number', `petrel exited: ${child.stderr()}`);
      held = found as number;
      process.kill(held, 'SIGSTOP');
      await waitFor(() => portOpen('127.0.0.1', port), 20_000, 'the other worker to listen');
    } catch (e) {
      // Nothing left running: a child still alive would keep the test process from ending.
      if (held && alive(held)) process.kill(held, 'SIGCONT');
      child.kill('SIGKILL');
      await child.exited;
      throw new Error(`${(e as Error).message}\nstdout: ${child.stdout()}\nstderr: ${child.stderr()}`);
    }
    // Started already: the stopped worker had become ready before this test (itself slowed by a busy
    // machine) could stop it — the window was missed; try again (it takes hundreds of milliseconds to miss).
    if (!/started, pid/.test(child.stdout()) || attempt === 3) return { child, held };
    process.kill(held, 'SIGCONT');
    child.kill('SIGKILL');
    await child.exited;
  }
}

/** sendOne - one message through the port (it takes mail while the server is still starting). */
async function sendOne(port: number): Promise<void> {
  const t = await SmtpTalk.open(port);
  assert.equal((await t.read())?.code, 220);
  assert.equal((await t.cmd('EHLO c.test')).code, 250);
  const r = await t.send('a@example.com', ['bob@here.test'], 'Subject: while starting\r\n\r\nhi\r\n');
  assert.equal(r.code, 250, replyLine(r));
  t.close();
}

test('SIGTERM while the workers are still starting: the server finishes starting, then stops cleanly (exit 0)', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const port = await freePort();
  const { child, held } = await startHeld(dir, port);
  try {
    await sendOne(port);
    assert.doesNotMatch(child.stdout(), /started/, 'still starting: one worker is held');
    child.kill('SIGTERM');
    // Not killed by the signal: it waits for the held worker.
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(child.proc.signalCode, null, 'killed by SIGTERM while starting');
    assert.equal(child.proc.exitCode, null, child.stderr());
    process.kill(held, 'SIGCONT');
    assert.equal(await child.exited, 0, child.stderr());
    assert.match(child.stdout(), /petrel: SIGTERM received, stopping/);
    assert.match(child.stdout(), /petrel: stopped/);
    assert.equal(alive(held), false, 'the worker ended with the primary');
  } finally {
    if (alive(held)) process.kill(held, 'SIGCONT');
    child.kill('SIGKILL');
    await child.exited;
    cleanup(dir);
  }
});

test('SIGHUP while starting does not kill the server: the file is read again once it has started', { timeout: 60_000 }, async () => {
  const dir = tempDir();
  const port = await freePort();
  const { child, held } = await startHeld(dir, port);
  try {
    child.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(child.proc.signalCode, null, 'killed by SIGHUP while starting');
    process.kill(held, 'SIGCONT');
    await waitFor(() => /petrel: SIGHUP received/.test(child.stdout() + child.stderr()), 20_000, 'the reload once started');
    assert.match(child.stdout(), /started, pid/);
    await sendOne(port);
    child.kill('SIGTERM');
    assert.equal(await child.exited, 0, child.stderr());
  } finally {
    if (alive(held)) process.kill(held, 'SIGCONT');
    child.kill('SIGKILL');
    await child.exited;
    cleanup(dir);
  }
});
