// The registries and their documentation must agree: every event id is in
// docs/events.md with its number, every configuration key is in
// docs/configuration.md, every SMTP reply (src/core/replies) is in
// docs/smtp.md with its code and enhanced code. A new event, key or reply
// without docs fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EVENT_IDS } from '../../src/log/events.js';
import { REPLIES } from '../../src/core/replies.js';
import { FIELDS, ROUTE_FIELDS } from '../../src/config/schema.js';
import { ROOT } from '../helpers/petrel-harness.js';

test('every event kind is documented with its id, and nothing else is', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'events.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| (\d+) \| `([a-z_]+)` \|/gm)].map((m) => [m[2], Number(m[1])]);
  assert.deepEqual(Object.fromEntries(rows), EVENT_IDS);
});

test('every configuration key is documented', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');
  for (const key of Object.keys(FIELDS)) {
    const [section, name] = key.includes('.') ? key.split('.') : ['', key];
    assert.ok(doc.includes(`### \`${name}\``) || doc.includes(`| \`${name}\` |`), `${key} is not documented`);
    if (section) assert.ok(doc.includes(`## [${section}]`), `section [${section}] is not documented`);
  }
  for (const key of ROUTE_FIELDS) assert.ok(doc.includes(`| \`${key}\` |`), `routes.${key} is not documented`);
});

test('every SMTP reply is documented by name with its code and enhanced code, and nothing else is', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'smtp.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Every reply, by name'));
  const rows = [...section.matchAll(/^\| `([A-Za-z0-9]+)` \| `(\d{3})(?: (\d\.\d{1,3}\.\d{1,3}))?` \|/gm)].map((m) => [m[1], `${m[2]} ${m[3] ?? ''}`.trim()]);
  const table = Object.entries(REPLIES).map(([name, r]) => [name, `${r.code} ${r.enhanced}`.trim()]);
  assert.deepEqual(Object.fromEntries(rows), Object.fromEntries(table));
});
