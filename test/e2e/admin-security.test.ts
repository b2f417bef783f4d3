// Admin API and web viewer security, adversarially (issue 7; CONTRACT.md
// "Admin HTTP"), beyond admin-api.test.ts's basic guards:
// - with a token, every path (every API route, every action, the viewer and
//   its static files, /metrics, /logout, unknown paths; GET, HEAD, POST) is
//   refused without credentials, and with every wrong kind of credential;
// - actions need POST with the token or a session: GET/HEAD never act; a
//   cross-site form post (form, text/plain, multipart) carrying only the
//   session cookie is refused; so is JSON from another Origin or Origin
//   "null"; a CORS preflight gets no CORS grant — and the refused attempts
//   leave the queue unchanged;
// - no path traversal into data_dir or anywhere else: dot segments, encoded
//   ones (%2e%2e, ..%2f, %5c), absolute paths, absolute-form request targets,
//   NUL, over-long paths — sent raw on the socket, so no client library
//   normalises them first;
// - the session cookie: HttpOnly, SameSite=Strict, Path=/, a bounded
//   Max-Age, an unguessable id, a new one per login, dead after logout;
// - every answer (errors included) carries nosniff / DENY / no-store.
//
// Untrusted input: every request line and header sent here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startPetrel, freePort, cleanup, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { AdminClient, raw, type Reply } from '../helpers/admin-http.js';

const TOKEN = 'adm1n-security-token-0123456789';

/** rawRequest - exact bytes on a socket; returns the status code and the whole response text. */
function rawRequest(port: number, requestText: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' }, () => s.write(requestText));
    let text = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => (text += d));
    s.on('end', () => resolve({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0), text }));
    s.on('error', reject);
    s.setTimeout(10_000, () => s.destroy(new Error('raw admin request timed out')));
  });
}

/** Things that must never appear in an answer to an attacker's path. */
const LEAKS = [/SQLite format 3/, /root:.*:0:0:/, /data_dir\s*=/, /"name": "petrel"/, /BEGIN [A-Z ]*PRIVATE KEY/];

function assertSecurityHeaders(r: Reply, what: string): void {
  assert.equal(r.headers['x-content-type-options'], 'nosniff', `${what}: nosniff`);
  assert.equal(r.headers['x-frame-options'], 'DENY', `${what}: DENY`);
  assert.equal(r.headers['cache-control'], 'no-store', `${what}: no-store`);
  assert.equal(r.headers['access-control-allow-origin'], undefined, `${what}: no CORS grant`);
}

describe('admin security, with a token', () => {
  let p: InProcess;
  let port = 0;
  let api: AdminClient;
  let qid = '';

  before(async () => {
    const dead = await freePort();
    p = await startPetrel(`[queue]\nretry_intervals = ["1h"]\n[delivery]\nsmarthost = "127.0.0.1:${dead}"\n[admin]\nlisten = "127.0.0.1:0"\ntoken = "${TOKEN}"\n`);
    port = p.petrel.admin!.bound!.port;
    api = new AdminClient(port, TOKEN);
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    const r = await t.send('alice@example.com', ['bob@dead.example'], 'Subject: held\r\nMessage-ID: <held@admin.test>\r\n\r\nbody\r\n');
    t.close();
    qid = /queued as (\S+)/.exec(r.lines.join(' '))![1]!;
    await waitFor(async () => (await api.get(`/api/messages/${qid}`)).json().recipients?.[0]?.state === 'deferred', 10_000, 'the message deferred');
  });
  after(async () => {
    await p.stop();
    cleanup(p.dir);
  });

  /** Every route the listener has, with a method that would succeed with credentials. */
  const routes = (): Array<[string, string]> => [
    ['GET', '/api/queue'],
    ['GET', '/api/queue/ages'],
    ['GET', '/api/events/stream'],
    ['GET', '/api/messages'],
    ['GET', `/api/messages/${qid}`],
    ['GET', '/api/overrides'],
    ['GET', '/api/quarantine'],
    ['GET', `/api/quarantine/${qid}`],
    ['GET', '/api/track?message_id=%3Cheld%40admin.test%3E'],
    ['GET', '/metrics'],
    ['HEAD', '/metrics'],
    ['GET', '/'],
    ['HEAD', '/'],
    ['GET', '/static/app.js'],
    ['GET', '/static/style.css'],
    ['GET', '/static/index.html'],
    ['GET', '/static/nonexistent.js'],
    ['GET', '/nonexistent'],
    ['POST', `/api/messages/${qid}/retry`],
    ['POST', `/api/messages/${qid}/suspend`],
    ['POST', `/api/messages/${qid}/resume`],
    ['POST', `/api/messages/${qid}/delete`],
    ['POST', '/api/destinations/dead.example/retry'],
    ['POST', '/api/destinations/dead.example/suspend'],
    ['POST', '/api/destinations/dead.example/resume'],
    ['POST', '/api/destinations/dead.example/redirect'],
    ['POST', `/api/quarantine/${qid}/release`],
    ['POST', `/api/quarantine/${qid}/delete`],
    ['POST', '/logout'],
  ];

  /** unchanged - the held message is still there, deferred, not suspended, and no operator event happened. */
  async function assertUnchanged(what: string): Promise<void> {
    const shown = (await api.get(`/api/messages/${qid}`)).json();
    assert.ok(shown.message, `${what}: the message is still queued`);
    assert.deepEqual(
      shown.recipients.map((r: { state: string; suspended: boolean }) => [r.state, !!r.suspended]),
      [['deferred', false]],
      what,
    );
    assert.deepEqual(
      shown.events.map((e: { event: string }) => e.event),
      ['received', 'deferred'],
      `${what}: no operator event`,
    );
    assert.deepEqual((await api.get('/api/overrides')).json().overrides ?? (await api.get('/api/overrides')).json(), [], `${what}: no hold or redirect`);
  }

  test('every path, every method: refused without credentials and with every wrong credential', async () => {
    const wrong: Array<Record<string, string>> = [
      {},
      { Authorization: 'Bearer wrong' },
      { Authorization: 'Bearer ' },
      { Authorization: `Bearer ${TOKEN}x` },
      { Authorization: `Bearer ${TOKEN.slice(0, -1)}` },
      { Authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` },
      { Authorization: TOKEN },
      { Cookie: `petrel_session=${TOKEN}` },
      { Cookie: 'petrel_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
      { Cookie: 'petrel_session=' },
      { 'X-Petrel-Viewer': '1' },
    ];
    for (const [method, path] of routes()) {
      for (const headers of wrong) {
        const h = method === 'POST' ? { ...headers, 'Content-Type': 'application/json' } : headers;
        const r = await raw(port, method, path, h, method === 'POST' ? '{"reason":"attack","to":"127.0.0.1:25"}' : undefined);
        const what = `${method} ${path} with ${JSON.stringify(headers)}`;
        assert.ok(r.status === 401 || (r.status === 303 && r.headers.location === '/login'), `${what}: ${r.status}`);
        assert.ok(!/queue_?id|petrel_|recipients|<html/i.test(r.text.replace(/Authorization: Bearer <token> needed/, '')), `${what}: leaks ${r.text.slice(0, 80)}`);
        assertSecurityHeaders(r, what);
      }
      // The token in the query string is not a credential.
      const q = await raw(port, method, `${path}${path.includes('?') ? '&' : '?'}token=${TOKEN}`, method === 'POST' ? { 'Content-Type': 'application/json' } : {}, method === 'POST' ? '{}' : undefined);
      assert.ok(q.status === 401 || q.status === 303, `${method} ${path}?token=: ${q.status}`);
    }
    await assertUnchanged('after every unauthenticated attempt');
  });

  test('actions: GET and HEAD never act; cross-site form posts with only the cookie are refused; no CORS grant', async () => {
    // A real viewer session.
    const login = await raw(port, 'POST', '/login', { 'Content-Type': 'application/x-www-form-urlencoded' }, `token=${encodeURIComponent(TOKEN)}`);
    assert.equal(login.status, 303);
    const cookie = String(login.headers['set-cookie']).split(';')[0]!;
    assert.match(cookie, /^petrel_session=[A-Za-z0-9_-]{32,}$/);
    const actions = routes().filter(([m, path]) => m === 'POST' && path.startsWith('/api/'));
    for (const [, path] of actions) {
      for (const method of ['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH']) {
        const r = await raw(port, method, path, { Authorization: `Bearer ${TOKEN}` });
        assert.equal(r.status, 405, `${method} ${path}`);
      }
      const forms: Array<[string, string]> = [
        ['application/x-www-form-urlencoded', 'reason=csrf&to=127.0.0.1%3A25'],
        ['text/plain', '{"reason":"csrf","to":"127.0.0.1:25"}'],
        ['multipart/form-data; boundary=x', '--x\r\nContent-Disposition: form-data; name="reason"\r\n\r\ncsrf\r\n--x--\r\n'],
      ];
      for (const [type, body] of forms) {
        for (const origin of ['http://evil.example', 'null', undefined]) {
          const headers: Record<string, string> = { Cookie: cookie, 'Content-Type': type };
          if (origin) headers.Origin = origin;
          const r = await raw(port, 'POST', path, headers, body);
          assert.equal(r.status, 403, `form post ${type} from ${origin ?? 'no origin'} to ${path}: ${r.status}`);
        }
      }
      for (const origin of ['http://evil.example', 'null', `http://127.0.0.1:${port}.evil.example`, 'http://localhost.evil.example', 'not a url']) {
        const r = await raw(port, 'POST', path, { Cookie: cookie, 'Content-Type': 'application/json', Origin: origin }, '{"reason":"csrf","to":"127.0.0.1:25"}');
        assert.equal(r.status, 403, `JSON from Origin ${origin} to ${path}: ${r.status}`);
      }
      // A cross-origin fetch with JSON needs a preflight: it must not be granted.
      const pre = await raw(port, 'OPTIONS', path, { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' });
      assert.notEqual(pre.status, 204);
      assert.ok(pre.status >= 400, `OPTIONS ${path}: ${pre.status}`);
      assert.equal(pre.headers['access-control-allow-origin'], undefined);
      assert.equal(pre.headers['access-control-allow-methods'], undefined);
    }
    await assertUnchanged('after the cross-site attempts');
    // The same session, same origin, JSON: the viewer's own request works (the guards are not just "refuse all").
    const ok = await raw(port, 'POST', `/api/messages/${qid}/suspend`, { Cookie: cookie, 'Content-Type': 'application/json', Origin: `http://127.0.0.1:${port}`, Host: `127.0.0.1:${port}` }, '{"reason":"viewer test"}');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json().changed, 1);
    assert.equal((await api.post(`/api/messages/${qid}/resume`, { reason: 'undo' })).status, 200);
  });

  test('no path traversal: raw request targets never reach a file', async () => {
    const targets = [
      '/static/../../var/queue/queue.db',
      '/static/../../../../../../etc/passwd',
      '/static/%2e%2e/%2e%2e/var/queue/queue.db',
      '/static/%2E%2E/%2E%2E/petrel.toml',
      '/static/..%2f..%2fvar%2fqueue%2fqueue.db',
      '/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd',
      '/static/%2e%2e%2f%2e%2e%2fpetrel.toml',
      '/static/..%5c..%5cpetrel.toml',
      '/static/..\\..\\petrel.toml',
      '/static/.%2e/.%2e/petrel.toml',
      '/static//etc/passwd',
      '/static/%2fetc%2fpasswd',
      '/static/app.js%00.html',
      '/static/app.js%00',
      '/static/app.js/',
      '/static/app.js/..',
      '/static/..',
      '/static/.',
      '/static/',
      '/static/index.html/../../../etc/passwd',
      '/static/tls/key.pem',
      '/static/' + 'a/'.repeat(3000),
      '//etc/passwd',
      '/var/queue/queue.db',
      '/../var/queue/queue.db',
      '/%2e%2e/var/queue/queue.db',
      '/api/../var/queue/queue.db',
      `/api/messages/${'..%2f'.repeat(5)}etc%2fpasswd`,
      'http://127.0.0.1/../../etc/passwd',
      'file:///etc/passwd',
      '*',
    ];
    // Dot segments are resolved (WHATWG URL) before routing, so "/static/.." is "/": the viewer's own page is fine.
    const viewerFiles = await Promise.all(['/', '/static/app.js', '/static/style.css'].map(async (f) => Buffer.from((await api.get(f)).text, 'utf8').toString('latin1')));
    for (const target of targets) {
      for (const method of ['GET', 'HEAD']) {
        const r = await rawRequest(port, `${method} ${target} HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
        const body = r.text.slice(r.text.indexOf('\r\n\r\n') + 4);
        const ownFile = r.status === 200 && (method === 'HEAD' || viewerFiles.includes(body));
        assert.ok([400, 403, 404, 405, 414, 431].includes(r.status) || ownFile, `${method} ${target.slice(0, 80)}: ${r.status}`);
        for (const leak of LEAKS) assert.doesNotMatch(r.text, leak, `${method} ${target.slice(0, 80)}`);
      }
    }
    // A NUL in the request line itself is refused by the HTTP parser (400), never passed on.
    const nul = await rawRequest(port, `GET /static/app.js\u0000../../petrel.toml HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    assert.equal(nul.status, 400);
    // Destinations with path characters are names, not paths: refused or a no-op, never a file touched.
    for (const dest of ['..%2F..%2Fvar', '%2Fetc%2Fpasswd', '..%5Cwindows', '%00', 'a%0Ab', '%1B%5B31m', '..']) {
      const r = await api.post(`/api/destinations/${dest}/suspend`, { reason: 'traversal test' });
      assert.ok(r.status === 400 || r.status === 404, `${dest}: ${r.status} ${r.text}`);
      const redirect = await api.post(`/api/destinations/${dest}/redirect`, { reason: 'traversal test', to: '127.0.0.1:25' });
      assert.ok(redirect.status === 400 || redirect.status === 404, `redirect ${dest}: ${redirect.status}`);
    }
    assert.deepEqual((await api.get('/api/overrides')).json().overrides ?? (await api.get('/api/overrides')).json(), [], 'no hold or redirect was made');
    // The viewer's own files are still served by exact name.
    assert.equal((await api.get('/static/app.js')).status, 200);
  });

  test('the session cookie: flags, unguessable, new per login, dead after logout; a wrong token sets nothing', async () => {
    const logins: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await raw(port, 'POST', '/login', { 'Content-Type': 'application/x-www-form-urlencoded' }, `token=${encodeURIComponent(TOKEN)}`);
      assert.equal(r.status, 303);
      assert.equal(r.headers.location, '/');
      const set = String(r.headers['set-cookie']);
      const attrs = set.split(';').map((s) => s.trim());
      assert.ok(attrs.includes('HttpOnly'), set);
      assert.ok(attrs.includes('SameSite=Strict'), set);
      assert.ok(attrs.includes('Path=/'), set);
      const maxAge = Number(attrs.find((a) => a.startsWith('Max-Age='))?.slice(8));
      assert.ok(maxAge > 0 && maxAge <= 24 * 3600, `Max-Age ${maxAge}`);
      assert.ok(!attrs.some((a) => a.toLowerCase().startsWith('domain=')), 'no Domain: the cookie stays with this host');
      const id = attrs[0]!.slice('petrel_session='.length);
      assert.ok(Buffer.from(id, 'base64url').length >= 16, 'at least 128 random bits');
      assert.ok(!id.includes(TOKEN) && !Buffer.from(id, 'base64url').toString('latin1').includes(TOKEN), 'the id is not the token');
      logins.push(id);
      assertSecurityHeaders(r, 'login');
    }
    assert.equal(new Set(logins).size, 3, 'a new id per login');
    const cookie = `petrel_session=${logins[0]}`;
    assert.equal((await raw(port, 'GET', '/api/queue', { Cookie: cookie })).status, 200);
    const out = await raw(port, 'POST', '/logout', { Cookie: cookie });
    assert.equal(out.status, 303);
    assert.match(String(out.headers['set-cookie']), /petrel_session=;.*Max-Age=0/);
    assert.equal((await raw(port, 'GET', '/api/queue', { Cookie: cookie })).status, 401, 'dead after logout');
    assert.equal((await raw(port, 'GET', '/api/queue', { Cookie: `petrel_session=${logins[1]}` })).status, 200, 'other sessions live on');
    // Wrong tokens: 401, no cookie; the token in the query string of a login does not count.
    for (const body of ['token=wrong', 'token=', '', `token=${encodeURIComponent(TOKEN)}x`, `tok=${encodeURIComponent(TOKEN)}`]) {
      const r = await raw(port, 'POST', '/login', { 'Content-Type': 'application/x-www-form-urlencoded' }, body);
      assert.equal(r.status, 401, body);
      assert.equal(r.headers['set-cookie'], undefined, body);
    }
    const q = await raw(port, 'POST', `/login?token=${encodeURIComponent(TOKEN)}`, { 'Content-Type': 'application/x-www-form-urlencoded' }, '');
    assert.equal(q.status, 401);
    // Logging in by GET is not a thing.
    const g = await raw(port, 'GET', `/login?token=${encodeURIComponent(TOKEN)}`);
    assert.equal(g.headers['set-cookie'], undefined);
  });

  test('request bodies are bounded; the listener answers on after abuse', async () => {
    const big = 'x'.repeat(2 * 1024 * 1024);
    const r = await raw(port, 'POST', `/api/messages/${qid}/retry`, { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' }, big).catch((e: Error) => ({ status: -1, text: e.message }) as Reply);
    assert.ok(r.status === 400 || r.status === 413 || r.status === -1, `oversized body: ${r.status}`);
    const bad = await api.post(`/api/messages/${qid}/retry`, 'not an object' as unknown as Record<string, unknown>);
    assert.equal(bad.status, 400);
    const proto = await raw(port, 'POST', `/api/messages/${qid}/suspend`, { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' }, '{"__proto__":{"admin":true},"constructor":{"prototype":{"x":1}},"reason":"x"}');
    assert.ok(proto.status === 200 || proto.status === 400);
    assert.equal(({} as Record<string, unknown>).admin, undefined, 'no prototype pollution');
    if (proto.status === 200) await api.post(`/api/messages/${qid}/resume`, { reason: 'undo' });
    assert.equal((await api.get('/api/queue')).status, 200);
  });
});

describe('admin security, without a token (loopback only)', () => {
  let p: InProcess;
  let port = 0;
  before(async () => {
    p = await startPetrel();
    port = p.petrel.admin!.bound!.port;
  });
  after(async () => {
    await p.stop();
    cleanup(p.dir);
  });

  test('only loopback Host names are answered (DNS rebinding), on every path', async () => {
    const hosts = ['attacker.example', 'localhost.attacker.example', '127.0.0.1.nip.io', `127.0.0.1:${port}.attacker.example`, '0.0.0.0', '[::ffff:7f00:1]', '2130706433', '127.1', 'localhost@attacker.example'];
    for (const path of ['/api/queue', '/metrics', '/', '/static/app.js', '/api/messages']) {
      for (const host of hosts) {
        const r = await raw(port, 'GET', path, { Host: host });
        assert.ok(r.status === 403, `${path} Host ${host}: ${r.status}`);
      }
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'localhost', '127.0.0.1']) {
        assert.equal((await raw(port, 'GET', path, { Host: host })).status, 200, `${path} Host ${host}`);
      }
    }
    // HTTP/1.0 without a Host header: refused.
    const r = await rawRequest(port, 'GET /api/queue HTTP/1.0\r\n\r\n');
    assert.equal(r.status, 403);
  });

  test('actions still need JSON from the same origin (no CSRF without a token either)', async () => {
    const path = '/api/destinations/x.example/suspend';
    for (const [type, origin] of [
      ['application/x-www-form-urlencoded', undefined],
      ['text/plain', 'http://evil.example'],
      ['multipart/form-data; boundary=x', undefined],
      ['application/json', 'http://evil.example'],
      ['application/json', 'null'],
    ] as Array<[string, string | undefined]>) {
      const headers: Record<string, string> = { 'Content-Type': type };
      if (origin) headers.Origin = origin;
      const r = await raw(port, 'POST', path, headers, '{"reason":"csrf"}');
      assert.equal(r.status, 403, `${type} from ${origin}`);
    }
    assert.deepEqual((await raw(port, 'GET', '/api/overrides')).json().overrides ?? (await raw(port, 'GET', '/api/overrides')).json(), []);
  });
});
