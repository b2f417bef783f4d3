// Starting a cluster node (backend = "postgres") against a database that is
// not there: a clear error naming the URL without its password, exit 69
// (EX_UNAVAILABLE, so the service manager restarts it), and nothing listening.
// The admin commands say the same instead of a stack trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { baseConfig, cleanup, closedPort, spawnPetrel, tempDir } from '../helpers/petrel-harness.js';

test('a node whose database cannot be reached exits 69 naming the URL without its password', async () => {
  const dir = tempDir();
  try {
    const dbPort = await closedPort(); // nothing listens there
    const file = join(dir, 'petrel.toml');
    writeFileSync(file, baseConfig(dir, `[queue]\nbackend = "postgres"\npostgres_url = "postgres://petrel:s3cret-pw@127.0.0.1:${dbPort}/petrel"\nnode_name = "n1"\n[admin]\nlisten = ""\n`));
    const start = spawnPetrel(['start', '--config', file], dir);
    assert.equal(await start.exited, 69, start.stderr());
    assert.match(start.stderr(), new RegExp(`cannot reach the queue database postgres://petrel:\\*\\*\\*@127\\.0\\.0\\.1:${dbPort}/petrel`));
    assert.doesNotMatch(start.stderr() + start.stdout(), /s3cret-pw/, 'the password is never printed');
    assert.doesNotMatch(start.stderr(), /^\s+at /m, 'no stack trace');
    const queue = spawnPetrel(['queue', '--config', file], dir);
    assert.equal(await queue.exited, 69, queue.stderr());
    assert.match(queue.stderr(), /postgres:\/\/petrel:\*\*\*@/);
    assert.doesNotMatch(queue.stderr() + queue.stdout(), /s3cret-pw/);
  } finally {
    cleanup(dir);
  }
});
