/*
 * test/helpers/run-cli - run `node bin/petrel.js ARGS` as a user would, with
 * standard input given, and collect exit code and output. The process is
 * killed if it has not ended within the time limit (a test never hangs).
 */
import { spawn } from 'node:child_process';
import { BIN, ROOT } from './petrel-harness.js';

export interface CliResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], input: string | Buffer = '', opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; keepStdinOpen?: boolean } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.stdin.on('error', () => undefined); // the command may stop reading early (a lone ".")
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (opts.keepStdinOpen) proc.stdin.destroy();
      resolve({ code: code ?? signal ?? -1, stdout, stderr });
    });
    proc.stdin.write(input);
    // An application may keep the pipe open after the final "." and wait for sendmail to exit.
    if (!opts.keepStdinOpen) proc.stdin.end();
  });
}
