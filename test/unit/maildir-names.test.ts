// Unit tests for delivery/maildir's naming: mailbox paths can never leave
// the Maildir root (path traversal), and file names follow the Maildir spec
// and are unique.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mailboxPath } from '../../src/core/mailbox-path.js';
import { hostPart, uniqueName } from '../../src/delivery/maildir.js';

test('mailboxPath: root/<domain>/<user>, lower-cased, quotes removed', () => {
  assert.equal(mailboxPath('/srv/mail', 'Alice@Example.test'), '/srv/mail/example.test/alice');
  assert.equal(mailboxPath('/srv/mail/', '"john.doe"@a.test'), '/srv/mail/a.test/john.doe');
  assert.equal(mailboxPath('relative/root', 'bob@a.test')!.endsWith('/relative/root/a.test/bob'), true);
});

test('mailboxPath: nothing can name a path outside the root', () => {
  const bad = [
    '..@a.test',
    '.hidden@a.test',
    '"../../etc"@a.test',
    '"a/b"@a.test',
    '"a\\\\b"@a.test',
    '"../x"@a.test',
    'x@..',
    'x@.a.test',
    '"x\x00y"@a.test',
    '"line\nbreak"@a.test',
    '""@a.test',
    `${'a'.repeat(256)}@a.test`,
  ];
  for (const a of bad) assert.equal(mailboxPath('/srv/mail', a), null, JSON.stringify(a));
  // Dots inside a name are fine (not traversal).
  assert.equal(mailboxPath('/srv/mail', 'a..b@a.test'), '/srv/mail/a.test/a..b');
});

test('uniqueName: <sec>.M<usec>P<pid>Q<n>R<random>.<host>, never repeated', () => {
  const names = new Set<string>();
  for (let i = 0; i < 10_000; i++) names.add(uniqueName());
  assert.equal(names.size, 10_000);
  const n = [...names][0]!;
  const m = /^(\d+)\.M(\d+)P(\d+)Q(\d+)R([0-9a-f]{8})\.(.+)$/.exec(n);
  assert.ok(m, n);
  assert.ok(Math.abs(Number(m[1]) - Date.now() / 1000) < 60);
  assert.ok(Number(m[2]) < 1_000_000);
  assert.equal(Number(m[3]), process.pid);
  assert.ok(!m[6]!.includes('/') && !m[6]!.includes(':'));
});

test('hostPart: "/" and ":" are written \\057 and \\072 (the Maildir spec)', () => {
  assert.equal(hostPart('mx/1:a'), 'mx\\0571\\072a');
  assert.equal(hostPart(''), 'localhost');
});
