/*
 * test/fuzz/config-generators - fast-check arbitraries for configuration
 * files: TOML built from Petrel's own key table (src/config/schema FIELDS)
 * with values of every TOML type and of every near-miss shape ("5x", "-1s",
 * "127.0.0.1:99999", huge and fractional numbers, dates, nested tables,
 * unknown keys and sections, [[routes]] with odd `via`), and valid files
 * mutated octet by octet (which gives TOML syntax errors of every kind).
 *
 * Shared by test/fuzz/config.test.ts and bench/fuzz.ts, with the property
 * itself (checkConfigText). Pure.
 */
import fc from 'fast-check';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { FIELDS, type Config } from '../../src/config/schema.js';

const KEYS = Object.keys(FIELDS);

/** A TOML value as text, of any type and of the shapes the checks must refuse. */
const tomlValue: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom('"30s"', '"5m"', '"0s"', '"-1s"', '"1.5h"', '"5x"', '"50MB"', '"0"', '"1 GB"', '"64kb"', '"99999999999GB"', '""', '" "'),
    fc.constantFrom('"127.0.0.1:2525"', '"[::1]:25"', '"127.0.0.1:99999"', '"host:"', '":25"', '"a:b:c"', '"10.0.0.0/8"', '"::1/129"', '"1.2.3.4/33"', '"localhost"'),
    fc.constantFrom('"smtp:127.0.0.1:25"', '"lmtp:/run/x.sock"', '"maildir:"', '"directory:/tmp/x"', '"ftp:x"', '"smtp:"', '"lmtp:host"'),
    fc.constantFrom('0', '-1', '1', '65536', '1000', '9007199254740991', '1e3', '1.5', 'inf', '-inf', 'nan', 'true', 'false', '0x10', '1979-05-27T07:32:00Z', '07:32:00', '1979-05-27'),
    fc.string({ maxLength: 20 }).map((s) => JSON.stringify(s)),
    fc.array(tie('value'), { maxLength: 4 }).map((a) => `[${a.join(', ')}]`),
    fc.array(fc.tuple(fc.constantFrom('a', 'host', 'port', 'x-y'), tie('value')), { maxLength: 3 }).map((kv) => `{ ${kv.map(([k, v]) => `${k} = ${v}`).join(', ')} }`),
  ),
})).value;

/** A key line: one of Petrel's keys (mostly) or an unknown one. */
const entry: fc.Arbitrary<[string, string]> = fc.tuple(
  fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.constantFrom('smtp.nope', 'nope', 'queue.retry', 'admin.tokens', 'log.level.x') }),
  tomlValue,
);

const route: fc.Arbitrary<string> = fc
  .array(fc.tuple(fc.constantFrom('domain', 'via', 'tls', 'extra'), tomlValue), { maxLength: 4 })
  .map((kv) => `[[routes]]\n${kv.map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);

/** configText - a TOML file laid out as Petrel's are: top-level keys, then [section] tables, then [[routes]]. */
export const configText: fc.Arbitrary<string> = fc
  .tuple(fc.array(entry, { maxLength: 12 }), fc.array(route, { maxLength: 3 }), fc.constantFrom('', '[smtp]\n', '[smtp.sub]\nx = 1\n', 'smtp = 5\n', '[unknown]\nx = 1\n', '[[smtp]]\n'))
  .map(([entries, routes, extra]) => {
    const top: string[] = [];
    const sections = new Map<string, string[]>();
    const seen = new Set<string>();
    for (const [key, value] of entries) {
      if (seen.has(key)) continue; // TOML itself refuses duplicates; that path is covered by the mutations
      seen.add(key);
      const dot = key.indexOf('.');
      if (dot < 0) top.push(`${key} = ${value}`);
      else {
        const section = key.slice(0, dot);
        const lines = sections.get(section) ?? [];
        lines.push(`${key.slice(dot + 1)} = ${value}`);
        sections.set(section, lines);
      }
    }
    const parts = [top.join('\n')];
    for (const [s, lines] of sections) parts.push(`[${s}]\n${lines.join('\n')}`);
    return parts.join('\n') + '\n' + routes.join('') + extra;
  });

/** mutated - a text with a few octets inserted, deleted or replaced. */
export const mutated = (base: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.tuple(base, fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom('del', 'ins', 'rep'), fc.constantFrom('"', '[', ']', '=', '\n', '#', '\\', '.', ' ', '\u0000', 'é', '{', ',', "'")), { minLength: 1, maxLength: 4 })).map(([text, edits]) => {
    let s = text;
    for (const [at, op, ch] of edits) {
      const i = Math.floor(at * s.length);
      s = op === 'del' ? s.slice(0, i) + s.slice(i + 1) : op === 'ins' ? s.slice(0, i) + ch + s.slice(i) : s.slice(0, i) + ch + s.slice(i + 1);
    }
    return s;
  });

/** anyConfig - generated files, mutated ones and raw strings. */
export const anyConfig: fc.Arbitrary<string> = fc.oneof(
  { weight: 5, arbitrary: configText },
  { weight: 3, arbitrary: mutated(configText) },
  { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
);

/** checkConfigText - the property for one text; returns what went wrong, if anything. */
export function checkConfigText(text: string): string[] {
  let config: Config;
  try {
    config = parseConfigText(text, 'fuzz.toml', '/tmp');
  } catch (e) {
    if (!(e instanceof ConfigError)) return [`threw ${(e as Error)?.name}: ${(e as Error)?.message}`];
    const out: string[] = [];
    if (e.problems.length === 0) out.push('ConfigError with no problems');
    for (const p of e.problems) {
      if (typeof p.key !== 'string' || p.key.trim() === '') out.push(`a problem names no key: ${JSON.stringify(p)}`);
      if (typeof p.message !== 'string' || p.message.trim() === '') out.push(`a problem has no message: ${JSON.stringify(p)}`);
      if (p.line !== null && !(Number.isInteger(p.line) && p.line >= 1 && p.line <= text.split('\n').length + 1)) out.push(`line ${p.line} is not in the file`);
      if (!e.message.includes(`${p.key}: ${p.message}`)) out.push('the error text does not list every problem');
    }
    return out;
  }
  const out: string[] = [];
  const num = (v: unknown, what: string): void => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) out.push(`${what} is ${String(v)}`);
  };
  if (typeof config.hostname !== 'string' || !config.hostname) out.push('hostname');
  for (const k of ['max_recipients', 'max_message_size', 'max_header_size', 'max_connections', 'max_connections_per_client', 'max_unknown_commands', 'idle_timeout', 'data_timeout'] as const) num(config.smtp[k], `smtp.${k}`);
  if (!(config.smtp.idle_timeout > 0 && config.smtp.data_timeout > 0)) out.push('a zero timeout');
  if (!Array.isArray(config.smtp.listen) || !config.smtp.listen.every((e) => typeof e.host === 'string' && Number.isInteger(e.port))) out.push('smtp.listen');
  if (!config.queue.retry_intervals.length || !config.queue.retry_intervals.every((d) => d > 0)) out.push('queue.retry_intervals');
  for (const r of config.routes) if (typeof r.domain !== 'string' || !r.via || !['opportunistic', 'required'].includes(r.tls)) out.push(`route ${JSON.stringify(r)}`);
  return out;
}

