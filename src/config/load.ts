/*
 * config/load - read a TOML configuration file into a checked Config.
 *
 * Untrusted input: the file's text. Every problem is reported, not just the
 * first, each as "FILE:LINE: KEY: what is wrong", so `petrel check-config`
 * can list them all and `petrel start` can refuse to start with all of them.
 * Relative paths (data_dir, maildir, files) are resolved against the working
 * directory, as a shell user expects; `petrel start` prints what they became.
 * An unknown key or section is an error that names the one probably meant
 * (`relay_network: unknown key; did you mean relay_networks?`): the nearest
 * known name of the same table by edit distance, or the same key in the table
 * where it belongs.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { isIP } from 'node:net';
import { parse, TomlError } from 'smol-toml';
import { DKIM_FIELDS, FIELDS, ROUTE_FIELDS, checks, parseTransport, type Config, type Route } from './schema.js';
import { keyProblems } from '../dkim/keys.js';
import { caFileProblem } from '../delivery/tls/cert-check.js';
import { parseShaping } from './shaping.js';

export interface ConfigProblem {
  key: string;
  line: number | null;
  message: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(problems.map((p) => formatProblem(file, p)).join('\n'));
    this.name = 'ConfigError';
  }
}

export function formatProblem(file: string, p: ConfigProblem): string {
  return `${file}:${p.line ?? '?'}: ${p.key}: ${p.message}`;
}

/** The [sections]: every "section.key" of the schema names one. */
const SECTIONS = new Set(Object.keys(FIELDS).filter((k) => k.includes('.')).map((k) => k.split('.')[0]!));

/**
 * lineIndex - map "section.key" and "routes[i].key" to the line where the key
 * is written. A light scan of the text: enough for the flat layout of Petrel's
 * configuration, and independent of the TOML parser's internals.
 */
export function lineIndex(text: string): Map<string, number> {
  const lines = new Map<string, number>();
  let table = '';
  const arrayCounts = new Map<string, number>();
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    const lineNo = i + 1;
    let m: RegExpExecArray | null;
    if ((m = /^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]/.exec(line))) {
      const n = arrayCounts.get(m[1]!) ?? 0;
      arrayCounts.set(m[1]!, n + 1);
      table = `${m[1]}[${n}]`;
      if (!lines.has(table)) lines.set(table, lineNo);
    } else if ((m = /^\[\s*([A-Za-z0-9_.-]+)\s*\]/.exec(line))) {
      table = m[1]!;
      if (!lines.has(table)) lines.set(table, lineNo);
    } else if ((m = /^("?)([A-Za-z0-9_-]+)\1\s*=/.exec(line))) {
      const key = table ? `${table}.${m[2]}` : m[2]!;
      if (!lines.has(key)) lines.set(key, lineNo);
    }
  });
  return lines;
}

/**
 * editDistance - the number of single-character insertions, deletions,
 * substitutions and swaps of two neighbours that turn `a` into `b`
 * (Damerau-Levenshtein, optimal string alignment). Keys are short: the table
 * is (|a|+1) x (|b|+1) numbers.
 */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * closestName - the known name an unknown one most likely meant: the nearest
 * by edit distance, if it is near enough to be a typo (one edit for names of
 * up to 4 characters, two up to 8, three beyond; case and "-" for "_" are
 * free), and not tied with another; undefined otherwise.
 */
export function closestName(name: string, known: Iterable<string>): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/-/g, '_');
  const n = norm(name);
  const allowed = n.length <= 4 ? 1 : n.length <= 8 ? 2 : 3;
  let best: string | undefined;
  let bestDistance = Infinity;
  let tied = false;
  for (const k of known) {
    const dist = editDistance(n, norm(k));
    if (dist < bestDistance) {
      best = k;
      bestDistance = dist;
      tied = false;
    } else if (dist === bestDistance) tied = true;
  }
  return best !== undefined && bestDistance <= allowed && !tied ? best : undefined;
}

/**
 * unknownKey - the message for a key no table knows, with the key probably
 * meant: the nearest key of the same table ("did you mean relay_networks?"),
 * or the same key where it belongs ("did you mean delivery.smarthost?").
 */
function unknownKey(section: string | null, key: string): string {
  const fields = Object.keys(FIELDS);
  const inTable = fields.filter((f) => (section === null ? !f.includes('.') : f.startsWith(`${section}.`))).map((f) => f.slice(section === null ? 0 : section.length + 1));
  const near = closestName(key, inTable);
  if (near) return `unknown key; did you mean ${near}?`;
  const elsewhere = fields.filter((f) => f.split('.').pop() === key && f !== (section ? `${section}.${key}` : key));
  if (elsewhere.length === 1) return `unknown key; did you mean ${elsewhere[0]}${elsewhere[0]!.includes('.') ? '' : ' (at the top of the file, before any [table])'}?`;
  return 'unknown key';
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** checkConfig - validate parsed TOML; returns the config and every problem found. */
export function checkConfig(doc: Record<string, unknown>, text: string): { config: Config; problems: ConfigProblem[] } {
  const lines = lineIndex(text);
  const problems: ConfigProblem[] = [];
  const problem = (key: string, message: string): void => {
    problems.push({ key, line: lines.get(key) ?? lines.get(`${key}[0]`) ?? lines.get(key.split('.')[0]!) ?? null, message });
  };

  // Flatten the document into "section.key" and report unknown names.
  const given = new Map<string, unknown>();
  for (const [name, value] of Object.entries(doc)) {
    if (name === 'routes' || name === 'dkim' || name === 'shaping') continue;
    if (SECTIONS.has(name)) {
      if (!isTable(value)) {
        problem(name, `must be a table ([${name}])`);
        continue;
      }
      for (const [k, v] of Object.entries(value)) {
        const key = `${name}.${k}`;
        if (!(key in FIELDS)) problem(key, unknownKey(name, k));
        else given.set(key, v);
      }
    } else if (name in FIELDS) {
      given.set(name, value);
    } else {
      if (isTable(value) || (Array.isArray(value) && value.length > 0 && value.every(isTable))) {
        const near = closestName(name, [...SECTIONS, 'routes', 'dkim', 'shaping']);
        problem(tomlKey(name), near ? `unknown section; did you mean [${near === 'routes' || near === 'dkim' || near === 'shaping' ? `[${near}]` : near}]?` : 'unknown section');
      } else problem(tomlKey(name), unknownKey(null, name));
    }
  }

  // Two passes: explicit values first, then defaults (some depend on others).
  const config = { smtp: {}, tls: {}, queue: {}, delivery: {}, local: {}, dsn: {}, admin: {}, log: {}, routes: [], dkim: [], shaping: [] } as unknown as Config;
  const assign = (key: string, value: unknown): void => {
    const [a, b] = key.split('.');
    if (b === undefined) (config as unknown as Record<string, unknown>)[a!] = value;
    else ((config as unknown as Record<string, Record<string, unknown>>)[a!] ??= {})[b] = value;
  };
  const defaulted: string[] = [];
  for (const [key, field] of Object.entries(FIELDS)) {
    if (given.has(key)) {
      const r = field.check(given.get(key));
      if ('error' in r) {
        problem(key, r.error);
        defaulted.push(key);
      } else assign(key, r.value);
    } else defaulted.push(key);
  }
  for (const key of defaulted) assign(key, FIELDS[key]!.def(config));

  // [[routes]]
  const routes = doc.routes;
  if (routes !== undefined) {
    if (!Array.isArray(routes)) problem('routes', 'must be an array of tables ([[routes]])');
    else {
      const seen = new Set<string>();
      routes.forEach((entry: unknown, i: number) => {
        const base = `routes[${i}]`;
        if (!isTable(entry)) return problem(base, 'must be a table');
        for (const k of Object.keys(entry)) {
          if (!(ROUTE_FIELDS as readonly string[]).includes(k)) {
            const near = closestName(k, ROUTE_FIELDS);
            problem(`${base}.${k}`, near ? `unknown key; did you mean ${near}?` : 'unknown key');
          }
        }
        const d = checks.domainName(entry.domain);
        const via = typeof entry.via === 'string' ? parseTransport(entry.via.trim(), config.delivery.smtp_port) : 'must be a string';
        const tls = entry.tls === undefined ? { value: config.delivery.tls } : checks.oneOf('opportunistic', 'verify', 'required')(entry.tls);
        if ('error' in d) problem(`${base}.domain`, entry.domain === undefined ? 'is required' : d.error);
        if (typeof via === 'string') problem(`${base}.via`, entry.via === undefined ? 'is required' : via);
        if ('error' in tls) problem(`${base}.tls`, tls.error);
        const verify = entry.verify_recipients ?? false;
        if (typeof verify !== 'boolean') problem(`${base}.verify_recipients`, 'must be true or false');
        else if (verify && typeof via !== 'string' && via.kind !== 'smtp' && !(via.kind === 'lmtp' && 'host' in via)) problem(`${base}.verify_recipients`, 'needs an smtp: or lmtp:HOST:PORT route');
        const recipientsFile = entry.recipients_file ?? '';
        if (typeof recipientsFile !== 'string') problem(`${base}.recipients_file`, 'must be a string (a file path)');
        if ('value' in d && typeof via !== 'string' && 'value' in tls) {
          if (seen.has(d.value)) problem(`${base}.domain`, `"${d.value}" already has a route`);
          seen.add(d.value);
          config.routes.push({
            domain: d.value,
            via,
            tls: tls.value,
            ...(verify === true ? { verify_recipients: true } : {}),
            ...(typeof recipientsFile === 'string' && recipientsFile.trim() ? { recipients_file: recipientsFile.trim() } : {}),
          } satisfies Route);
        }
      });
    }
  }

  // [[shaping]] (config/shaping)
  config.shaping = parseShaping(doc.shaping, problem, closestName);

  // [[dkim]]: the key files themselves are checked once paths are resolved (dkimKeyProblems).
  const dkim = doc.dkim;
  if (dkim !== undefined) {
    if (!Array.isArray(dkim)) problem('dkim', 'must be an array of tables ([[dkim]])');
    else {
      dkim.forEach((entry: unknown, i: number) => {
        const base = `dkim[${i}]`;
        if (!isTable(entry)) return problem(base, 'must be a table');
        for (const k of Object.keys(entry)) {
          if (!(DKIM_FIELDS as readonly string[]).includes(k)) {
            const near = closestName(k, DKIM_FIELDS);
            problem(`${base}.${k}`, near ? `unknown key; did you mean ${near}?` : 'unknown key');
          }
        }
        const d = checks.domainName(entry.domain);
        const sel = typeof entry.selector === 'string' && /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(entry.selector);
        const file = typeof entry.key_file === 'string' && entry.key_file.trim() !== '';
        if ('error' in d) problem(`${base}.domain`, entry.domain === undefined ? 'is required' : d.error);
        if (!sel) problem(`${base}.selector`, entry.selector === undefined ? 'is required' : `must be a DNS label such as "s2026" (got ${JSON.stringify(entry.selector)})`);
        if (!file) problem(`${base}.key_file`, entry.key_file === undefined ? 'is required' : 'must be the path of a PEM private key');
        if ('value' in d && sel && file) config.dkim.push({ domain: d.value, selector: entry.selector as string, key_file: (entry.key_file as string).trim(), index: i });
      });
    }
  }

  // Rules that tie keys together.
  if (config.admin.listen && !isLoopback(config.admin.listen.host) && config.admin.token === '') {
    problem('admin.token', `must be set when admin.listen (${config.admin.listen.host}) is not a loopback address`);
  }
  if (config.smtp.listen.length === 0 && config.smtp.submission_listen.length === 0) {
    problem('smtp.listen', 'no SMTP listener configured (smtp.listen and smtp.submission_listen are both empty)');
  }
  if (config.dsn.postmaster !== '' && !/^[^@\s]+@[^@\s]+$/.test(config.dsn.postmaster)) {
    problem('dsn.postmaster', `must be an address such as "postmaster@example.com" (got "${config.dsn.postmaster}")`);
  }
  if (config.delivery.dane && config.delivery.dns_servers.length === 0) {
    problem('delivery.dane', 'needs delivery.dns_servers: DANE trusts the AD bit of a DNSSEC-validating resolver you run (the system resolver is not asked)');
  }

  return { config, problems };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '0:0:0:0:0:0:0:1';
}

/** resolvePaths - make every path absolute against `cwd`. */
export function resolvePaths(config: Config, cwd: string): Config {
  const r = (p: string): string => (p === '' ? p : resolve(cwd, p));
  config.data_dir = r(config.data_dir);
  config.local.maildir = r(config.local.maildir);
  config.local.users_file = r(config.local.users_file);
  config.local.aliases_file = r(config.local.aliases_file);
  config.smtp.users_file = r(config.smtp.users_file);
  config.smtp.sender_logins = r(config.smtp.sender_logins);
  config.tls.cert = r(config.tls.cert);
  config.tls.key = r(config.tls.key);
  config.delivery.tls_ca_file = r(config.delivery.tls_ca_file);
  for (const route of config.routes) {
    if (route.via.kind === 'maildir' || route.via.kind === 'directory') route.via.path = r(route.via.path);
    if (route.recipients_file) route.recipients_file = r(route.recipients_file);
  }
  for (const key of config.dkim ?? []) key.key_file = r(key.key_file);
  return config;
}

/** dkimKeyProblems - each [[dkim]] key file that cannot be used (missing, unreadable, not a key, too weak), at its key_file line. */
function dkimKeyProblems(config: Config, text: string): ConfigProblem[] {
  if (!config.dkim.length) return [];
  const lines = lineIndex(text);
  return keyProblems(config.dkim).map(({ index, message }) => {
    const i = config.dkim[index]!.index ?? index;
    const key = `dkim[${i}].key_file`;
    return { key, line: lines.get(key) ?? lines.get(`dkim[${i}]`) ?? null, message };
  });
}

/** parseConfigText - TOML text to Config; throws ConfigError listing every problem. */
export function parseConfigText(text: string, file = '<config>', cwd = process.cwd()): Config {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '');
      throw new ConfigError(file, [{ key: '(syntax)', line: e.line, message: `${first} (column ${e.column})` }]);
    }
    throw e;
  }
  const { config, problems } = checkConfig(doc, text);
  resolvePaths(config, cwd);
  problems.push(...dkimKeyProblems(config, text));
  const ca = caFileProblem(config.delivery.tls_ca_file);
  if (ca) problems.push({ key: 'delivery.tls_ca_file', line: lineIndex(text).get('delivery.tls_ca_file') ?? null, message: ca });
  if (problems.length) throw new ConfigError(file, problems.sort((a, b) => (a.line ?? 0) - (b.line ?? 0)));
  return config;
}

/** loadConfig - read FILE (or use every default when none is given). */
export function loadConfig(file?: string, cwd = process.cwd()): Config {
  if (file === undefined) return parseConfigText('', '<defaults>', cwd);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError(file, [{ key: '(file)', line: null, message: `cannot read: ${err.code ?? err.message}` }]);
  }
  return parseConfigText(text, file, cwd);
}

/** tomlKey - a key as it is written in TOML: bare when it can be, else quoted ("" for the empty key). */
function tomlKey(name: string): string {
  return /^[A-Za-z0-9_-]+$/.test(name) ? name : JSON.stringify(name);
}
