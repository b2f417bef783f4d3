// Traffic shaping in a cluster (issue 18): two `petrel start` nodes on one
// throw-away PostgreSQL queue, a scriptable peer on 127.0.0.3 that answers
// "554 5.7.1 ... blocked", the loopback DNS server. The node that meets the
// block suspends the provider and the other node follows (it does not try
// the provider itself: one attempt in the cluster); `petrel queue resume`
// on the other node resumes both, and each sends what it had put back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { baseConfig, cleanup, exitedWithin, freePort, spawnPetrel, startChild, tempDir, waitFor, type Child } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { startPostgres, type Postgres } from '../helpers/postgres.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';

let db: Postgres;

before(async () => {
  db = await startPostgres();
});
after(async () => {
  await db?.stop();
});

interface Node {
  dir: string;
  config: string;
  port: number;
  child: Child;
}

async function cli(node: Node, ...args: string[]): Promise<{ code: number | string; out: string; err: string }> {
  const c = spawnPetrel([...args, '--config', node.config], node.dir);
  const code = await c.exited;
  return { code, out: c.stdout(), err: c.stderr() };
}

async function send(node: Node, rcpt: string): Promise<void> {
  const t = await SmtpTalk.open(node.port);
  await t.read();
  await t.cmd('EHLO client.test');
  assert.equal((await t.send('alice@home.test', [rcpt], `Subject: to ${rcpt}\r\n\r\nhello\r\n`)).code, 250);
  t.close();
}

interface Provider {
  provider: string;
  suspended_until: string | null;
}

async function providers(node: Node): Promise<Provider[]> {
  const q = await cli(node, 'queue', '--json');
  assert.equal(q.code, 0, q.err);
  return (JSON.parse(q.out) as { providers?: Provider[] }).providers ?? [];
}

test('a "blocked" reply met by one node suspends the provider on every node; a resume on any node sends the mail of all', async () => {
  const root = tempDir('petrel-cluster-shaping-');
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  await c.query('CREATE DATABASE shaping');
  await c.end();
  const url = db.url.replace(/\/[^/?]*(\?|$)/, '/shaping$1');
  const peerPort = await freePort('127.0.0.3');
  let blocked = true;
  const peer = await startPeer({ host: '127.0.0.3', port: peerPort, rcptReply: () => (blocked ? '554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example' : undefined) });
  const dns = await startDnsServer({ '*.blocked.test': { MX: [[10, 'mx.block.test']] }, 'mx.block.test': { A: ['127.0.0.3'] } });
  const nodes: Node[] = [];
  try {
    for (const name of ['s1', 's2']) {
      const dir = join(root, name);
      mkdirSync(dir, { recursive: true });
      const port = await freePort();
      const admin = await freePort();
      const text = baseConfig(
        dir,
        `[smtp]\nlisten = ["127.0.0.1:${port}"]\n[delivery]\nsmtp_port = ${peerPort}\ndns_servers = ["${dns.address}"]\nblock_suspend = "10m"\n` +
          `[[shaping]]\nmatch = "*.block.test"\n[local]\ndomains = ["home.test"]\n[admin]\nlisten = "127.0.0.1:${admin}"\n` +
          `[queue]\nbackend = "postgres"\npostgres_url = "${url}"\nnode_name = "${name}"\nretry_intervals = ["500ms"]\n[log]\nlevel = "error"\n`,
      );
      nodes.push({ dir, config: join(dir, 'petrel.toml'), port, child: await startChild(dir, text) });
    }
    const [s1, s2] = nodes as [Node, Node];
    await send(s1, 'user@d1.blocked.test');
    await waitFor(async () => (await providers(s1)).some((p) => p.provider === 'block.test' && p.suspended_until), 30_000, 'node s1 suspends the provider');
    await waitFor(async () => (await providers(s2)).some((p) => p.provider === 'block.test' && p.suspended_until), 30_000, 'node s2 follows');
    assert.equal(peer.transactions.length, 1, 'one attempt met the block');

    // Mail for the provider taken by s2 waits: s2 does not try the provider itself.
    await send(s2, 'user@d2.blocked.test');
    await waitFor(async () => {
      const q = JSON.parse((await cli(s2, 'queue', '--json')).out) as { destinations: Array<{ destination: string; recipients: number }> };
      return q.destinations.some((d) => d.destination === 'd2.blocked.test');
    }, 30_000, 'the second message queued, put back');
    await new Promise((r) => setTimeout(r, 1500)); // its due time (500 ms retries) passes: still no attempt
    assert.equal(peer.transactions.length, 1, 'no node attempted the suspended provider again');

    blocked = false;
    const r = await cli(s2, 'queue', 'resume', '--destination', 'block.test', '--reason', 'delisted');
    assert.equal(r.code, 0, r.err + r.out);
    await waitFor(() => peer.delivered().length >= 2, 30_000, 'both messages delivered after one resume');
    assert.deepEqual(peer.delivered().sort(), ['user@d1.blocked.test', 'user@d2.blocked.test']);
    await waitFor(async () => !(await providers(s1)).some((p) => p.suspended_until), 10_000, 'node s1 resumed too');
  } finally {
    for (const n of nodes) n.child.kill('SIGTERM');
    await Promise.all(nodes.map((n) => exitedWithin(n.child, 30_000)));
    for (const n of nodes) n.child.kill('SIGKILL');
    await peer.close();
    await dns.close();
    cleanup(root);
  }
});
