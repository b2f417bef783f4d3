// workers/primary workerExecArgv: a worker starts with the primary's Node
// options plus a 64 MB initial old generation (fewer full collections with
// large messages), unless the operator sized V8's heap, on the command line
// or in NODE_OPTIONS: then the workers get exactly the operator's sizing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WORKER_INITIAL_OLD_SPACE_MB, workerExecArgv } from '../../src/workers/primary.js';

const OURS = `--initial-old-space-size=${WORKER_INITIAL_OLD_SPACE_MB}`;

test('the primary\'s options are kept and the larger old generation is added', () => {
  assert.deepEqual(workerExecArgv([], ''), [OURS]);
  assert.deepEqual(workerExecArgv(['--cpu-prof', '--cpu-prof-dir=/tmp/p'], '--enable-source-maps'), ['--cpu-prof', '--cpu-prof-dir=/tmp/p', OURS]);
  assert.deepEqual(workerExecArgv(['--max-semi-space-size=32'], '--stack-trace-limit=50'), ['--max-semi-space-size=32', OURS], 'the young generation is another matter');
});

test('an operator who sized the heap decides the workers\' heap too', () => {
  for (const given of ['--max-old-space-size=32', '--max_old_space_size=32', '--initial-old-space-size=16', '--max-heap-size=100', '--initial-heap-size=8']) {
    assert.deepEqual(workerExecArgv([given], ''), [given], `${given} on the command line`);
    assert.deepEqual(workerExecArgv(['--cpu-prof'], `--enable-source-maps ${given}`), ['--cpu-prof'], `${given} in NODE_OPTIONS`);
  }
  assert.deepEqual(workerExecArgv(['--max-old-space-size', '32'], ''), ['--max-old-space-size', '32'], 'the value as the next argument');
});
