// `petrel ... | head -1`: a reader that stops early closes the pipe. Every
// command then ends quietly, as Unix tools do (status 141, as for SIGPIPE; no
// EPIPE stack trace on stderr); the server (`petrel start`) drops the rest of
// its output and keeps serving until told to stop. Handled once in cli/main.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN, ROOT, baseConfig, cleanup, freePort, portOpen, tempDir, waitFor } from '../helpers/petrel-harness.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';

interface Closed {
  code: number | string;
  stderr: string;
  stdout: string;
}

/** runClosed - run the real CLI with one of its output pipes closed by the reader before it writes anything. */
function runClosed(args: string[], closed: 'stdout' | 'stderr', cwd = ROOT): Promise<Closed> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    // The reader goes away at once (`head` has read its lines, `less` was quit): the
    // command's first write meets a pipe with no reader.
    proc[closed].destroy();
    const other = closed === 'stdout' ? proc.stderr : proc.stdout;
    let text = '';
    other.on('data', (d: Buffer) => (text += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? -1, stderr: closed === 'stdout' ? text : '', stdout: closed === 'stderr' ? text : '' });
    });
  });
}

const NO_TRACE = /EPIPE|Unhandled|^\s+at /m;

test('output cut short: --help, help COMMAND and check-config exit 141 quietly (no EPIPE stack trace)', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'good.toml'), 'hostname = "mx.example.test"\n');
    for (const args of [['--help'], ['help', 'queue'], ['queue', '--help'], ['check-config', join(dir, 'good.toml')]]) {
      const r = await runClosed(args, 'stdout');
      assert.equal(r.code, 141, `petrel ${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, NO_TRACE, `petrel ${args.join(' ')}`);
      assert.equal(r.stderr, '', `petrel ${args.join(' ')} says nothing`);
    }
  } finally {
    cleanup(dir);
  }
});

test('standard error cut short: check-config of a bad file exits quietly too', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'bad.toml'), '[smtp]\nmax_recipients = 0\n');
    const r = await runClosed(['check-config', join(dir, 'bad.toml')], 'stderr');
    assert.equal(r.code, 141);
    assert.equal(r.stdout, '');
  } finally {
    cleanup(dir);
  }
});

test('petrel start with its standard output closed keeps serving, then stops cleanly on SIGTERM', async () => {
  const dir = tempDir();
  try {
    const port = await freePort();
    const file = join(dir, 'petrel.toml');
    writeFileSync(file, baseConfig(dir, '[local]\ndomains = ["here.test"]\n', port));
    const proc = spawn(process.execPath, [BIN, 'start', '--config', file], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout.destroy();
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | string>((resolve) => proc.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
    try {
      await waitFor(() => portOpen('127.0.0.1', port), 20_000, 'petrel to listen');
      // Its "listening" lines went nowhere; it still takes mail.
      const t = await SmtpTalk.open(port);
      assert.equal((await t.read())?.code, 220);
      assert.equal((await t.cmd('EHLO c.test')).code, 250);
      const r = await t.send('a@example.com', ['bob@here.test'], 'Subject: closed stdout\r\n\r\nhi\r\n');
      assert.equal(r.code, 250, replyLine(r));
      t.close();
      // "SIGTERM received" and "stopped" are written to the closed pipe: dropped, not fatal.
      proc.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.doesNotMatch(stderr, NO_TRACE);
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
  } finally {
    cleanup(dir);
  }
});
