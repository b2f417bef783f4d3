#!/usr/bin/env node
// petrel - command-line entry point. The TypeScript sources are compiled into
// dist/ by `npm ci` (the `prepare` script) and by `npm start` / `npm test`.
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
