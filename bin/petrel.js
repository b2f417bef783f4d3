#!/usr/bin/env -S node --initial-old-space-size=64
// petrel - command-line entry point. The TypeScript sources are compiled into
// dist/ by `npm ci` (the `prepare` script) and by `npm start` / `npm test`.
//
// The first line gives V8 a 64 MB old generation to start with (its
// workers get the same: workers/primary): V8 counts the array buffers of
// large messages against that limit, and from the ~13 MB live heap of
// `petrel start` it was reached every ~25 messages of 100 KB - a full
// collection each time, mostly on V8's helper threads (BENCHMARKS.md, "Issue
// 17, eighth round"). `node bin/petrel.js` runs without it; an operator's own
// heap options (command line or NODE_OPTIONS) apply as well, and a smaller
// --max-old-space-size caps it.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write('petrel: not built yet; run `npm run build` (or `npm ci`) in the repository first\n');
  process.exit(70);
}
const { run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
// Let stdout drain, but never hang on a handle left open after the command ended.
setTimeout(() => process.exit(), 2000).unref();
