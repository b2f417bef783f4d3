/*
 * tlsrpt/rua - where a domain wants its TLS reports: the `_smtp._tls.<domain>`
 * TXT record (RFC 8460 §3), `v=TLSRPTv1; rua=mailto:a@example,https://...`.
 *
 * Invariants: exactly one record starting "v=TLSRPTv1" counts (§3: with
 * none or several the domain does not take reports); only `mailto:` URIs are
 * returned (`https:` is not implemented: docs/tls-reporting.md), each a
 * checked address with its percent-encoding undone and any ?query dropped.
 *
 * Untrusted input: the TXT records of the recipient domain.
 */
import { parseMailbox } from '../core/address.js';

export interface RuaAnswer {
  /** mailto: addresses to send the report to. */
  mailto: string[];
  /** https: URIs found (not used). */
  skipped: string[];
  /** Why nothing can be sent, when mailto is empty. */
  problem?: string;
}

/** parseTlsrptTxt - the reporting addresses of a TXT answer (each record's strings already joined). */
export function parseTlsrptTxt(records: readonly string[]): RuaAnswer {
  const ours = records.filter((r) => /^v=TLSRPTv1\s*(;|$)/.test(r));
  if (ours.length === 0) return { mailto: [], skipped: [], problem: 'no v=TLSRPTv1 TXT record' };
  if (ours.length > 1) return { mailto: [], skipped: [], problem: `${ours.length} v=TLSRPTv1 TXT records (RFC 8460 §3 wants exactly one)` };
  let rua: string | null = null;
  for (const field of ours[0]!.split(';').slice(1)) {
    const eq = field.indexOf('=');
    if (eq < 0) continue;
    if (field.slice(0, eq).trim() === 'rua') rua ??= field.slice(eq + 1).trim();
  }
  if (!rua) return { mailto: [], skipped: [], problem: 'the v=TLSRPTv1 record has no rua=' };
  const mailto: string[] = [];
  const skipped: string[] = [];
  const bad: string[] = [];
  for (const uri of rua.split(',').map((u) => u.trim()).filter(Boolean)) {
    if (/^mailto:/i.test(uri)) {
      let addr: string;
      try {
        addr = decodeURIComponent(uri.slice(7).split('?')[0]!);
      } catch {
        bad.push(uri);
        continue;
      }
      const m = parseMailbox(addr, false);
      if (m) {
        const a = `${m.local}@${m.domain}`;
        if (!mailto.includes(a)) mailto.push(a);
      } else bad.push(uri);
    } else skipped.push(uri);
  }
  if (mailto.length) return { mailto, skipped };
  return { mailto, skipped, problem: bad.length ? `no usable mailto: address in rua (${bad.join(', ').slice(0, 200)})` : 'only https: reporting URIs, which Petrel does not use' };
}
