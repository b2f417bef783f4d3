#!/usr/bin/env node
// run-tests - runs every compiled test file (dist/test/**/*.test.js) with Node's
// own test runner and its spec reporter, which ends with the summary lines
// (tests / pass / fail). Arguments filter files by substring:
//   npm test -- recipient-limit    runs only files whose path contains it.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist', 'test');

function collect(dir, out) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const filters = process.argv.slice(2);
let files = collect(testRoot, []);
if (filters.length) files = files.filter((f) => filters.some((s) => relative(root, f).includes(s)));
if (files.length === 0) {
  console.error('run-tests: no test files matched');
  process.exit(1);
}
const concurrency = process.env.PETREL_TEST_CONCURRENCY ?? '2';
const child = spawn(process.execPath, ['--test', '--test-reporter=spec', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...files], {
  stdio: 'inherit',
  cwd: root,
});
child.on('exit', (code, signal) => process.exit(signal ? 1 : code ?? 1));
