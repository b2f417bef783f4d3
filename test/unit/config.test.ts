// Unit tests for config/load: defaults, every error named with key and line, routes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseConfigText } from '../../src/config/load.js';

function problems(text: string): string[] {
  try {
    parseConfigText(text, 'petrel.toml', '/srv');
  } catch (e) {
    if (e instanceof ConfigError) return e.message.split('\n');
    throw e;
  }
  return [];
}

test('no file at all gives the documented defaults', () => {
  const c = parseConfigText('', '<defaults>', '/srv');
  assert.deepEqual(c.smtp.listen, [{ host: '127.0.0.1', port: 2525 }]);
  assert.equal(c.data_dir, '/srv/var');
  assert.equal(c.local.maildir, '/srv/var/mail');
  assert.deepEqual(c.local.domains, ['localhost']);
  assert.equal(c.smtp.max_recipients, 1000);
  assert.equal(c.smtp.max_message_size, 50 * 1024 * 1024);
  assert.deepEqual(c.smtp.relay_networks, ['127.0.0.0/8', '::1/128']);
  assert.deepEqual(c.queue.retry_intervals, [60_000, 300_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000]);
  assert.equal(c.queue.max_lifetime, 5 * 86_400_000);
  assert.equal(c.queue.delay_warning, 4 * 3_600_000);
  assert.equal(c.delivery.smarthost, null);
  assert.equal(c.delivery.smtp_port, 25);
  assert.equal(c.delivery.max_recipients_per_transaction, 100);
  assert.deepEqual(c.admin.listen, { host: '127.0.0.1', port: 8025 });
  assert.equal(c.dsn.max_received_headers, 30);
});

test('the contract example parses', () => {
  const c = parseConfigText(
    `hostname = "mx.example.test"
data_dir = "./var"
[smtp]
listen = ["127.0.0.1:2525"]
max_recipients = 1000
max_message_size = "50MB"
relay_networks = ["127.0.0.0/8", "::1/128"]
[queue]
retry_intervals = ["1m","5m","15m","30m","1h","2h","4h"]
max_lifetime = "5d"
delay_warning = "4h"
[delivery]
smarthost = ""
smtp_port = 25
dns_servers = ["127.0.0.1:5353"]
[[routes]]
domain = "legacy.example"
via = "smtp:127.0.0.1:2600"
[[routes]]
domain = "lmtp.example"
via = "lmtp:/run/dovecot/lmtp"
tls = "required"
[local]
domains = ["localhost"]
maildir = "./var/mail"
[admin]
listen = "127.0.0.1:8025"
token = ""
`,
    'petrel.toml',
    '/srv',
  );
  assert.equal(c.hostname, 'mx.example.test');
  assert.deepEqual(c.delivery.dns_servers, ['127.0.0.1:5353']);
  assert.deepEqual(c.routes[0], { domain: 'legacy.example', via: { kind: 'smtp', host: '127.0.0.1', port: 2600 }, tls: 'opportunistic' });
  assert.deepEqual(c.routes[1]!.via, { kind: 'lmtp', socket: '/run/dovecot/lmtp' });
  assert.equal(c.routes[1]!.tls, 'required');
});

test('every bad value is reported with its key and line, not just the first', () => {
  const p = problems(`hostname = "x"
[smtp]
max_recipients = "lots"
listen = ["nowhere"]
bogus = 1
[queue]
max_lifetime = "5 days"
retry_intervals = []
[[routes]]
domain = "a.example"
via = "carrier-pigeon:coop"
[delivery]
smarthost = "host:99999"
[nonsense]
x = 1
`);
  const expect = [
    'petrel.toml:3: smtp.max_recipients: must be an integer',
    'petrel.toml:4: smtp.listen: item 1: must be "host:port"',
    'petrel.toml:5: smtp.bogus: unknown key',
    'petrel.toml:7: queue.max_lifetime: must be a duration',
    'petrel.toml:8: queue.retry_intervals: must not be empty',
    'petrel.toml:11: routes[0].via: unknown transport "carrier-pigeon"',
    'petrel.toml:13: delivery.smarthost: must be "host:port"',
    'petrel.toml:14: nonsense: unknown section',
  ];
  assert.equal(p.length, expect.length, p.join('\n'));
  expect.forEach((e, i) => assert.ok(p[i]!.startsWith(e), `${p[i]} should start with ${e}`));
});

test('a TOML syntax error names its line', () => {
  const p = problems('hostname = "x"\n[smtp\nlisten = 1\n');
  assert.equal(p.length, 1);
  assert.match(p[0]!, /^petrel\.toml:2: \(syntax\): /);
});

test('a non-loopback admin listener needs a token', () => {
  const p = problems('[admin]\nlisten = "0.0.0.0:8025"\n');
  assert.match(p[0]!, /^petrel\.toml:\?: admin\.token: must be set|^petrel\.toml:1: admin\.token/);
  assert.doesNotThrow(() => parseConfigText('[admin]\nlisten = "0.0.0.0:8025"\ntoken = "s3cret"\n', 'x', '/'));
});

test('[delivery] dane = true needs dns_servers (a validating resolver whose AD bit is trusted); off by default', () => {
  assert.equal(parseConfigText('', 'x', '/').delivery.dane, false);
  const p = problems('[delivery]\ndane = true\n');
  assert.equal(p.length, 1, p.join('\n'));
  assert.match(p[0]!, /delivery\.dane: needs delivery\.dns_servers/);
  assert.equal(parseConfigText('[delivery]\ndane = true\ndns_servers = ["127.0.0.1:53"]\n', 'x', '/').delivery.dane, true);
  assert.match(problems('[delivery]\ndane = "yes"\n')[0]!, /delivery\.dane/);
});

test('duplicate routes and missing route keys are errors', () => {
  const p = problems('[[routes]]\ndomain = "a.example"\nvia = "maildir:/m"\n[[routes]]\ndomain = "A.example"\nvia = "directory:/d"\n[[routes]]\nvia = "smtp:h:25"\n');
  assert.ok(p.some((l) => /routes\[1\]\.domain: "a\.example" already has a route/.test(l)), p.join('\n'));
  assert.ok(p.some((l) => /routes\[2\]\.domain: is required/.test(l)), p.join('\n'));
});
