// Unit tests for local/recipients and local/users: the RCPT-time check
// (users, aliases valid in every local domain, catch-alls, postmaster), files
// re-read when they change (also when replaced by rename) and on reload(),
// an unreadable file keeping the previous table, problems reported with file
// and line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LocalRecipients } from '../../src/local/recipients.js';
import { parseUsers } from '../../src/local/users.js';
import { cleanup, tempDir, waitFor } from '../helpers/petrel-harness.js';

test('users file: one address a line, comments, bad lines reported with file and line', () => {
  const { users, problems } = parseUsers('# users\nAlice@A.test\nnot an address\nbob@a.test # the boss\nx@y@z\n', 'users.txt');
  assert.deepEqual([...users], ['alice@a.test', 'bob@a.test']);
  assert.deepEqual(problems, ['users.txt:3: not an address: not an address', 'users.txt:5: not an address: x@y@z']);
});

test('exists(): users, aliases in every local domain, catch-alls, postmaster', () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'users'), 'alice@a.test\nalice@b.test\nalice@c.test\n');
    writeFileSync(join(dir, 'aliases'), 'sales: alice\n@b.test: alice@a.test\n');
    const problems: string[] = [];
    const l = new LocalRecipients({ domains: ['a.test', 'b.test', 'c.test'], usersFile: join(dir, 'users'), aliasesFile: join(dir, 'aliases'), onProblem: (p) => problems.push(p) });
    assert.equal(l.exists('alice@a.test'), true);
    assert.equal(l.exists('ALICE@a.test'), true);
    assert.equal(l.exists('sales@a.test'), true);
    assert.equal(l.exists('sales@c.test'), true, 'an alias local part is valid in every local domain');
    assert.equal(l.exists('whoever@b.test'), true, 'caught by the catch-all');
    assert.equal(l.exists('whoever@a.test'), false);
    assert.equal(l.exists('postmaster@c.test'), true);
    assert.deepEqual(problems, []);
  } finally {
    cleanup(dir);
  }
});

test('a local target that is no user is reported (with the alias line) but still used', () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir, 'users'), 'alice@a.test\n');
    writeFileSync(join(dir, 'aliases'), 'ok: alice\nodd: ghost\n');
    const problems: string[] = [];
    const l = new LocalRecipients({ domains: ['a.test'], usersFile: join(dir, 'users'), aliasesFile: join(dir, 'aliases'), onProblem: (p) => problems.push(p) });
    assert.deepEqual(problems, [`${join(dir, 'aliases')}:2: target <ghost@a.test> is not in the users file; it is delivered to that mailbox anyway`]);
    assert.deepEqual(l.expand([{ address: 'odd@a.test', orcpt: null, notify: null }]), [{ address: 'ghost@a.test', orcpt: 'rfc822;odd@a.test', notify: null }]);
  } finally {
    cleanup(dir);
  }
});

test('files are re-read when changed or replaced, and on reload(); an unreadable file keeps the old table', async () => {
  const dir = tempDir();
  const aliases = join(dir, 'aliases');
  const users = join(dir, 'users');
  writeFileSync(aliases, 'first: alice\n');
  writeFileSync(users, 'alice@a.test\n');
  const problems: string[] = [];
  const l = new LocalRecipients({ domains: ['a.test'], usersFile: users, aliasesFile: aliases, onProblem: (p) => problems.push(p) });
  l.watch(50);
  try {
    assert.equal(l.exists('first@a.test'), true);
    assert.equal(l.exists('second@a.test'), false);
    writeFileSync(aliases, 'first: alice\nsecond: alice\nbroken line\n');
    await waitFor(() => l.exists('second@a.test'), 5000, 'the changed aliases file to be re-read');
    assert.ok(problems.some((p) => p === `${aliases}:3: expected "name: target, target"`), problems.join('\n'));
    // Replaced by rename, as editors and config tools do.
    writeFileSync(join(dir, 'users.new'), 'alice@a.test\nbob@a.test\n');
    renameSync(join(dir, 'users.new'), users);
    await waitFor(() => l.exists('bob@a.test'), 5000, 'the replaced users file to be re-read');
    // Gone: the previous tables stay.
    rmSync(aliases);
    await waitFor(() => problems.some((p) => p.includes('cannot read: ENOENT')), 5000, 'the missing file to be reported');
    assert.equal(l.exists('second@a.test'), true);
    // reload() (SIGHUP) without waiting for the poll.
    l.unwatch();
    writeFileSync(aliases, 'third: alice\n');
    l.reload();
    assert.equal(l.exists('third@a.test'), true);
    assert.equal(l.exists('second@a.test'), false);
  } finally {
    l.unwatch();
    cleanup(dir);
  }
});
