/*
 * delivery/smtp/failure-text - the words for a failed connection or DNS
 * look-up, as they appear in a recipient's last reply, `petrel queue`, the
 * event log and delay/failure reports.
 *
 * Rules:
 * - say each thing once: Node's own message ("connect ECONNREFUSED
 *   127.0.0.1:3792") repeats the code and the address the caller already
 *   names, so only the code is read, and turned into the words the system
 *   gives it (strerror), as Postfix writes "Connection refused";
 * - say what happened: a DNS time-out or a server failure is not "not found"
 *   (that is NXDOMAIN, and only NXDOMAIN); the DNS code stays in parentheses
 *   for whoever searches for it;
 * - an unknown code is shown as it is, never dropped.
 *
 * The texts do not decide anything: whether a failure is temporary is the
 * caller's choice (mx.ts, agent.ts, client.ts); these words only describe it.
 * Untrusted input: none (error codes come from the local system and resolver).
 */

/** Socket error codes in the system's words (strerror on Linux). */
const SOCKET_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  ECONNABORTED: 'Software caused connection abort',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  EHOSTDOWN: 'Host is down',
  ENETUNREACH: 'Network is unreachable',
  ENETDOWN: 'Network is down',
  EPIPE: 'Broken pipe',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  // A unix-socket next hop (lmtp:/path) that is missing or is not a socket.
  ENOENT: 'No such file or directory',
  ENOTSOCK: 'Socket operation on non-socket',
  // A host name given to connect() (the system resolver behind it).
  ENOTFOUND: 'Host not found',
  EAI_AGAIN: 'Temporary failure in name resolution',
};

/**
 * socketFailure - a socket error in words ("Connection refused"). A system
 * error not listed here is its bare code (its message only repeats the call,
 * the code and the address); any other error (TLS, say) keeps its message.
 */
export function socketFailure(e: unknown): string {
  const err = e as NodeJS.ErrnoException | null | undefined;
  const code = typeof err?.code === 'string' ? err.code : '';
  if (code && SOCKET_ERRORS[code]) return SOCKET_ERRORS[code];
  if (code && err?.syscall) return code;
  return err?.message || String(e);
}

/** What a failed DNS query's code means, as the rest of a sentence that starts "MX look-up for X ...". */
const DNS_FAILURES: Record<string, string> = {
  ETIMEOUT: 'timed out',
  ESERVFAIL: 'failed: the DNS server answered SERVFAIL',
  EREFUSED: 'was refused by the DNS server',
  ECONNREFUSED: 'failed: the DNS server refused the connection',
  EBADRESP: 'failed: the DNS answer could not be read',
  EFORMERR: 'failed: the DNS server could not read the query',
  ENOTIMP: 'failed: the DNS server does not implement the query',
  EBADNAME: 'failed: not a valid domain name',
  ECANCELLED: 'was cancelled',
  EDESTRUCTION: 'was cancelled',
  ENOTFOUND: 'found no such domain',
  ENODATA: 'found no record of that type',
  // getaddrinfo (the system resolver, for routes and the smarthost).
  EAI_AGAIN: 'failed for now: temporary failure in name resolution',
  EAI_FAIL: 'failed: the name server returned a permanent failure',
};

/**
 * lookupFailure - one sentence for a failed look-up: `what` names it ("MX
 * look-up for d1.example"), `codes` are the resolver's codes (the first one
 * says what happened; all are listed): "MX look-up for d1.example timed out
 * (ETIMEOUT)".
 */
export function lookupFailure(what: string, codes: readonly string[]): string {
  const known = codes.filter(Boolean);
  if (known.length === 0) return `${what} failed`;
  const first = known[0]!;
  const distinct = [...new Set(known)];
  return `${what} ${DNS_FAILURES[first] ?? 'failed'} (${distinct.join(', ')})`;
}
