/*
 * test/helpers/black-hole - a loopback port whose TCP connects never complete
 * (the connect timeout case), without touching firewall rules.
 *
 * A listening socket that never accepts, with its accept queue already full:
 * Linux then drops further SYNs, so a connect hangs until the client gives up.
 * Node's net.Server always accepts, so the listener is a python3 child (python3
 * is on every Petrel development and CI machine); if it cannot be started the
 * test fails with that reason, it is never skipped.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';

const SCRIPT = `
import socket, sys, time
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(0)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
`;

export interface BlackHole {
  port: number;
  close(): Promise<void>;
}

/** startBlackHole - the port, once its accept queue is full. */
export async function startBlackHole(): Promise<BlackHole> {
  const child: ChildProcess = spawn('python3', ['-c', SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', (e) => reject(new Error(`black hole: cannot run python3: ${e.message}`)));
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    child.once('exit', (code) => reject(new Error(`black hole: python3 exited with ${code}`)));
  });
  // Fill the accept queue (backlog 0 holds one; a few more to be sure): these complete or hang, never accepted.
  const fillers: Socket[] = [];
  for (let i = 0; i < 4; i++) {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    fillers.push(s);
  }
  await new Promise((r) => setTimeout(r, 200));
  return {
    port,
    close: async () => {
      for (const s of fillers) s.destroy();
      child.stdin!.end();
      child.kill();
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
    },
  };
}
