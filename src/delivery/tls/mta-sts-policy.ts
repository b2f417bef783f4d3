/*
 * delivery/tls/mta-sts-policy - the text formats of MTA-STS (RFC 8461): the
 * `_mta-sts.<domain>` TXT record (§3.1), the policy file (§3.2), and which MX
 * hosts a policy allows (§4.1). Pure functions, no I/O.
 *
 * Invariants:
 * - a TXT answer yields a policy id only when exactly one record starts with
 *   "v=STSv1" and it is well formed (§3.1); anything else is "no record";
 * - a policy parses only with version STSv1, a known mode, a max_age of at
 *   most 31557600 and (unless mode is none) at least one valid mx pattern;
 *   anything else is an error naming what is wrong, never a guess.
 *
 * Untrusted input: the TXT record and the policy body (from the recipient
 * domain's DNS and web server). Written by hand: both formats are a few
 * lines of ABNF and no maintained npm library parses them without also doing
 * its own (unconfigurable) DNS and HTTPS.
 */

export interface MtaStsPolicy {
  mode: 'enforce' | 'testing' | 'none';
  /** MX patterns, lower case, no trailing dot: "mx1.example.com" or "*.example.net". */
  mx: string[];
  /** Seconds the policy may be cached (§3.2: at most 31557600). */
  maxAge: number;
  /** The id of the TXT record this policy was fetched for. */
  id: string;
}

/** §3.2: max_age is at most 31557600 seconds (about one year). */
export const MAX_AGE_LIMIT = 31_557_600;

/** §3.1: sts-id = 1*32(ALPHA / DIGIT). */
const STS_ID = /^[A-Za-z0-9]{1,32}$/;
/** A DNS label (letters, digits, hyphens; also "_" seen in the wild is refused: MX hosts are host names). */
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * parseStsTxt - the policy id of a TXT answer (each record's strings already
 * joined), or null when there is no usable record: none starting "v=STSv1",
 * several, or a malformed one (§3.1: then the domain has no policy).
 */
export function parseStsTxt(records: readonly string[]): { id: string } | { error: string } | null {
  const sts = records.filter((r) => /^v=STSv1(;|\s|$)/.test(r));
  if (sts.length === 0) return null;
  if (sts.length > 1) return { error: `${sts.length} v=STSv1 TXT records (RFC 8461 §3.1 wants exactly one)` };
  const fields = sts[0]!.split(';').map((f) => f.trim());
  // "v=STSv1" first; a trailing ";" leaves an empty last field.
  if (fields[fields.length - 1] === '') fields.pop();
  let id: string | null = null;
  for (const f of fields.slice(1)) {
    const eq = f.indexOf('=');
    if (eq <= 0) return { error: `malformed field "${f.slice(0, 40)}" in the v=STSv1 TXT record` };
    const name = f.slice(0, eq);
    const value = f.slice(eq + 1);
    if (name === 'id') {
      if (id !== null) return { error: 'two id= fields in the v=STSv1 TXT record' };
      if (!STS_ID.test(value)) return { error: `id "${value.slice(0, 40)}" is not 1-32 letters and digits` };
      id = value;
    }
  }
  if (id === null) return { error: 'the v=STSv1 TXT record has no id=' };
  return { id };
}

/** validPattern - an mx line's value: a host name, or "*." and a host name (§3.2). */
function validPattern(p: string): boolean {
  const name = p.startsWith('*.') ? p.slice(2) : p;
  const labels = name.split('.');
  return name.length <= 253 && labels.length >= 2 && labels.every((l) => LABEL.test(l));
}

/** parsePolicy - the policy file's text (§3.2) into a policy carrying `id`, or the first problem found. */
export function parsePolicy(text: string, id: string): { policy: MtaStsPolicy } | { error: string } {
  let version: string | null = null;
  let mode: string | null = null;
  let maxAge: string | null = null;
  const mx: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) return { error: `line without "key: value": "${line.slice(0, 60)}"` };
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    switch (key) {
      case 'version':
        version ??= value;
        break;
      case 'mode':
        mode ??= value;
        break;
      case 'max_age':
        maxAge ??= value;
        break;
      case 'mx': {
        const p = value.toLowerCase().replace(/\.$/, '');
        if (!validPattern(p)) return { error: `mx "${value.slice(0, 60)}" is not a host name or *.host pattern` };
        if (!mx.includes(p)) mx.push(p);
        break;
      }
      default:
        // §3.2: unknown fields are ignored (extensions).
        break;
    }
  }
  if (version !== 'STSv1') return { error: version === null ? 'no version field' : `version "${version.slice(0, 20)}" is not STSv1` };
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return { error: mode === null ? 'no mode field' : `mode "${mode.slice(0, 20)}" is not enforce, testing or none` };
  if (maxAge === null) return { error: 'no max_age field' };
  if (!/^[0-9]{1,10}$/.test(maxAge) || Number(maxAge) > MAX_AGE_LIMIT) return { error: `max_age "${maxAge.slice(0, 20)}" is not a whole number of seconds up to ${MAX_AGE_LIMIT}` };
  if (mode !== 'none' && mx.length === 0) return { error: `mode ${mode} with no mx line` };
  return { policy: { mode, mx, maxAge: Number(maxAge), id } };
}

/**
 * mxAllowed - whether `host` matches one of the policy's mx patterns
 * (§4.1): exactly (case-insensitive, trailing dot ignored), or "*.rest"
 * matching a host of exactly one more left-most label than "rest".
 */
export function mxAllowed(policy: MtaStsPolicy, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  for (const p of policy.mx) {
    if (p.startsWith('*.')) {
      const rest = p.slice(1); // ".example.net"
      if (h.endsWith(rest) && h.length > rest.length && !h.slice(0, h.length - rest.length).includes('.')) return true;
    } else if (h === p) return true;
  }
  return false;
}

/** policyStrings - the policy as RFC 8460 "policy-string" lines (for TLS reports). */
export function policyStrings(policy: MtaStsPolicy): string[] {
  return ['version: STSv1', `mode: ${policy.mode}`, ...policy.mx.map((m) => `mx: ${m}`), `max_age: ${policy.maxAge}`];
}
