/*
 * checks/auth-results - the Authentication-Results: header field (RFC 8601):
 * removing the ones that claim to be ours, and writing ours.
 *
 * Invariants:
 * - a field whose authserv-id is our hostname (compared without case and
 *   without a trailing dot, RFC 8601 §5) is removed from every checked
 *   message: only Petrel may speak for Petrel (RFC 8601 §5, "MUST remove or
 *   rename ... those that claim to be from the border MTA");
 * - every other octet of the header section is kept as it was, in order,
 *   folded lines included;
 * - the field Petrel writes has no line over 998 octets and only printable
 *   ASCII: result comments come from DNS and the message, so anything else
 *   is replaced.
 *
 * Untrusted input: the header section of the message; result texts that
 * quote DNS records and the message.
 *
 * RFCs: RFC 8601 (Authentication-Results), RFC 5322 §2.2.3 (folding),
 * RFC 7001 §2.2 (authserv-id, comments).
 */

/** authservId - the authserv-id of an Authentication-Results: value (comments dropped), lower case. */
export function authservId(value: string): string {
  let v = value;
  // Nested comments are rare; two passes remove one level of nesting.
  for (let i = 0; i < 2; i++) v = v.replace(/\((?:\\.|[^()\\])*\)/g, ' ');
  const first = v.split(';', 1)[0]!.trim().split(/\s+/, 1)[0] ?? '';
  return first.toLowerCase().replace(/^"|"$/g, '').replace(/\.$/, '');
}

/**
 * stripOwnResults - the header section without the Authentication-Results:
 * fields that claim `hostname` as their authserv-id; counts what it removed.
 */
export function stripOwnResults(header: Buffer, hostname: string): { header: Buffer; removed: number } {
  const own = hostname.toLowerCase().replace(/\.$/, '');
  // latin1 keeps every octet as one character, so nothing is changed on the way back.
  const text = header.toString('latin1');
  const lines = text.split(/(?<=\r\n)/);
  const out: string[] = [];
  let removed = 0;
  let field: string[] = [];
  const flush = (): void => {
    if (!field.length) return;
    const whole = field.join('');
    const colon = whole.indexOf(':');
    const name = colon > 0 ? whole.slice(0, colon).trim().toLowerCase() : '';
    if (name === 'authentication-results' && authservId(whole.slice(colon + 1).replace(/\r\n/g, '')) === own) removed++;
    else out.push(whole);
    field = [];
  };
  for (const line of lines) {
    if ((line.startsWith(' ') || line.startsWith('\t')) && field.length) {
      field.push(line);
      continue;
    }
    flush();
    field.push(line);
  }
  flush();
  if (removed === 0) return { header, removed };
  return { header: Buffer.from(out.join(''), 'latin1'), removed };
}

/** safeHeaderText - printable ASCII only, each line at most 998 octets (a result header quotes DNS and the message). */
export function safeHeaderText(headers: string): string {
  return headers
    .split('\r\n')
    .map((line) => line.replace(/[^\x20-\x7e\t]/g, '?'))
    .map((line) => (line.length > 998 ? line.slice(0, 990) : line))
    .join('\r\n');
}
