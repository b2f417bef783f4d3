/*
 * checks/verdict-fields - the inbound checks' verdict as fields of the
 * `received` event: `auth: {spf, dkim, dmarc, arc, dmarc_policy}` and
 * `filter: {action, score, required, symbols}` (or `{action: "not
 * scanned", error}`), read back from the client text the verdict was added
 * to (checks/inbound-checks -> Incoming.note). The client text is what the
 * queue stores with the message, so the fields are the same whether the
 * event is written as it happens or read back from the store later (track,
 * the viewer, the event log after a restart), with no column of their own.
 *
 * Invariants: only the parenthesised group that ends the text is read (the
 * note is appended last; everything before it, HELO included, is the
 * client's and is never taken for a verdict), and only when it has exactly
 * the shape the checks write; anything else gives no fields. Pure.
 *
 * Untrusted input: the client text (HELO, address, login, then our note).
 */

export interface AuthFields {
  spf: string;
  dkim: string;
  dmarc: string;
  arc: string;
  /** The sender domain's DMARC policy ("reject", "quarantine", "none") when it has one. */
  dmarc_policy?: string;
}

export interface FilterFields {
  /** rspamd's action, or "not scanned". */
  action: string;
  score?: number;
  required?: number;
  /** The highest-scoring symbols, "NAME(score)". */
  symbols?: string[];
  /** Why the message was not scanned. */
  error?: string;
}

const AUTH = /^spf=(\S+) dkim=(\S+) dmarc=(\S+)(?: \(p=([a-z]+)\))? arc=(\S+)$/;
const FILTER = /^rspamd: (no action|greylist|add header|rewrite subject|soft reject|reject) (-?\d+(?:\.\d+)?)\/(-?\d+(?:\.\d+)?) \[([^\]]*)\]?$/;
const NOT_SCANNED = /^rspamd: not scanned \((.*)\)$/;

/** verdictFields - `auth` and `filter` from a message's client text; {} when it carries no verdict. */
export function verdictFields(client: string | undefined): { auth?: AuthFields; filter?: FilterFields } {
  if (!client || !client.endsWith(')')) return {};
  const at = Math.max(client.lastIndexOf(' (spf='), client.lastIndexOf(' (rspamd: '));
  if (at < 0) return {};
  const inner = client.slice(at + 2, -1);
  const split = inner.indexOf('; rspamd: ');
  const authText = inner.startsWith('spf=') ? (split >= 0 ? inner.slice(0, split) : inner) : '';
  const filterText = inner.startsWith('rspamd: ') ? inner : split >= 0 ? inner.slice(split + 2) : '';
  const out: { auth?: AuthFields; filter?: FilterFields } = {};
  if (authText) {
    const m = AUTH.exec(authText);
    if (!m) return {};
    out.auth = { spf: m[1]!, dkim: m[2]!, dmarc: m[3]!, arc: m[5]!, ...(m[4] ? { dmarc_policy: m[4] } : {}) };
  }
  if (filterText) {
    const n = NOT_SCANNED.exec(filterText);
    const m = n ? null : FILTER.exec(filterText);
    if (n) out.filter = { action: 'not scanned', error: n[1]! };
    else if (m) out.filter = { action: m[1]!, score: Number(m[2]), required: Number(m[3]), symbols: m[4] ? m[4].split(' ').filter(Boolean) : [] };
    else return {};
  }
  return out;
}
