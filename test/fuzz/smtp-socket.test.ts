// The SMTP fuzz generators over real loopback sockets against a started
// Petrel (fewer runs than smtp-session.test.ts, which drives the Session
// directly): covers the listener, socket pause/resume and backpressure, and
// the enqueue path into the embedded store. Properties per session: the
// replies are well formed (same checks as the in-memory runner); every
// message acknowledged with 250 is in the store with CRLF-only bytes; the
// session ends (the server lets go of it once the client leaves); and
// afterwards Petrel still serves a fresh client. Delivery is made impossible
// (no local domains, a dead smarthost, retries an hour away) so accepted
// messages stay in the store to be read back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { connect } from 'node:net';
import { chunking, cut, hostileInput } from './smtp-generators.js';
import { bareLineEnd, checkReplies } from './session-runner.js';
import { startPetrel, freePort, waitFor, cleanup, type InProcess } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';

let p: InProcess;
before(async () => {
  const dead = await freePort();
  p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
max_recipients = 5
max_message_size = "8KB"
max_header_size = "2KB"
max_unknown_commands = 4
idle_timeout = "3s"
data_timeout = "5s"
[queue]
retry_intervals = ["1h"]
[delivery]
smarthost = "127.0.0.1:${dead}"
[local]
domains = []
`);
});
after(async () => {
  await p.stop();
  cleanup(p.dir);
});

/** converse - send the chunks (a turn of the event loop between them), collect output until the server is quiet or closes. */
function converse(chunks: Buffer[], quietMs: number): Promise<{ output: Buffer; serverClosed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = connect({ port: p.port, host: '127.0.0.1' });
    const out: Buffer[] = [];
    let serverClosed = false;
    let quiet: NodeJS.Timeout | null = null;
    let sent = false;
    const finish = (): void => {
      if (quiet) clearTimeout(quiet);
      s.destroy();
      resolve({ output: Buffer.concat(out), serverClosed });
    };
    const arm = (): void => {
      if (quiet) clearTimeout(quiet);
      if (sent) quiet = setTimeout(finish, quietMs);
    };
    s.on('data', (d: Buffer) => {
      out.push(d);
      arm();
    });
    s.on('end', () => {
      serverClosed = true;
      finish();
    });
    s.on('close', () => finish());
    s.on('error', (e) => (sent ? finish() : reject(e)));
    s.on('connect', async () => {
      for (const c of chunks) {
        if (s.destroyed || serverClosed) break;
        s.write(c);
        await new Promise((r) => setImmediate(r));
      }
      sent = true;
      arm();
    });
  });
}

test('hostile sessions over real sockets: well-formed replies, acknowledged = stored CRLF-only, sessions end, Petrel serves on', async () => {
  const rejections: unknown[] = [];
  const onRejection = (e: unknown): void => void rejections.push(e);
  process.on('unhandledRejection', onRejection);
  try {
    await fc.assert(
      fc.asyncProperty(hostileInput, chunking, async (input, cuts) => {
        const { output } = await converse(cut(input, cuts).slice(0, 400), 60);
        const problems: string[] = [];
        // A session cut short by the client may end inside a multi-line reply only if the server was mid-write: it never is.
        const queued = checkReplies(output, problems, 'petrel.test');
        assert.deepEqual(problems, [], output.toString('latin1').slice(0, 2000));
        for (const q of queued) {
          const m = await p.petrel.store.getMessage(q);
          assert.ok(m, `${q} acknowledged but not stored`);
          const chunks: Buffer[] = [];
          for await (const c of await p.petrel.store.readBody(q)) chunks.push(c as Buffer);
          const body = Buffer.concat(chunks);
          assert.equal(bareLineEnd(body), -1, `${q}: a bare CR or LF stored`);
        }
      }),
      { numRuns: 150 },
    );
    // Every session let go once its client left (none hangs on).
    await waitFor(() => p.petrel.inbound!.connectionCount === 0, 10_000, 'every fuzzed session to end');
    const t = await SmtpTalk.open(p.port);
    try {
      assert.equal((await t.read())?.code, 220);
      assert.equal((await t.cmd('EHLO after.fuzz')).code, 250);
      assert.equal((await t.cmd('NOOP')).code, 250);
    } finally {
      t.close();
    }
    assert.deepEqual(rejections.map(String), []);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
});
