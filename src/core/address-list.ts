/*
 * core/address-list - the addresses in an address-list header field (To, Cc,
 * Bcc, From, X-Envelope-To; RFC 5322 §3.4, with the obsolete forms of §4.4
 * that real mail still carries): display names, comments, quoted strings,
 * angle addresses (with an obsolete source route), groups.
 *
 * Returns the addr-specs as written (not validated: the caller checks each
 * with core/address parseMailbox, and decides about bare local parts).
 * Untrusted input: the whole value; the parser is linear and never throws.
 */

export function parseAddressList(value: string): string[] {
  const out: string[] = [];
  let plain = ''; // addr-spec text outside angle brackets (comments and white space dropped)
  let angle: string | null = null; // content of the last <...>
  let inAngle = false;
  let quoted = false;
  let comment = 0;
  const finish = (): void => {
    let a = (angle ?? plain).trim();
    // Obsolete source route: <@relay1,@relay2:user@example.com>
    if (angle !== null) a = a.replace(/^@[^:]*:/, '');
    if (a !== '') out.push(a);
    plain = '';
    angle = null;
  };
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (comment > 0) {
      if (c === '\\') i++;
      else if (c === '(') comment++;
      else if (c === ')') comment--;
      continue;
    }
    if (quoted) {
      if (c === '\\' && i + 1 < value.length) {
        const next = value[++i]!;
        if (inAngle) angle += c + next;
        else plain += c + next;
        continue;
      }
      if (c === '"') quoted = false;
      if (inAngle) angle += c;
      else plain += c;
      continue;
    }
    if (inAngle) {
      if (c === '>') inAngle = false;
      else if (c === '"') {
        quoted = true;
        angle += c;
      } else if (c === '(') comment++;
      else if (!/\s/.test(c)) angle += c;
      continue;
    }
    switch (c) {
      case '"':
        quoted = true;
        plain += c;
        break;
      case '(':
        comment++;
        break;
      case '<':
        inAngle = true;
        angle = '';
        plain = ''; // what came before was a display name
        break;
      case ':':
        // A group's display name ends here; its members follow.
        plain = '';
        angle = null;
        break;
      case ',':
      case ';':
        finish();
        break;
      default:
        if (!/\s/.test(c)) plain += c;
        else if (plain !== '' && angle === null) plain += ' ';
    }
  }
  finish();
  // A display name without an angle address ("John Doe" with no <...>) is not an address.
  return out.filter((a) => !/\s/.test(a.replace(/"(?:[^"\\]|\\.)*"/g, '')));
}
