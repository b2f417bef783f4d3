// Several Petrel nodes on one PostgreSQL queue (a throw-away cluster started
// here), each a real `petrel start` child process on its own loopback ports:
// - three nodes share one queue: 20,000 messages sent round-robin to the
//   three are each delivered exactly once, and `petrel queue --json` on one
//   node counts mail accepted by the others;
// - kill -9 of one node mid-delivery: the others deliver what it held once
//   its lease ends; nothing lost, duplicates at most what it had in flight,
//   `petrel audit` clean;
// - PostgreSQL restarted under load: 451 4.3.0 while it is away, nothing
//   acknowledged is lost, every node carries on by itself.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { sendLoad, type LoadCounter } from '../helpers/load.js';
import { baseConfig, cleanup, exitedWithin, freePort, spawnPetrel, startChild, tempDir, waitFor, type Child } from '../helpers/petrel-harness.js';
import { startPeer, type TestPeer as Peer } from '../helpers/test-peer.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';

let db: Postgres;
let databases = 0;

before(async () => {
  db = await startPostgres();
});
after(async () => {
  await db?.stop();
});

/** freshDatabase - a database of its own for one test; its URL. */
async function freshDatabase(): Promise<string> {
  const name = `cluster${++databases}`;
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return db.url.replace(/\/[^/?]*(\?|$)/, `/${name}$1`);
}

interface Node {
  name: string;
  dir: string;
  config: string;
  port: number;
  child: Child;
}

/** startNode - one `petrel start` of the cluster, on free loopback ports. */
async function startNode(root: string, name: string, url: string, sink: Peer, lease: string, extra = ''): Promise<Node> {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const config = baseConfig(
    dir,
    `[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_connections_per_client = 200\n[delivery]\nsmarthost = "127.0.0.1:${sink.port}"\n[local]\ndomains = []\n` +
      `[queue]\nbackend = "postgres"\npostgres_url = "${url}"\nnode_name = "${name}"\nlease = "${lease}"\nretry_intervals = ["500ms"]\n[log]\nlevel = "error"\n${extra}`,
  );
  const child = await startChild(dir, config);
  return { name, dir, config: join(dir, 'petrel.toml'), port, child };
}

async function stopAll(nodes: Node[]): Promise<void> {
  for (const n of nodes) n.child.kill('SIGTERM');
  await Promise.all(nodes.map((n) => exitedWithin(n.child, 30_000)));
  for (const n of nodes) n.child.kill('SIGKILL');
}

/** cli - run `petrel ARGS --config FILE` and return its exit code and output. */
async function cli(node: Node, ...args: string[]): Promise<{ code: number | string; out: string; err: string }> {
  const c = spawnPetrel([...args, '--config', node.config], node.dir);
  const code = await c.exited;
  return { code, out: c.stdout(), err: c.stderr() };
}

/** arrivedIds - the Message-IDs the sink accepted, one per accepted transaction. */
function arrivedIds(sink: Peer): string[] {
  return sink.transactions.filter((x) => x.completed && x.finalReplies[0]?.startsWith('2')).map((x) => /^Message-ID: (.*)$/m.exec(x.body.toString('latin1'))?.[1]?.trim() ?? '');
}

test('three nodes share one queue: 20,000 messages round-robin, each delivered exactly once; any node sees the whole queue', async (t) => {
  const root = tempDir('petrel-cluster-');
  const sink = await startPeer({});
  const url = await freshDatabase();
  const nodes: Node[] = [];
  try {
    for (const name of ['n1', 'n2', 'n3']) nodes.push(await startNode(root, name, url, sink, '30s'));
    const [n1, n2, n3] = nodes as [Node, Node, Node];
    const dest = `[127.0.0.1]:${sink.port}`;
    // Held on n1; mail accepted by n2 and n3 is counted on n1.
    const held = await cli(n1, 'queue', 'suspend', '--destination', dest, '--reason', 'cluster test');
    assert.equal(held.code, 0, held.err);
    const acked = new Set<string>();
    const first: LoadCounter = { i: 0, to: 300 };
    await Promise.all([sendLoad(n2.port, first, acked, { clients: 4, prefix: 'held' }), sendLoad(n3.port, first, acked, { clients: 4, prefix: 'held' })]);
    assert.equal(acked.size, 300);
    const q = await cli(n1, 'queue', '--json');
    assert.equal(q.code, 0, q.err);
    const summary = JSON.parse(q.out) as { total: { recipients: number; messages: number } };
    assert.equal(summary.total.messages, 300, 'n1 counts the messages n2 and n3 accepted');
    const cluster = await cli(n2, 'cluster', '--json');
    assert.deepEqual((JSON.parse(cluster.out) as { nodes: Array<{ name: string; alive: boolean }> }).nodes.map((n) => [n.name, n.alive]).sort(), [
      ['n1', true],
      ['n2', true],
      ['n3', true],
    ]);
    assert.equal((await cli(n3, 'queue', 'resume', '--destination', dest)).code, 0);

    const TOTAL = 20_000;
    const next: LoadCounter = { i: 0, to: TOTAL };
    await Promise.all(nodes.map((n) => sendLoad(n.port, next, acked, { clients: 6, prefix: 'rr' })));
    assert.equal(acked.size, TOTAL + 300, 'every message acknowledged');
    await waitFor(() => arrivedIds(sink).length >= acked.size, 300_000, 'every message at the sink');
    await new Promise((r) => setTimeout(r, 1000));
    const all = arrivedIds(sink);
    const unique = new Set(all);
    t.diagnostic(`acknowledged=${acked.size} arrived=${all.length} unique=${unique.size}`);
    assert.deepEqual([...acked].filter((id) => !unique.has(id)), [], 'none lost');
    assert.equal(all.length, unique.size, 'none delivered twice');
    // Tracking on any node sees a message accepted by another.
    const tracked = await cli(n3, 'track', '--message-id', '<rr-1@example.com>', '--json');
    assert.equal(tracked.code, 0, tracked.err);
    const audit = await cli(n2, 'audit');
    assert.equal(audit.code, 0, audit.out + audit.err);
    assert.match(audit.out, /exceptions: 0/);
  } finally {
    await stopAll(nodes);
    await sink.close();
    cleanup(root);
  }
});

test('kill -9 one node mid-delivery: the others deliver what it held once its lease ends; nothing lost; audit clean', async (t) => {
  const root = tempDir('petrel-cluster-');
  // A slow receiver: every node has deliveries in flight when one dies.
  const sink = await startPeer({ delayMs: 20 });
  const url = await freshDatabase();
  const nodes: Node[] = [];
  try {
    for (const name of ['k1', 'k2', 'k3']) nodes.push(await startNode(root, name, url, sink, '3s'));
    const [k1] = nodes as [Node, Node, Node];
    const acked = new Set<string>();
    const next: LoadCounter = { i: 0, to: 1500 };
    const load = Promise.all(nodes.map((n) => sendLoad(n.port, next, acked, { clients: 4, prefix: 'kill' })));
    // Kill k1 while it holds claims (recipients it is delivering right now).
    let held = 0;
    await waitFor(
      async () => {
        const view = JSON.parse((await cli(nodes[1]!, 'cluster', '--json')).out) as { nodes: Array<{ name: string; in_flight: number }> };
        held = view.nodes.find((n) => n.name === 'k1')?.in_flight ?? 0;
        return held > 0;
      },
      60_000,
      'k1 delivering',
    );
    k1.child.kill('SIGKILL');
    await k1.child.exited;
    await load;
    await waitFor(() => new Set(arrivedIds(sink)).size >= acked.size, 120_000, 'every acknowledged message at the sink');
    await new Promise((r) => setTimeout(r, 1000));
    const all = arrivedIds(sink);
    const unique = new Set(all);
    const duplicates = all.length - unique.size;
    t.diagnostic(`acknowledged=${acked.size} arrived=${all.length} duplicates=${duplicates} k1 in flight about ${held}`);
    assert.deepEqual([...acked].filter((id) => !unique.has(id)), [], 'none lost');
    // At most what the dead node had in flight (the cluster view is a moment old: its claims are made in batches).
    assert.ok(duplicates <= held + 100, `duplicates ${duplicates} bounded by what k1 held (${held})`);
    const audit = await cli(nodes[2]!, 'audit');
    assert.equal(audit.code, 0, audit.out + audit.err);
    assert.match(audit.out, /exceptions: 0/);
    // The dead node is shown gone once its heartbeat is older than the lease, holding nothing.
    await waitFor(
      async () => {
        const c = JSON.parse((await cli(nodes[1]!, 'cluster', '--json')).out) as { nodes: Array<{ name: string; alive: boolean; in_flight: number }> };
        const k = c.nodes.find((n) => n.name === 'k1');
        return k && !k.alive && k.in_flight === 0;
      },
      20_000,
      'k1 shown gone with nothing in flight',
    );
  } finally {
    await stopAll(nodes);
    await sink.close();
    cleanup(root);
  }
});

test('PostgreSQL restarted under load: 451 4.3.0 while it is away, nothing acknowledged lost, every node recovers by itself', async (t) => {
  const root = tempDir('petrel-cluster-');
  const sink = await startPeer({});
  const url = await freshDatabase();
  const nodes: Node[] = [];
  try {
    for (const name of ['p1', 'p2']) nodes.push(await startNode(root, name, url, sink, '5s'));
    const acked = new Set<string>();
    const next: LoadCounter = { i: 0, to: 1200 };
    const load = Promise.all(nodes.map((n) => sendLoad(n.port, next, acked, { clients: 3, prefix: 'pgr' })));
    await waitFor(() => acked.size >= 200, 60_000, 'load under way');
    await db.stopServer();
    // While the database is away, a new message is refused with 451 4.3.0 and the client keeps it.
    const talk = await SmtpTalk.open(nodes[0]!.port);
    await talk.read();
    await talk.cmd('EHLO probe.test');
    const r = await talk.send('probe@example.com', ['x@remote.example'], 'Subject: probe\r\nMessage-ID: <probe@example.com>\r\n\r\nprobe\r\n');
    talk.close();
    assert.equal(r.code, 451, r.lines.join(' '));
    assert.equal(r.enhanced, '4.3.0');
    await new Promise((res) => setTimeout(res, 1000));
    await db.startServer();
    await load;
    await waitFor(() => new Set(arrivedIds(sink)).size >= acked.size, 120_000, 'every acknowledged message at the sink');
    const unique = new Set(arrivedIds(sink));
    t.diagnostic(`acknowledged=${acked.size} arrived=${unique.size}`);
    assert.deepEqual([...acked].filter((id) => !unique.has(id)), [], 'none lost');
    // Both nodes work again: each accepts a message now.
    for (const n of nodes) {
      const t2 = await SmtpTalk.open(n.port);
      await t2.read();
      await t2.cmd('EHLO again.test');
      const ok = await t2.send('again@example.com', ['y@remote.example'], `Subject: again\r\nMessage-ID: <again-${n.name}@example.com>\r\n\r\nagain\r\n`);
      t2.close();
      assert.equal(ok.code, 250, ok.lines.join(' '));
    }
    await waitFor(() => arrivedIds(sink).some((id) => id === '<again-p2@example.com>') && arrivedIds(sink).some((id) => id === '<again-p1@example.com>'), 30_000, 'new mail delivered after the restart');
  } finally {
    await stopAll(nodes);
    await sink.close();
    cleanup(root);
  }
});
