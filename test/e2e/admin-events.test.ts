// The admin event stream (GET /api/events/stream, server-sent events) at the
// HTTP level: it needs the token like every admin path; it carries each mail
// event with its seq as the SSE id; a client that was cut off resumes with
// Last-Event-ID (or ?after=) and gets exactly the events it missed, replayed
// from the store, then the live ones; and a client that does not read is cut
// off once its unsent output passes the bound, never buffered without limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { startPetrel, tempDir, cleanup, waitFor } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { raw } from '../helpers/admin-http.js';
import { DirectoryStandIn } from '../helpers/test-agents.js';
import { EventStreamHub } from '../../src/admin/events-stream.js';
import type { MailEvent } from '../../src/log/events.js';
import type { QueueStore } from '../../src/queue/store.js';

interface SseEvent {
  id: number;
  event: string;
  data: MailEvent;
}

/** openStream - a raw SSE client: parses `id`/`event`/`data` blocks as they arrive. */
function openStream(port: number, headers: Record<string, string>, path = '/api/events/stream'): Promise<{ res: IncomingMessage; events: SseEvent[]; close(): void }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers }, (res) => {
      const events: SseEvent[] = [];
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const f: Record<string, string> = {};
          for (const line of block.split('\n')) {
            const m = /^([a-z]+): ?(.*)$/.exec(line);
            if (m) f[m[1]!] = m[2]!;
          }
          if (f.event === 'mail') events.push({ id: Number(f.id), event: f.event, data: JSON.parse(f.data!) as MailEvent });
        }
      });
      res.on('error', () => undefined);
      resolve({ res, events, close: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

async function send(port: number, to: string, subject: string): Promise<string> {
  const t = await SmtpTalk.open(port);
  await t.read();
  await t.cmd('EHLO client.test');
  const r = await t.send('alice@localhost', [to], `Subject: ${subject}\r\nMessage-ID: <${subject}@client.test>\r\n\r\nbody\r\n`);
  await t.cmd('QUIT');
  t.close();
  return /queued as (\S+)/.exec(r.lines.join(' '))![1]!;
}

test('event stream: token needed; events with their seq; resume with Last-Event-ID replays exactly what was missed', async (t) => {
  const dir = tempDir();
  const p = await startPetrel(
    `[queue]\nretry_intervals = ["1h"]\n[[routes]]\ndomain = "dead.example"\nvia = "directory:${join(dir, 'missing')}"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "stream-token"\n`,
    { agents: { directory: new DirectoryStandIn() } },
    dir,
  );
  t.after(async () => {
    await p.stop();
    cleanup(dir);
  });
  const port = p.petrel.admin!.bound!.port;
  const auth = { Authorization: 'Bearer stream-token' };

  assert.equal((await raw(port, 'GET', '/api/events/stream')).status, 401, 'no token, no stream');
  assert.equal((await raw(port, 'POST', '/api/events/stream', { ...auth, 'Content-Type': 'application/json' }, '{}')).status, 405);
  assert.equal((await raw(port, 'GET', '/api/events/stream', { ...auth, 'Last-Event-ID': 'x' })).status, 400);

  const s1 = await openStream(port, auth);
  assert.equal(s1.res.statusCode, 200);
  assert.match(String(s1.res.headers['content-type']), /^text\/event-stream/);
  const qa = await send(p.port, 'bob@dead.example', 'a');
  await waitFor(() => s1.events.some((e) => e.data.queue_id === qa && e.data.event === 'deferred'), 10_000, 'a: received and deferred, live');
  assert.deepEqual(s1.events.filter((e) => e.data.queue_id === qa).map((e) => e.data.event), ['received', 'deferred']);
  for (const e of s1.events) assert.equal(e.id, e.data.seq, 'the SSE id is the event seq');
  const last = s1.events[s1.events.length - 1]!.id;
  s1.close();

  // While nobody listens: message b arrives and is deferred.
  const qb = await send(p.port, 'carol@dead.example', 'b');
  await waitFor(async () => (await p.petrel.store.getRecipients(qb))[0]?.state === 'deferred', 10_000, 'b deferred');

  // Resume: exactly the missed events, in order, then live ones.
  const s2 = await openStream(port, { ...auth, 'Last-Event-ID': String(last) });
  await waitFor(() => s2.events.some((e) => e.data.queue_id === qb && e.data.event === 'deferred'), 10_000, 'b replayed');
  assert.ok(s2.events.every((e) => e.id > last), 'nothing sent twice');
  assert.deepEqual(s2.events.map((e) => [e.data.queue_id, e.data.event]), [
    [qb, 'received'],
    [qb, 'deferred'],
  ]);
  const qc = await send(p.port, 'dave@dead.example', 'c');
  await waitFor(() => s2.events.some((e) => e.data.queue_id === qc && e.data.event === 'deferred'), 10_000, 'c live after the replay');
  const ids = s2.events.map((e) => e.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'in seq order');
  s2.close();

  // ?after= does the same for clients that cannot set the header.
  const s3 = await openStream(port, auth, `/api/events/stream?after=${last}`);
  await waitFor(() => s3.events.length >= 4, 10_000, 'replayed with ?after');
  assert.deepEqual(s3.events.slice(0, 4).map((e) => e.data.queue_id), [qb, qb, qc, qc]);
  s3.close();
  await waitFor(() => p.petrel.admin!.stream.size === 0, 5000, 'closed streams are forgotten');
});

test('event stream: a client that does not read is cut off at the bound, and others go on', async (t) => {
  // A stand-in store: the hub needs only onEvents, eventsAfter and durableEventSeq.
  let emit: (events: MailEvent[]) => void = () => undefined;
  const store = { onEvents: (l: (e: MailEvent[]) => void) => (emit = l), eventsAfter: async () => [], durableEventSeq: () => 0 } as unknown as QueueStore;
  const hub = new EventStreamHub(store, { maxBuffered: 64 * 1024, heartbeatMs: 60_000 });
  const server = createServer((req, res) => void hub.handle(req, res, {}, null));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(async () => {
    hub.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const port = (server.address() as AddressInfo).port;
  const slow = await openStream(port, {});
  slow.res.pause(); // reads nothing from here on
  const reader = await openStream(port, {});
  await waitFor(() => hub.size === 2, 5000, 'two clients');
  const pad = 'x'.repeat(1000);
  let seq = 0;
  for (let i = 0; i < 20_000 && hub.cutOff === 0; i++) {
    emit(Array.from({ length: 10 }, () => ({ seq: ++seq, ts: new Date().toISOString(), id: 1, event: 'deferred', queue_id: 'Q', message_id: '', sender: '', error: pad }) as unknown as MailEvent));
    await new Promise((r) => setImmediate(r));
  }
  assert.equal(hub.cutOff, 1, 'the client that does not read was cut off');
  assert.equal(hub.size, 1, 'the reading client goes on');
  await waitFor(() => reader.events.length === seq, 20_000, 'the reader got every event');
  reader.close();
  slow.close();
});
