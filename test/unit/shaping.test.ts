// Unit tests for delivery/smtp/shaping and config/shaping: rates, the token
// bucket (no wall clock: times are passed in), provider matching by MX host
// suffix or domain (operator rules over the built-in ones), the reply
// tables, AIMD steps, and [[shaping]] errors named with their keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeRules, parseRate, Provider, Shaper, TokenBucket, DEFAULT_RULES, type ShapingRule } from '../../src/delivery/smtp/shaping.js';
import { parseConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/load.js';
import type { MailEvent } from '../../src/log/events.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test('parseRate: "60/m", "10/s", "3000/h"; anything else is null', () => {
  assert.deepEqual(parseRate('60/m'), { count: 60, perMs: 60_000 });
  assert.deepEqual(parseRate(' 10 / s '), { count: 10, perMs: 1000 });
  assert.deepEqual(parseRate('3000/h'), { count: 3000, perMs: 3_600_000 });
  for (const bad of ['0/m', '60', '60/min', '-1/s', '1.5/s', '']) assert.equal(parseRate(bad), null, bad);
});

test('TokenBucket: one second of burst, then paced; the wait is given, nothing spins', () => {
  const b = new TokenBucket({ count: 600, perMs: 60_000 }, 0); // 10/s: 10 at once
  let taken = 0;
  while (b.take(0, 1) === 0) taken++;
  assert.equal(taken, 10);
  assert.equal(b.peek(0, 1), 100, 'the next token in 100 ms');
  assert.equal(b.take(100, 1), 0);
  assert.equal(b.peek(100, 0.5), 200, 'at half rate: 200 ms');
  const slow = new TokenBucket({ count: 60, perMs: 60_000 }, 0); // 1/s: burst of 1
  assert.equal(slow.take(0, 1), 0);
  assert.equal(slow.take(0, 1), 1000);
});

test('providers: MX host suffix rules roll many domains into one; an exact domain rule; operator rules replace built-in ones', () => {
  const own: ShapingRule[] = [{ match: '*.google.com', max_connections: 3 }, { match: 'special.example', max_connections: 1 }];
  const s = new Shaper({ rules: mergeRules(own) });
  const a = s.providerFor('gmail.com', ['gmail-smtp-in.l.google.com', 'alt1.gmail-smtp-in.l.google.com']);
  const b = s.providerFor('customer.example', ['aspmx.l.google.com']);
  assert.ok(a && a === b, 'one provider for every domain behind Google');
  assert.equal(a.name, 'google.com');
  assert.equal(a.rule.max_connections, 3, "the operator's rule replaced the built-in one");
  assert.equal(s.providerFor('special.example', ['mx.elsewhere.example'])!.name, 'special.example');
  assert.equal(s.providerFor('hotmail.com', ['hotmail-com.olc.protection.outlook.com'])!.name, 'outlook.com', 'built-in rules stay');
  assert.equal(s.providerFor('plain.example', ['mx.plain.example']), null, 'no rule: no provider');
  assert.equal(mergeRules([]).length, DEFAULT_RULES.length);
  assert.equal(s.list().length, 3, 'one provider per rule met, no more');
});

test('reply tables: too fast, blocked, neither; the operator extends them', () => {
  const s = new Shaper({ rules: [], feedback: { throttleReplies: ['^452 4\\.3\\.1 slow down'], blockReplies: ['^550 5\\.7\\.350'] } });
  for (const r of [
    '421 4.7.28 [1.2.3.4] Our system has detected an unusual rate of unsolicited mail',
    '450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages',
    '451 4.7.500 Server busy. Please try again later',
    '451 4.7.650 The mail server has been temporarily rate limited',
    '421 4.7.0 [TSS04] Messages from 1.2.3.4 temporarily deferred due to unexpected volume',
    '452 4.3.1 slow down please',
  ])
    assert.equal(s.classify(r), 'throttle', r);
  for (const r of ['554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org', '550 5.7.606 Access denied, banned sending IP', '550 5.7.350 custom']) assert.equal(s.classify(r), 'block', r);
  for (const r of ['450 4.2.1 mailbox busy', '550 5.1.1 no such user', '451 4.7.1 greylisted', '250 2.0.0 ok', 'garbage']) assert.equal(s.classify(r), null, r);
});

test('AIMD: a cut halves (once a second), recovery adds a tenth per step after the hold, with events', () => {
  const events: MailEvent[] = [];
  const s = new Shaper({ rules: [{ match: '*.p.test', max_connections: 20, message_rate: { count: 600, perMs: 60_000 } }], feedback: { throttleHoldMs: 0, recoveryMessages: 2 }, onEvent: (e) => events.push(e) });
  const p = s.providerFor('d.test', ['mx.p.test'])!;
  s.throttled(p, '421 4.7.28 too fast', 'mx.p.test [127.0.0.2]');
  s.throttled(p, '421 4.7.28 too fast', 'mx.p.test [127.0.0.2]');
  assert.equal(p.factor, 0.5, 'two replies of one burst: one cut');
  assert.equal(p.maxConnections, 10);
  assert.equal(events.length, 1);
  assert.equal(events[0]!.event, 'throttled');
  assert.equal(events[0]!.reply, '421 4.7.28 too fast');
  assert.equal(events[0]!.remote, 'mx.p.test [127.0.0.2]');
  for (let i = 0; i < 10; i++) s.accepted(p);
  assert.equal(p.factor, 1, 'five steps of 0.1');
  const ups = events.filter((e) => e.event === 'unthrottled');
  assert.equal(ups.length, 5);
  assert.match(ups.at(-1)!.detail!, /recovered/);
});

test('block: one suspended event, a second block reply adds none; resume ends it with one event', () => {
  const events: MailEvent[] = [];
  const resumed: Provider[] = [];
  const s = new Shaper({ rules: [{ match: '*.p.test' }], feedback: { blockSuspendMs: 60_000 }, onEvent: (e) => events.push(e), onResume: (p) => resumed.push(p) });
  const p = s.providerFor('d.test', ['mx.p.test'])!;
  s.blocked(p, '554 5.7.1 blocked', 'mx');
  s.blocked(p, '554 5.7.1 blocked', 'mx');
  assert.ok(p.suspended);
  assert.deepEqual(events.map((e) => e.event), ['suspended']);
  assert.equal(s.snapshot()[0]!.suspend_reply, '554 5.7.1 blocked');
  p.noteHeld('a.example');
  p.noteHeld('a.example');
  assert.deepEqual(s.resume(p, 'operator'), ['a.example'], 'the destinations put back meanwhile, for the operator to make due');
  assert.equal(s.resume(p, 'operator'), null, 'nothing to resume twice');
  assert.deepEqual(events.map((e) => e.event), ['suspended', 'resumed']);
  assert.deepEqual(resumed, [p]);
  s.close();
});

test('[[shaping]] config: parsed, and every bad entry named with its key', () => {
  const c = parseConfigText('[[shaping]]\nmatch = "*.Google.com"\nmax_connections = 5\nconnection_rate = "30/m"\nmessages_per_connection = 10\nmessage_rate = "100/s"\n', 'petrel.toml', '/tmp');
  assert.deepEqual(c.shaping, [{ match: '*.google.com', max_connections: 5, connection_rate: { count: 30, perMs: 60_000 }, messages_per_connection: 10, message_rate: { count: 100, perMs: 1000 } }]);
  assert.equal(c.delivery.shaping, true);
  let problems: string[] = [];
  try {
    parseConfigText('[[shaping]]\nmatch = "*.a.test"\nmessage_rate = "fast"\nmax_conections = 3\n[[shaping]]\nmax_connections = 0\n[[shaping]]\nmatch = "*.a.test"\n[delivery]\nthrottle_replies = ["("]\n', 'petrel.toml', '/tmp');
  } catch (e) {
    problems = (e as ConfigError).problems.map((p) => `${p.key}: ${p.message}`);
  }
  const text = problems.join('\n');
  assert.match(text, /shaping\[0\]\.message_rate: must be a rate/);
  assert.match(text, /shaping\[0\]\.max_conections: unknown key; did you mean max_connections\?/);
  assert.match(text, /shaping\[1\]\.match: is required/);
  assert.match(text, /shaping\[1\]\.max_connections: must be an integer/);
  assert.match(text, /delivery\.throttle_replies: .*regular expression/);
});

test('reload: a provider keeps its object and throttle state and takes the new limits; a removed rule takes its limits and suspension away', () => {
  const events: MailEvent[] = [];
  const s = new Shaper({ rules: [{ match: '*.p.test', max_connections: 10, message_rate: { count: 600, perMs: 60_000 } }, { match: '*.q.test' }], onEvent: (e) => events.push(e) });
  const p = s.providerFor('d.test', ['mx.p.test'])!;
  const q = s.providerFor('e.test', ['mx.q.test'])!;
  s.throttled(p, '421 4.7.28 slow down', 'mx');
  s.blocked(q, '554 5.7.1 blocked', 'mx');
  const bucket = p.messages;
  s.reconfigure([{ match: '*.p.test', max_connections: 4, message_rate: { count: 120, perMs: 60_000 } }], { throttleReplies: ['^452 4\\.3\\.1 go slower'] });
  assert.equal(s.providerFor('d.test', ['mx.p.test']), p, 'the same provider object (the pool counts its connections on it)');
  assert.equal(p.factor, 0.5, 'the throttle state stays');
  assert.equal(p.maxConnections, 2, 'the new limit, at the current factor');
  assert.notEqual(p.messages, bucket, 'a changed rate starts a new bucket');
  assert.equal(s.classify('452 4.3.1 go slower please'), 'throttle', 'the new reply table');
  assert.equal(s.providerFor('e.test', ['mx.q.test']), null, 'the removed rule matches nothing');
  assert.equal(q.suspended, false, 'its suspension ended');
  assert.equal(q.maxConnections, Infinity, 'and it has no limits left');
  assert.deepEqual(s.list(), [p], 'petrel queue shows the providers of the current rules');
  assert.equal(s.get('q.test'), undefined);
  assert.ok(events.some((e) => e.event === 'resumed' && /rule was removed by a reload/.test(e.detail ?? '')));
  s.close();
});

test('state file: a restart keeps a suspension and a throttled factor; a bad file is named and ignored', () => {
  const dir = mkdtempSync(join(tmpdir(), 'petrel-shaping-'));
  const statePath = join(dir, 'shaping.json');
  const rules: ShapingRule[] = [{ match: '*.p.test', max_connections: 8 }, { match: '*.q.test' }, { match: '*.r.test' }];
  try {
    const a = new Shaper({ rules, statePath, feedback: { blockSuspendMs: 3_600_000 } });
    const p = a.providerFor('d.test', ['mx.p.test'])!;
    const q = a.providerFor('e.test', ['mx.q.test'])!;
    a.providerFor('f.test', ['mx.r.test']);
    a.throttled(p, '421 4.7.28 slow down', 'mx');
    a.blocked(q, '554 5.7.1 blocked', 'mx');
    a.close(); // writes the state now
    const saved = JSON.parse(readFileSync(statePath, 'utf8')) as { providers: Record<string, unknown> };
    assert.deepEqual(Object.keys(saved.providers).sort(), ['p.test', 'q.test'], 'only providers away from their configured limits');

    const b = new Shaper({ rules, statePath });
    const p2 = b.get('p.test')!;
    const q2 = b.get('q.test')!;
    assert.equal(p2.factor, 0.5);
    assert.equal(p2.maxConnections, 4);
    assert.ok(q2.suspended, 'the block survives the restart');
    assert.equal(q2.suspendedUntil, q.suspendedUntil);
    assert.equal(b.snapshot().find((x) => x.provider === 'q.test')!.suspend_reply, '554 5.7.1 blocked');
    b.resume(q2, 'operator');
    b.close();
    assert.deepEqual(Object.keys((JSON.parse(readFileSync(statePath, 'utf8')) as { providers: object }).providers), ['p.test'], 'the resume is written too');

    // Without the rule any more, the saved state of that provider is not taken.
    const c = new Shaper({ rules: [{ match: '*.q.test' }], statePath });
    assert.equal(c.get('p.test'), undefined);
    c.close();

    writeFileSync(statePath, '{ not json');
    const problems: string[] = [];
    const d = new Shaper({ rules, statePath, onStateProblem: (t) => problems.push(t) });
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /shaping\.json is not a shaping state file .*ignored/);
    assert.equal(d.providerFor('d.test', ['mx.p.test'])!.factor, 1, 'starts at the configured limits');
    d.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
