/*
 * config/schema - every configuration key Petrel knows, its type, default and
 * check. This table is the single source of truth: the loader walks it, the
 * docs (docs/configuration.md) describe it, and a test checks that every key
 * here is documented there.
 *
 * Invariants: every key has a safe default, so an empty file (or none) gives a
 * working server; a value either passes its check or produces an error naming
 * the key; unknown keys are errors (a typo must not silently mean "default").
 * Names in the Config object are the TOML names, one for one.
 */
import { hostname as systemHostname } from 'node:os';
import { isIP } from 'node:net';
import { parseDuration, parseSize } from '../core/units.js';
import type { DkimKeyConfig } from '../dkim/keys.js';
import type { TlsMode } from '../delivery/tls/outcome.js';
import type { ShapingRule } from '../delivery/smtp/shaping.js';

/** A host and port to listen on or connect to. */
export interface Endpoint {
  host: string;
  port: number;
}

/** Where mail for a route goes (the `via` of a [[routes]] entry). */
export type Transport =
  | { kind: 'smtp'; host: string; port: number }
  | { kind: 'lmtp'; host: string; port: number }
  | { kind: 'lmtp'; socket: string }
  | { kind: 'maildir'; path: string }
  | { kind: 'directory'; path: string };

export interface Route {
  domain: string;
  via: Transport;
  /** The route's `tls`; [delivery] tls when the route does not say. */
  tls: TlsMode;
  /** Probe the next hop at RCPT (checks/verify-recipient): unknown -> 550 5.1.1, cannot ask -> 450 4.1.1. */
  verify_recipients?: boolean;
  /** The domain's valid recipients, one address or "@domain" a line (checks/route-recipients): others get 550 5.1.1 at RCPT. */
  recipients_file?: string;
}

export interface Config {
  hostname: string;
  data_dir: string;
  smtp: {
    listen: Endpoint[];
    submission_listen: Endpoint[];
    users_file: string;
    /** "address-or-@domain: login, login": who may send as whom once authenticated (inbound/sender-logins). */
    sender_logins: string;
    max_recipients: number;
    max_message_size: number;
    max_header_size: number;
    relay_networks: string[];
    max_connections: number;
    max_connections_per_client: number;
    max_unknown_commands: number;
    idle_timeout: number;
    data_timeout: number;
    session_timeout: number;
    max_junk_commands: number;
  };
  tls: { cert: string; key: string };
  queue: {
    retry_intervals: number[];
    max_lifetime: number;
    delay_warning: number;
    min_free_space: number;
    backend: 'embedded' | 'postgres';
    postgres_url: string;
    node_name: string;
    lease: number;
    max_in_flight: number;
  };
  delivery: {
    smarthost: Endpoint | null;
    smtp_port: number;
    dns_servers: string[];
    max_recipients_per_transaction: number;
    connect_timeout: number;
    max_connections_per_destination: number;
    max_connections: number;
    helo_name: string;
    max_messages_per_connection: number;
    connection_idle_timeout: number;
    dead_destination_backoff: number;
    directory_require_mount: boolean;
    /** Sending identity (delivery/identity): outbound connections bind these; "" = the system chooses. */
    source_ipv4: string;
    source_ipv6: string;
    /** EHLO name on IPv6 connections; helo_name when empty. */
    helo_name_ipv6: string;
    address_family: 'any' | 'ipv4' | 'ipv6';
    address_preference: 'auto' | 'ipv6' | 'ipv4';
    /** Honour MTA-STS policies (RFC 8461; delivery/tls/mta-sts). */
    mta_sts: boolean;
    /** Honour DANE TLSA records (RFC 7672), trusting the AD bit of dns_servers (delivery/tls/dane). */
    dane: boolean;
    /** Outbound TLS policy for MX and smarthost delivery (delivery/tls/policy); routes may override. */
    tls: TlsMode;
    /** Extra PEM trust anchors for certificate checks ("" = Node's default CAs only); checked at load. */
    tls_ca_file: string;
    /** Traffic shaping (docs/shaping.md): on by default with the built-in provider rules. */
    shaping: boolean;
    throttle_replies: string[];
    block_replies: string[];
    throttle_hold: number;
    throttle_recovery_messages: number;
    block_suspend: number;
  };
  routes: Route[];
  /** [[dkim]] signing keys (dkim/keys); checked, key files included, at load. */
  dkim: DkimKeyConfig[];
  /** [[shaping]] rules of the operator (config/shaping); the built-in ones are added by delivery/smtp/shaping. */
  shaping: ShapingRule[];
  local: { domains: string[]; maildir: string; users_file: string; aliases_file: string };
  dsn: { postmaster: string; max_received_headers: number; return_size_limit: number };
  admin: { listen: Endpoint | null; token: string };
  log: { level: 'error' | 'warn' | 'info' | 'debug' | 'trace'; retention: number; rotate_size: number; rotate_keep: number };
  /** TLS reporting (RFC 8460; src/tlsrpt). */
  tlsrpt: { organization: string };
  checks: { authenticate: boolean; spf_fail: 'tag' | 'reject'; dmarc_reject: boolean; arc_trusted: string[]; dns_timeout: number; dnsbl: string[]; verify_timeout: number; junk_folder: string };
  filter: { rspamd_url: string; filter_timeout: number; filter_failure: 'tempfail' | 'accept'; result_headers: boolean };
  /** `petrel start` only (an in-process Petrel is one process): see workers/primary. */
  server: { workers: number };
}

/** A check turns a raw TOML value into its typed form, or returns an error text. */
type Check<T> = (raw: unknown) => { value: T } | { error: string };

interface Field<T> {
  check: Check<T>;
  /** Default, computed after the other keys are known (maildir follows data_dir). */
  def: (partial: Config) => T;
  doc: string;
}

function ok<T>(value: T): { value: T } {
  return { value };
}

const describe = (raw: unknown): string => JSON.stringify(raw) ?? String(raw);

export const str: Check<string> = (raw) => (typeof raw === 'string' ? ok(raw) : { error: `must be a string (got ${describe(raw)})` });

const bool: Check<boolean> = (raw) => (typeof raw === 'boolean' ? ok(raw) : { error: `must be true or false (got ${describe(raw)})` });

const nonEmptyStr: Check<string> = (raw) =>
  typeof raw === 'string' && raw.trim() !== '' ? ok(raw.trim()) : { error: `must be a non-empty string (got ${describe(raw)})` };

function int(min: number, max = Number.MAX_SAFE_INTEGER): Check<number> {
  return (raw) =>
    typeof raw === 'number' && Number.isInteger(raw) && raw >= min && raw <= max
      ? ok(raw)
      : { error: `must be an integer from ${min} to ${max} (got ${describe(raw)})` };
}

const duration: Check<number> = (raw) => {
  const v = typeof raw === 'string' ? parseDuration(raw) : null;
  return v === null ? { error: `must be a duration such as "500ms", "30s", "5m", "4h" or "5d" (got ${describe(raw)})` } : ok(v);
};

const positiveDuration: Check<number> = (raw) => {
  const r = duration(raw);
  if ('value' in r && r.value <= 0) return { error: `must be longer than 0 (got ${describe(raw)})` };
  return r;
};

const size: Check<number> = (raw) => {
  const v = typeof raw === 'string' ? parseSize(raw) : typeof raw === 'number' && Number.isInteger(raw) && raw >= 0 ? raw : null;
  return v === null ? { error: `must be a size such as "64KB", "50MB" or "1GB" (got ${describe(raw)})` } : ok(v);
};

function arrayOf<T>(item: Check<T>, opts: { nonEmpty?: boolean } = {}): Check<T[]> {
  return (raw) => {
    if (!Array.isArray(raw)) return { error: `must be an array (got ${describe(raw)})` };
    if (opts.nonEmpty && raw.length === 0) return { error: 'must not be empty' };
    const out: T[] = [];
    for (let i = 0; i < raw.length; i++) {
      const r = item(raw[i]);
      if ('error' in r) return { error: `item ${i + 1}: ${r.error}` };
      out.push(r.value);
    }
    return ok(out);
  };
}

function oneOf<T extends string>(...values: T[]): Check<T> {
  return (raw) =>
    typeof raw === 'string' && (values as string[]).includes(raw)
      ? ok(raw as T)
      : { error: `must be one of ${values.map((v) => `"${v}"`).join(', ')} (got ${describe(raw)})` };
}

/** parseEndpoint - "127.0.0.1:2525", "[::1]:2525", "mail.example:25" (port optional when a default is given). */
export function parseEndpoint(text: string, defaultPort?: number): Endpoint | null {
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
  } else {
    const colons = text.split(':').length - 1;
    if (colons === 1) {
      [host, portText] = text.split(':') as [string, string];
    } else if (colons === 0) {
      host = text;
    } else if (isIP(text) === 6) {
      host = text;
    } else {
      return null;
    }
  }
  if (host === '' || /\s/.test(host)) return null;
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return null;
    port = defaultPort;
  } else {
    if (!/^\d+$/.test(portText)) return null;
    port = Number(portText);
  }
  if (port < 0 || port > 65535) return null;
  return { host, port };
}

function endpoint(defaultPort?: number): Check<Endpoint> {
  return (raw) => {
    const e = typeof raw === 'string' ? parseEndpoint(raw.trim(), defaultPort) : null;
    return e ? ok(e) : { error: `must be "host:port", e.g. "127.0.0.1:2525" (got ${describe(raw)})` };
  };
}

const optionalEndpoint = (defaultPort?: number): Check<Endpoint | null> => (raw) =>
  raw === '' ? ok(null) : endpoint(defaultPort)(raw);

/** parseCidr - validates "10.0.0.0/8", "::1/128" or a bare address; returns the normalised text. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [addr, prefixText, extra] = text.trim().split('/');
  if (extra !== undefined || addr === undefined) return null;
  const family = isIP(addr);
  if (family === 0) return null;
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return null;
  return { address: addr, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}

const cidr: Check<string> = (raw) =>
  typeof raw === 'string' && parseCidr(raw) ? ok(raw.trim()) : { error: `must be an address or network such as "10.0.0.0/8" (got ${describe(raw)})` };

const domainName: Check<string> = (raw) =>
  typeof raw === 'string' && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/i.test(raw.trim())
    ? ok(raw.trim().toLowerCase().replace(/\.$/, ''))
    : { error: `must be a domain name (got ${describe(raw)})` };

/** parseTransport - the `via` value of a route. */
export function parseTransport(text: string, smtpPort: number): Transport | string {
  const i = text.indexOf(':');
  if (i < 0) return 'must be "smtp:HOST:PORT", "lmtp:HOST:PORT", "lmtp:/path/to/socket", "maildir:PATH" or "directory:PATH"';
  const kind = text.slice(0, i);
  const rest = text.slice(i + 1);
  switch (kind) {
    case 'smtp': {
      const e = parseEndpoint(rest, smtpPort);
      return e ? { kind: 'smtp', host: e.host, port: e.port } : `"smtp:" must be followed by HOST or HOST:PORT (got "${rest}")`;
    }
    case 'lmtp': {
      if (rest.startsWith('/')) return { kind: 'lmtp', socket: rest };
      const e = parseEndpoint(rest, 24);
      return e ? { kind: 'lmtp', host: e.host, port: e.port } : `"lmtp:" must be followed by HOST:PORT or an absolute socket path (got "${rest}")`;
    }
    case 'maildir':
    case 'directory':
      return rest.trim() === '' ? `"${kind}:" must be followed by a path` : { kind, path: rest };
    default:
      return `unknown transport "${kind}" (use smtp, lmtp, maildir or directory)`;
  }
}

const positiveInt = int(1);

/** A regular expression (matched case-insensitively against "<code> <enhanced> <text>"). */
const regex: Check<string> = (raw) => {
  if (typeof raw !== 'string' || raw === '') return { error: `must be a non-empty regular expression (got ${describe(raw)})` };
  try {
    new RegExp(raw, 'i');
    return ok(raw);
  } catch (e) {
    return { error: `is not a valid regular expression: ${(e as Error).message}` };
  }
};

/** An http:// URL, or "" for none. */
const httpUrl: Check<string> = (raw) => {
  if (raw === '') return ok('');
  try {
    if (typeof raw === 'string' && new URL(raw).protocol === 'http:') return ok(raw.trim());
  } catch {
    /* the error below */
  }
  return { error: `must be "" or an http:// URL such as "http://127.0.0.1:11333" (got ${describe(raw)})` };
};

/** A resolver address: an IP literal with an optional port, kept in the form node:dns accepts. */
/** A Maildir++ folder name ("Junk", "Spam", "Archive.Junk"): letters, digits, "_", "-", dot-separated levels; "" is off. */
const maildirFolder: Check<string> = (raw) =>
  typeof raw === 'string' && (raw === '' || (raw.length <= 64 && /^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_-]*)*$/.test(raw)))
    ? { value: raw }
    : { error: 'expected a Maildir folder name such as "Junk" (letters, digits, "_", "-", "." between levels), or "" for none' };

const dnsServer: Check<string> = (raw) => {
  const e = typeof raw === 'string' ? parseEndpoint(raw.trim(), 53) : null;
  if (!e || isIP(e.host) === 0) return { error: `must be "ip" or "ip:port", e.g. "127.0.0.1:5353" (got ${describe(raw)})` };
  return ok(isIP(e.host) === 6 ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);
};

/** An IP address of one family, or "" for none. */
function sourceAddress(family: 4 | 6): Check<string> {
  return (raw) => {
    if (raw === '') return ok('');
    const text = typeof raw === 'string' ? raw.trim() : '';
    // The unspecified address binds nothing in particular: "" says that.
    if (isIP(text) === family && !/^(0\.0\.0\.0|[0:]+)$/.test(text)) return ok(text);
    return { error: `must be "" or a specific IPv${family} address such as "${family === 4 ? '192.0.2.25' : '2001:db8::25'}" (got ${describe(raw)})` };
  };
}

/*
 * The table. Keys are "section.key" (or "key" at the top). [[routes]] is an
 * array of tables and is checked separately (see ROUTE_FIELDS).
 */
export const FIELDS: Record<string, Field<unknown>> = {
  hostname: { check: nonEmptyStr, def: () => systemHostname() || 'localhost', doc: 'name in the banner, Received: and Reporting-MTA' },
  data_dir: { check: nonEmptyStr, def: () => './var', doc: 'queue, spool, logs, pickup' },

  'smtp.listen': { check: arrayOf(endpoint()), def: () => [{ host: '127.0.0.1', port: 2525 }], doc: 'MX/relay listeners' },
  'smtp.submission_listen': { check: arrayOf(endpoint()), def: () => [], doc: 'RFC 6409 submission listeners' },
  'smtp.users_file': { check: str, def: () => '', doc: 'submission users ("user:<scrypt hash>")' },
  'smtp.sender_logins': { check: str, def: () => '', doc: 'who may send as whom once authenticated ("address-or-@domain: login, login")' },
  'smtp.max_recipients': { check: int(1, 10_000_000), def: () => 1000, doc: 'per message; beyond it RCPT gets 452 4.5.3' },
  'smtp.max_message_size': { check: size, def: () => 50 * 1024 * 1024, doc: 'SIZE limit' },
  'smtp.max_header_size': { check: size, def: () => 1024 * 1024, doc: 'largest header section; more: 552 5.3.4' },
  'smtp.relay_networks': { check: arrayOf(cidr), def: () => ['127.0.0.0/8', '::1/128'], doc: 'networks allowed to relay' },
  'smtp.max_connections': { check: positiveInt, def: () => 1000, doc: 'total SMTP connections' },
  'smtp.max_connections_per_client': { check: positiveInt, def: () => 50, doc: 'connections per client address' },
  'smtp.max_unknown_commands': { check: int(0), def: () => 10, doc: 'then 421 4.7.0' },
  'smtp.idle_timeout': { check: positiveDuration, def: () => 5 * 60_000, doc: 'between commands' },
  'smtp.data_timeout': { check: positiveDuration, def: () => 10 * 60_000, doc: 'whole DATA phase' },
  'smtp.session_timeout': { check: positiveDuration, def: () => 60 * 60_000, doc: 'whole connection; then 421 4.4.2 at the next command' },
  'smtp.max_junk_commands': { check: int(0), def: () => 100, doc: 'NOOP/RSET/VRFY/EXPN/HELP per accepted message; then 421 4.7.0' },

  'tls.cert': { check: str, def: () => '', doc: 'PEM certificate; self-signed when empty' },
  'tls.key': { check: str, def: () => '', doc: 'PEM key' },

  'queue.retry_intervals': {
    check: arrayOf(positiveDuration, { nonEmpty: true }),
    def: () => ['1m', '5m', '15m', '30m', '1h', '2h', '4h'].map((d) => parseDuration(d)!),
    doc: 'waits between attempts; the last repeats',
  },
  'queue.max_lifetime': { check: positiveDuration, def: () => 5 * 86_400_000, doc: 'then expiry with 4.4.7' },
  'queue.delay_warning': { check: duration, def: () => 4 * 3_600_000, doc: 'one delay report after this' },
  'queue.min_free_space': { check: size, def: () => 100 * 1024 * 1024, doc: 'below it MAIL gets 452 4.3.1' },
  'queue.backend': { check: oneOf('embedded', 'postgres'), def: () => 'embedded', doc: 'embedded (SQLite + spool under data_dir) or postgres (a cluster of nodes)' },
  'queue.postgres_url': { check: str, def: () => '', doc: 'postgres://user:password@host:port/db (backend = "postgres")' },
  'queue.node_name': { check: nonEmptyStr, def: () => systemHostname() || 'localhost', doc: 'this node in a cluster; unique per node' },
  'queue.lease': { check: positiveDuration, def: () => 120_000, doc: "how long a node's claims last unless renewed" },
  'queue.max_in_flight': { check: int(1, 10_000_000), def: () => 20_000, doc: 'recipients being delivered at once (in memory); the rest wait in the queue' },

  'delivery.smarthost': { check: optionalEndpoint(25), def: () => null, doc: 'all non-local mail not matched by a route' },
  'delivery.smtp_port': { check: int(1, 65535), def: () => 25, doc: 'port for MX and A/AAAA hosts' },
  'delivery.dns_servers': { check: arrayOf(dnsServer), def: () => [], doc: 'resolvers for MX look-ups' },
  'delivery.max_recipients_per_transaction': { check: int(1, 100_000), def: () => 100, doc: 'unless LIMITS RCPTMAX says less' },
  'delivery.connect_timeout': { check: positiveDuration, def: () => 30_000, doc: 'TCP connect' },
  'delivery.max_connections_per_destination': { check: positiveInt, def: () => 20, doc: 'per next hop' },
  'delivery.max_connections': { check: positiveInt, def: () => 200, doc: 'outbound connections in all' },
  'delivery.helo_name': { check: str, def: () => '', doc: 'EHLO name; hostname when empty' },
  'delivery.max_messages_per_connection': { check: int(1, 1_000_000), def: () => 100, doc: 'messages one outbound connection carries before it closes' },
  'delivery.connection_idle_timeout': { check: positiveDuration, def: () => 5000, doc: 'an unused outbound connection closes after this' },
  'delivery.dead_destination_backoff': { check: duration, def: () => 30_000, doc: 'after a next hop fails to connect, its due jobs share one probe connection for this long' },
  'delivery.shaping': { check: bool, def: () => true, doc: 'traffic shaping per provider ([[shaping]] and the built-in rules, docs/shaping.md); false: only the limits above' },
  'delivery.throttle_replies': { check: arrayOf(regex), def: () => [], doc: '"too fast" replies (regular expressions) added to the built-in table: the provider is slowed' },
  'delivery.block_replies': { check: arrayOf(regex), def: () => [], doc: '"blocked" replies (regular expressions) added to the built-in table: the provider is suspended' },
  'delivery.throttle_hold': { check: duration, def: () => 60_000, doc: 'after a "too fast" reply, how long the halved limits hold before accepted mail raises them' },
  'delivery.throttle_recovery_messages': { check: int(1, 1_000_000), def: () => 50, doc: 'accepted messages per step (a tenth of the configured limits) back up' },
  'delivery.block_suspend': { check: positiveDuration, def: () => 3_600_000, doc: 'how long a "blocked" reply suspends the provider (petrel queue resume ends it earlier)' },
  'delivery.directory_require_mount': { check: bool, def: () => false, doc: 'directory: PATH must be a mount point' },
  'delivery.source_ipv4': { check: sourceAddress(4), def: () => '', doc: 'outbound IPv4 connections bind this address; "" lets the system choose' },
  'delivery.source_ipv6': { check: sourceAddress(6), def: () => '', doc: 'outbound IPv6 connections bind this address; "" lets the system choose' },
  'delivery.helo_name_ipv6': { check: str, def: () => '', doc: 'EHLO name on IPv6 connections; helo_name when empty' },
  'delivery.address_family': { check: oneOf('any', 'ipv4', 'ipv6'), def: () => 'any', doc: 'which next-hop addresses are tried' },
  'delivery.address_preference': { check: oneOf('auto', 'ipv6', 'ipv4'), def: () => 'auto', doc: 'with address_family "any": which family is tried first; auto = IPv6 first only with a global IPv6 source' },
  'delivery.mta_sts': { check: bool, def: () => true, doc: 'honour MTA-STS (RFC 8461) policies of recipient domains' },
  'delivery.dane': { check: bool, def: () => false, doc: 'honour DANE TLSA records (RFC 7672); needs dns_servers: a DNSSEC-validating resolver whose AD bit is trusted' },
  'delivery.tls': { check: oneOf('opportunistic', 'verify', 'required'), def: () => 'opportunistic', doc: 'outbound TLS: opportunistic, verify (chain + MX host name) or required' },
  'delivery.tls_ca_file': { check: str, def: () => '', doc: 'extra PEM trust anchors for certificate checks' },

  'local.domains': { check: arrayOf(domainName), def: () => ['localhost'], doc: 'delivered to Maildir' },
  'local.maildir': { check: nonEmptyStr, def: (c) => `${c.data_dir.replace(/\/+$/, '')}/mail`, doc: 'maildir root' },
  'local.users_file': { check: str, def: () => '', doc: 'valid local users' },
  'local.aliases_file': { check: str, def: () => '', doc: 'aliases' },

  'dsn.postmaster': { check: str, def: () => '', doc: 'gets notices about failed reports' },
  'dsn.max_received_headers': { check: int(1, 1000), def: () => 30, doc: 'more: 5.4.6' },
  'dsn.return_size_limit': { check: size, def: () => 256 * 1024, doc: 'cap on RET=FULL' },

  'admin.listen': { check: optionalEndpoint(), def: () => ({ host: '127.0.0.1', port: 8025 }), doc: 'admin HTTP; "" disables' },
  'admin.token': { check: str, def: () => '', doc: 'bearer token' },

  'server.workers': { check: int(0, 255), def: () => 0, doc: 'processes for the SMTP sessions and deliveries of `petrel start`; 0: one per core; 1: one process' },

  'log.level': { check: oneOf('error', 'warn', 'info', 'debug', 'trace'), def: () => 'info', doc: 'debug trace level (stderr)' },
  'log.retention': { check: positiveDuration, def: () => 30 * 86_400_000, doc: 'events kept for tracking' },
  'log.rotate_size': { check: size, def: () => 100 * 1024 * 1024, doc: 'rotate events.jsonl at this size; 0 never' },
  'log.rotate_keep': { check: int(1, 10_000), def: () => 10, doc: 'rotated event log files kept' },

  'checks.authenticate': { check: bool, def: () => true, doc: 'SPF, DKIM, DMARC and ARC on mail from outside relay_networks, not authenticated' },
  'checks.spf_fail': { check: oneOf('tag', 'reject'), def: () => 'tag', doc: 'SPF fail: tag, or refuse 550 5.7.23' },
  'checks.dmarc_reject': { check: bool, def: () => true, doc: 'DMARC fail with p=reject: 550 5.7.1' },
  'checks.arc_trusted': { check: arrayOf(domainName), def: () => [], doc: 'ARC sealers whose valid chain overrides dmarc_reject' },
  'checks.dns_timeout': { check: positiveDuration, def: () => 5000, doc: 'per DNS query of the checks; then temperror' },
  'checks.verify_timeout': { check: positiveDuration, def: () => 10_000, doc: 'a verify_recipients probe of a next hop; then 450 4.1.1' },
  'checks.junk_folder': { check: maildirFolder, def: () => 'Junk', doc: 'Maildir++ folder (maildir/dom/user/.Junk) for mail failing DMARC with p=quarantine or scored "add header" by rspamd; "" keeps it in the inbox' },
  'checks.dnsbl': { check: arrayOf(domainName), def: () => [], doc: 'DNS block lists; a listed client gets 554 5.7.1 at RCPT' },

  'tlsrpt.organization': { check: str, def: (c) => c.hostname, doc: 'organization-name of RFC 8460 TLS reports; hostname when empty' },

  'filter.rspamd_url': { check: httpUrl, def: () => '', doc: 'rspamd normal worker, "http://127.0.0.1:11333"; empty: no content scan' },
  'filter.filter_timeout': { check: positiveDuration, def: () => 20_000, doc: 'whole rspamd exchange; then filter_failure' },
  'filter.filter_failure': { check: oneOf('tempfail', 'accept'), def: () => 'tempfail', doc: 'rspamd unavailable: 451 4.7.0, or accept with a not_scanned event' },
  'filter.result_headers': { check: bool, def: () => false, doc: 'add X-Spamd-Result: (action, score, symbols) to every scanned message' },
};

/** The keys of one [[routes]] entry. */
export const ROUTE_FIELDS = ['domain', 'via', 'tls', 'verify_recipients', 'recipients_file'] as const;

/** The keys of one [[dkim]] entry (all required). */
export const DKIM_FIELDS = ['domain', 'selector', 'key_file'] as const;

export const checks = { domainName, oneOf };
