/*
 * admin/static-files - the web queue viewer's files (src/admin/static/),
 * read once at start into memory and served by exact name.
 *
 * Invariant: no URL is ever turned into a file path. The set of servable
 * names is the directory's listing at start (plain names, no "/"), so no
 * request can reach anything else under the repository or data_dir.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
  png: 'image/png',
  ico: 'image/x-icon',
};

export interface StaticFile {
  body: Buffer;
  type: string;
}

/** The viewer's source folder: compiled code runs from dist/src/admin, the files stay in src/admin/static. */
function staticDir(): string | null {
  for (const rel of ['../../../src/admin/static/', './static/']) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  return null;
}

export function loadStaticFiles(): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  const dir = staticDir();
  if (!dir) return files;
  for (const name of readdirSync(dir)) {
    const ext = name.slice(name.lastIndexOf('.') + 1);
    if (!/^[a-z0-9][a-z0-9._-]*$/i.test(name) || !TYPES[ext]) continue;
    files.set(name, { body: readFileSync(dir + name), type: TYPES[ext]! });
  }
  return files;
}
