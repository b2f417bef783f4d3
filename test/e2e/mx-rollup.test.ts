// mx-rollup (issue 17): domains whose MX records name the same host share
// connections and limits. A few hundred domains, one MX host (a scriptable
// peer on 127.0.0.2, loopback DNS with a wildcard): the peer never sees more
// than max_connections_per_destination connections at once, connections
// carry messages of many domains, and every message is delivered once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, freePort } from '../helpers/petrel-harness.js';
import { startPeer } from '../helpers/test-peer.js';
import { startDnsServer } from '../helpers/dns-server.js';

const DOMAINS = 300;
const LIMIT = 3;

test(`${DOMAINS} domains behind one MX host share its connections: at most ${LIMIT} at once, each message delivered once`, async () => {
  const port = await freePort('127.0.0.2');
  const peer = await startPeer({ host: '127.0.0.2', port });
  const dns = await startDnsServer({
    '*.rollup.test': { MX: [[10, 'mx.provider.test']] },
    'mx.provider.test': { A: ['127.0.0.2'] },
  });
  const p = await startPetrel(
    `[delivery]\nsmtp_port = ${port}\ndns_servers = ["${dns.address}"]\nmax_connections_per_destination = ${LIMIT}\nmax_messages_per_connection = 1000\n[local]\ndomains = ["home.test"]\n`,
  );
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    for (let i = 0; i < DOMAINS; i++) {
      const r = await t.send('alice@home.test', [`user@d${i}.rollup.test`], `Subject: ${i}\r\n\r\nbody ${i}\r\n`);
      assert.equal(r.code, 250);
    }
    t.close();
    await waitFor(() => peer.delivered().length >= DOMAINS, 60_000, 'every message at the peer');
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === DOMAINS, 10_000, 'delivered events');
    const got = peer.delivered();
    assert.equal(got.length, DOMAINS, 'none twice');
    assert.equal(new Set(got).size, DOMAINS, 'every domain once');
    assert.ok(peer.maxConcurrent <= LIMIT, `at most ${LIMIT} connections at once across all domains (saw ${peer.maxConcurrent})`);
    // Rolled up: far fewer connections than domains (per-domain pooling would open one per domain).
    assert.ok(peer.connections.length <= DOMAINS / 10, `connections reused across domains (${peer.connections.length} for ${DOMAINS} domains)`);
    assert.equal(p.events().filter((e) => e.event === 'deferred' || e.event === 'failed').length, 0);
  } finally {
    await p.stop();
    await peer.close();
    await dns.close();
    cleanup(p.dir);
  }
});
