// Unit tests for local/aliases (the file's syntax, problems reported with file
// and line) and local/expand (bare targets, remote targets, "\name", self
// references, catch-alls, loops and depth -> alias-loop, unknown users,
// ORCPT/NOTIFY, de-duplication, bounded work on shared sub-lists).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAliases } from '../../src/local/aliases.js';
import { expandOne, expandRecipients, MAX_ALIAS_DEPTH, type ExpandTables } from '../../src/local/expand.js';

const DOMAINS = new Set(['a.test', 'b.test']);

function tables(text: string, users: string[] | null = null): ExpandTables {
  const { table, problems } = parseAliases(text, 'aliases', DOMAINS);
  assert.deepEqual(problems, [], 'test aliases parse cleanly');
  const set = users ? new Set(users) : null;
  return {
    isLocalDomain: (d) => DOMAINS.has(d),
    aliases: table,
    isUser: (a) => !set || set.has(a.toLowerCase()) || a.toLowerCase().startsWith('postmaster@'),
    restricted: set !== null,
  };
}

const rcpt = (address: string, extra: Partial<{ orcpt: string; notify: string }> = {}) => ({ address, orcpt: extra.orcpt ?? null, notify: extra.notify ?? null });

test('the file: comments, continuation lines, three kinds of name, stray commas', () => {
  const text = [
    '# a comment',
    'sales: alice, bob@elsewhere.example   # trailing comment',
    'Info@A.test: carol,',
    '  dave',
    '@b.test: catch',
    'a#b: x',
    '',
  ].join('\n');
  const { table, problems } = parseAliases(text, '/etc/petrel/aliases', DOMAINS);
  assert.deepEqual(problems, []);
  assert.deepEqual(table.bare.get('sales')!.targets, [
    { local: 'alice', domain: null, mailbox: false },
    { local: 'bob', domain: 'elsewhere.example', mailbox: false },
  ]);
  assert.equal(table.bare.get('sales')!.where, '/etc/petrel/aliases:2');
  assert.deepEqual(table.exact.get('info@a.test')!.targets.map((t) => t.local), ['carol', 'dave']);
  assert.equal(table.catchAll.get('b.test')!.targets[0]!.local, 'catch');
  assert.ok(table.bare.has('a#b'), 'a "#" inside a name is not a comment');
});

test('malformed entries are reported with file and line and skipped whole; duplicates keep the first', () => {
  const text = [
    'good: alice', // 1
    'no colon here', // 2
    'pipe: |/usr/bin/thing', // 3
    'file: alice, /var/mail/x', // 4
    'inc: :include:/etc/list', // 5
    'bad target: alice', // 6
    'empty:', // 7
    'other@not-local.example: x', // 8
    '@not-local.example: x', // 9
    'good: bob', // 10
    '  , carol', // 11 (continues line 10's entry)
    'broken: al ice', // 12
  ].join('\n');
  const { table, problems } = parseAliases(text, 'f', DOMAINS);
  assert.deepEqual(
    problems.map((p) => p.split(': ')[0]),
    ['f:2', 'f:3', 'f:4', 'f:5', 'f:6', 'f:7', 'f:8', 'f:9', 'f:10', 'f:12'],
  );
  assert.match(problems[1]!, /program, file and :include: targets are not supported/);
  assert.match(problems[8]!, /already defined at f:1/);
  assert.deepEqual([...table.bare.keys()], ['good']);
  assert.equal(table.bare.get('good')!.targets[0]!.local, 'alice');
  assert.ok(!table.bare.has('file'), 'an entry with one bad target is not half-used');
  const lead = parseAliases('  x\nok: y\n', 'g', DOMAINS);
  assert.deepEqual(lead.problems, ['g:1: continuation line with no entry before it']);
});

test('a bare alias is valid in every local domain; a bare target stays in the domain of the address', () => {
  const t = tables('info: alice, ops@remote.example\n');
  assert.deepEqual(expandOne('info@a.test', t), { kind: 'addresses', addresses: ['alice@a.test', 'ops@remote.example'] });
  assert.deepEqual(expandOne('INFO@b.test', t), { kind: 'addresses', addresses: ['alice@b.test', 'ops@remote.example'] });
  assert.deepEqual(expandOne('info@remote.example', t), { kind: 'addresses', addresses: ['info@remote.example'] }, 'non-local domains are never expanded');
});

test('name@domain wins over the bare name; nested aliases expand; "\\name" and a self reference are mailboxes', () => {
  const t = tables(['info: generic', 'info@b.test: special', 'team: alice, lead', 'lead: bob', 'alice: \\alice, alice@remote.example', 'bob: bob, bob@backup.example'].join('\n'));
  assert.deepEqual(expandOne('info@a.test', t), { kind: 'addresses', addresses: ['generic@a.test'] });
  assert.deepEqual(expandOne('info@b.test', t), { kind: 'addresses', addresses: ['special@b.test'] });
  assert.deepEqual(expandOne('team@a.test', t), {
    kind: 'addresses',
    addresses: ['alice@a.test', 'alice@remote.example', 'bob@a.test', 'bob@backup.example'],
  });
});

test('a -> b -> a is a loop, and so is nesting deeper than the limit', () => {
  const t = tables('a: b\nb: a\n');
  const one = expandOne('a@a.test', t);
  assert.equal(one.kind, 'loop');
  assert.match((one as { chain: string }).chain, /^a@a\.test -> b@a\.test -> a@a\.test$/);
  const chain = Array.from({ length: MAX_ALIAS_DEPTH + 1 }, (_, i) => `l${i}: l${i + 1}`).join('\n');
  const deep = expandOne('l0@a.test', tables(chain));
  assert.equal(deep.kind, 'loop');
  assert.match((deep as { chain: string }).chain, /more than 10 levels/);
  const justEnough = Array.from({ length: MAX_ALIAS_DEPTH }, (_, i) => `m${i}: m${i + 1}`).join('\n');
  assert.deepEqual(expandOne('m0@a.test', tables(justEnough)), { kind: 'addresses', addresses: [`m${MAX_ALIAS_DEPTH}@a.test`] });
});

test('a loop fails the whole original recipient once, with ORCPT, destination alias-loop; other recipients go on', () => {
  const t = tables('a: b, carol\nb: a\n');
  const { recipients, notes } = expandRecipients([rcpt('a@a.test', { notify: 'FAILURE' }), rcpt('dave@a.test')], t);
  assert.deepEqual(recipients, [
    { address: 'a@a.test', orcpt: 'rfc822;a@a.test', notify: 'FAILURE', destination: 'alias-loop' },
    { address: 'dave@a.test', orcpt: null, notify: null },
  ]);
  assert.equal(notes.length, 1);
  assert.match(notes[0]!, /alias loop for <a@a\.test>: a@a\.test -> b@a\.test -> a@a\.test/);
});

test('expanded recipients keep NOTIFY, get ORCPT (unless given), and are de-duplicated across the message', () => {
  const t = tables('team: alice, bob\nops: bob, carol@remote.example\n');
  const { recipients } = expandRecipients([rcpt('team@a.test', { notify: 'FAILURE,DELAY' }), rcpt('ops@a.test', { orcpt: 'rfc822;Ops@A.test' }), rcpt('alice@a.test')], t);
  assert.deepEqual(recipients, [
    { address: 'alice@a.test', orcpt: 'rfc822;team@a.test', notify: 'FAILURE,DELAY' },
    { address: 'bob@a.test', orcpt: 'rfc822;team@a.test', notify: 'FAILURE,DELAY' },
    { address: 'carol@remote.example', orcpt: 'rfc822;Ops@A.test', notify: null },
  ]);
});

test('NOTIFY=SUCCESS on an alias: the alias is queued as alias-expanded, its addresses without SUCCESS; a plain user is untouched', () => {
  const t = tables('team: alice, bob\nsolo: carol\nself: \\self, dave\n');
  const { recipients } = expandRecipients(
    [rcpt('team@a.test', { notify: 'SUCCESS,FAILURE' }), rcpt('solo@a.test', { notify: 'SUCCESS', orcpt: 'rfc822;Solo@A.test' }), rcpt('self@a.test', { notify: 'SUCCESS,DELAY' }), rcpt('erin@a.test', { notify: 'SUCCESS' })],
    t,
  );
  assert.deepEqual(recipients, [
    { address: 'team@a.test', orcpt: 'rfc822;team@a.test', notify: 'SUCCESS,FAILURE', destination: 'alias-expanded' },
    { address: 'alice@a.test', orcpt: 'rfc822;team@a.test', notify: 'FAILURE' },
    { address: 'bob@a.test', orcpt: 'rfc822;team@a.test', notify: 'FAILURE' },
    { address: 'solo@a.test', orcpt: 'rfc822;Solo@A.test', notify: 'SUCCESS', destination: 'alias-expanded' },
    { address: 'carol@a.test', orcpt: 'rfc822;Solo@A.test', notify: 'NEVER' },
    { address: 'self@a.test', orcpt: 'rfc822;self@a.test', notify: 'SUCCESS,DELAY', destination: 'alias-expanded' },
    { address: 'self@a.test', orcpt: 'rfc822;self@a.test', notify: 'DELAY' },
    { address: 'dave@a.test', orcpt: 'rfc822;self@a.test', notify: 'DELAY' },
    { address: 'erin@a.test', orcpt: null, notify: 'SUCCESS' },
  ]);
});

test('catch-all: only for the address the sender wrote, not users or aliases; its targets are not caught again', () => {
  const restricted = tables('@a.test: catcher\nsales: bob\n', ['alice@a.test']);
  assert.deepEqual(expandOne('alice@a.test', restricted), { kind: 'addresses', addresses: ['alice@a.test'] });
  assert.deepEqual(expandOne('sales@a.test', restricted), { kind: 'addresses', addresses: ['bob@a.test'] });
  assert.deepEqual(expandOne('random@a.test', restricted), { kind: 'addresses', addresses: ['catcher@a.test'] });
  assert.deepEqual(expandOne('postmaster@a.test', restricted), { kind: 'addresses', addresses: ['postmaster@a.test'] });
  assert.deepEqual(expandOne('random@b.test', restricted), { kind: 'unknown' }, 'the catch-all is per domain');
  // Without a users file every non-alias address of the domain is caught.
  const open = tables('@a.test: catcher\n');
  assert.deepEqual(expandOne('anyone@a.test', open), { kind: 'addresses', addresses: ['catcher@a.test'] });
  assert.deepEqual(expandOne('anyone@b.test', open), { kind: 'addresses', addresses: ['anyone@b.test'] });
});

test('an unknown user (users_file set) is queued as decided: unknown-user', () => {
  const t = tables('sales: bob\n', ['bob@a.test']);
  const { recipients } = expandRecipients([rcpt('nobody@a.test'), rcpt('sales@a.test')], t);
  assert.deepEqual(recipients, [
    { address: 'nobody@a.test', orcpt: 'rfc822;nobody@a.test', notify: null, destination: 'unknown-user' },
    { address: 'bob@a.test', orcpt: 'rfc822;sales@a.test', notify: null },
  ]);
});

test('shared sub-lists are expanded once: work stays linear', () => {
  // Each level names the next level twice: 2^40 paths if expanded naively.
  const lines = [];
  for (let i = 0; i < 40; i++) lines.push(`x${i}: y${i}, z${i}`, `y${i}: x${i + 1}`, `z${i}: x${i + 1}`);
  const t = tables(lines.join('\n'));
  // Linear: the address written, then each alias target at most once (every list is expanded
  // once; a second mention of x(i+1) is looked up and found done) - not 2^40 paths. Counted by
  // the addresses looked at (each asks once whether its domain is local); past the bound the
  // expansion is stopped, so an exponential one fails here at once instead of running for hours.
  const targets = 40 * (2 + 1 + 1);
  let visits = 0;
  const counted: ExpandTables = {
    ...t,
    isLocalDomain: (d) => {
      if (++visits > 1 + targets) throw new Error(`exponential: more than ${1 + targets} addresses looked at for ${targets} alias targets`);
      return t.isLocalDomain(d);
    },
  };
  const one = expandOne('x0@a.test', counted, 1000);
  assert.deepEqual(one, { kind: 'addresses', addresses: ['x40@a.test'] });
  assert.ok(visits > 40, `the whole chain was walked (${visits} addresses looked at)`);
});
