/*
 * core/replies - every SMTP reply Petrel gives a client, by name: code,
 * RFC 3463 enhanced status code (RFC 2034) and text. Inbound sessions, the
 * command parser, recipient policy and enqueue take their replies from here
 * and never write one inline, so what a client may be told is all on one
 * page — and docs/smtp.md lists the same names, codes and enhanced codes
 * (test/unit/docs-registry checks that they agree).
 *
 * Invariants:
 * - a name is one situation; the code and enhanced code of a name do not
 *   depend on arguments (only the text does);
 * - every reply after the greeting carries an enhanced code, except the ones
 *   RFC 2034 §3 leaves without: the greeting, HELO/EHLO answers, 354 and the
 *   334 AUTH challenges;
 * - text that a client sent (an address, a name) is quoted only where the
 *   caller has already checked its syntax.
 *
 * Standards: RFC 5321 §4.2, RFC 3463, RFC 2034, RFC 4954 (AUTH), RFC 3207
 * (STARTTLS), RFC 1870 (SIZE), RFC 6531 (SMTPUTF8), RFC 9422 (LIMITS),
 * RFC 8689 (REQUIRETLS).
 */
import { formatReply, reply, type SmtpReply } from './smtp-reply.js';

type Text = string | ((...args: never[]) => string);

export interface ReplySpec<T extends Text = Text> {
  code: number;
  /** RFC 3463 "class.subject.detail"; empty only where RFC 2034 allows it. */
  enhanced: string;
  text: T;
}

function def<T extends Text>(code: number, enhanced: string, text: T): ReplySpec<T> {
  return { code, enhanced, text };
}

/** The table. Names are camelCase; docs/smtp.md ("Every reply") lists each one. */
export const REPLIES = {
  // Connection
  greeting: def(220, '', (host: string) => `${host} ESMTP Petrel`),
  tooManyConnections: def(421, '4.7.0', (host: string) => `${host} Too many connections, try again later`),
  tooManyFromClient: def(421, '4.7.0', (host: string) => `${host} Too many connections from your address, try again later`),
  shuttingDown: def(421, '4.3.2', (host: string) => `${host} Service shutting down, try again later`),
  shuttingDownAtMail: def(421, '4.3.2', (host: string) => `${host} Shutting down, try again later`),
  timeout: def(421, '4.4.2', (host: string, what: string) => `${host} ${what}, closing connection`),
  localError: def(421, '4.3.0', (host: string) => `${host} Local error, closing connection`),
  bye: def(221, '2.0.0', (host: string) => `${host} Bye`),

  // Commands in general
  ok: def(250, '2.0.0', 'Ok'),
  lineTooLong: def(500, '5.5.2', 'Line too long'),
  unrecognized: def(500, '5.5.2', 'Command unrecognized'),
  tooManyUnknown: def(421, '4.7.0', (host: string) => `${host} Too many unrecognized commands, closing connection`),
  tooManyJunk: def(421, '4.7.0', (host: string) => `${host} Too many commands without mail, closing connection`),
  vrfy: def(252, '2.5.2', 'Cannot VRFY user, but will accept message and attempt delivery'),
  expnNotAvailable: def(502, '5.5.1', 'EXPN not available'),
  help: def(214, '2.0.0', 'See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)'),
  bdatNotOffered: def(502, '5.5.1', 'BDAT (CHUNKING) not offered; use DATA'),

  // HELO / EHLO
  heloSyntax: def(501, '5.5.4', (verb: string) => `Syntax: ${verb} hostname`),
  helo: def(250, '', (host: string) => host),
  ehlo: def(250, '', (lines: readonly string[]) => lines.join('\n')),

  // MAIL
  needHelo: def(503, '5.5.1', 'Send EHLO or HELO first'),
  nestedMail: def(503, '5.5.1', 'Nested MAIL command'),
  authRequired: def(530, '5.7.0', 'Authentication required'),
  starttlsFirst: def(530, '5.7.0', 'Must issue a STARTTLS command first, then authenticate'),
  mailSyntax: def(501, '5.5.4', 'Syntax: MAIL FROM:<address> [parameters]'),
  duplicateParameter: def(501, '5.5.4', (name: string) => `Duplicate parameter ${name}`),
  badParameter: def(501, '5.5.4', (name: string, hint?: string) => `Bad ${name} parameter${hint ? ` (${hint})` : ''}`),
  parameterNoValue: def(501, '5.5.4', (name: string) => `${name} takes no value`),
  parameterNotOffered: def(555, '5.5.4', (name: string) => `${name} not offered`),
  parameterNotSupported: def(555, '5.5.4', (name: string) => `${name} not supported`),
  unsupportedParameter: def(555, '5.5.4', (name: string) => `Unsupported parameter ${name}`),
  parametersNeedEhlo: def(555, '5.5.4', 'Parameters need EHLO'),
  badSender: def(553, '5.1.7', 'Bad sender address syntax'),
  senderNotOwned: def(553, '5.7.1', (sender: string, user: string) => `<${sender}>: Sender address rejected: not owned by user ${user}`),
  sizeDeclared: def(552, '5.3.4', (max: number) => `Message size exceeds fixed maximum message size (${max} octets)`),
  storageFull: def(452, '4.3.1', 'Insufficient system storage; try again later'),
  senderOk: def(250, '2.1.0', 'Sender ok'),
  // RFC 8689: REQUIRETLS is offered, and accepted, only on a TLS session.
  requireTlsNeedsTls: def(530, '5.7.10', 'REQUIRETLS needs a TLS session: issue STARTTLS first'),

  // RCPT
  needMail: def(503, '5.5.1', 'Need MAIL before RCPT'),
  rcptSyntax: def(501, '5.5.4', 'Syntax: RCPT TO:<address> [parameters]'),
  badRecipient: def(501, '5.1.3', 'Bad recipient address syntax'),
  tooManyRecipients: def(452, '4.5.3', 'Too many recipients'),
  needsSmtputf8: def(553, '5.6.7', 'Address needs SMTPUTF8'),
  userUnknown: def(550, '5.1.1', (address: string) => `<${address}>: Recipient address rejected: user unknown`),
  relayDenied: def(554, '5.7.1', (address: string) => `<${address}>: Relay access denied`),
  recipientOk: def(250, '2.1.5', 'Recipient ok'),

  // DATA and the end of data
  dataParameters: def(501, '5.5.4', 'DATA takes no parameters'),
  dataNeedsMail: def(503, '5.5.1', 'Need MAIL command'),
  noValidRecipients: def(554, '5.5.1', 'No valid recipients'),
  startData: def(354, '', 'End data with <CR><LF>.<CR><LF>'),
  messageTooBig: def(552, '5.3.4', (max: number) => `Message size exceeds fixed maximum message size (${max} octets)`),
  headerTooBig: def(552, '5.3.4', (max: number) => `Message header section exceeds the limit (${max} octets)`),
  nulOctets: def(554, '5.6.0', 'Message contains NUL octets; not accepted'),
  tooManyHops: def(554, '5.4.6', (received: number) => `Too many hops (${received} Received: headers); mail loop?`),
  storageError: def(451, '4.3.0', 'Local error in processing; message not accepted, try again later'),
  queued: def(250, '2.0.0', (queueId: string) => `Ok: queued as ${queueId}`),

  // Inbound checks on mail from outside (checks/, issue 15), at the end of data
  spfFail: def(550, '5.7.23', 'SPF validation failed: the sending host is not allowed to send for this domain'),
  spfTemperror: def(451, '4.7.24', 'SPF validation error (DNS); try again later'),
  dmarcReject: def(550, '5.7.1', (domain: string) => `Email rejected per DMARC policy for ${domain}`),
  dmarcTemperror: def(451, '4.7.1', 'DMARC evaluation prevented by a DNS failure; try again later'),
  filterReject: def(550, '5.7.1', (message: string) => message),
  recipientUnknownNextHop: def(550, '5.1.1', (address: string, why: string) => `<${address}>: Recipient address rejected by its next hop: ${why}`),
  recipientNotVerified: def(450, '4.1.1', (address: string) => `<${address}>: Recipient address verification failed (next hop not reachable); try again later`),
  dnsblListed: def(554, '5.7.1', (ip: string, list: string) => `Service unavailable; client [${ip}] blocked using ${list}`),
  filterSoftReject: def(451, '4.7.1', (message: string) => message),
  filterUnavailable: def(451, '4.7.0', 'Content scan not available; try again later'),

  // STARTTLS
  starttlsParameters: def(501, '5.5.4', 'STARTTLS takes no parameters'),
  starttlsNotAvailable: def(502, '5.5.1', 'STARTTLS not available'),
  tlsActive: def(503, '5.5.1', 'TLS already active'),
  tlsReady: def(220, '2.0.0', 'Ready to start TLS'),

  // AUTH (RFC 4954)
  authNotHere: def(503, '5.5.1', 'AUTH not available on this port; use the submission port'),
  authNeedsEhlo: def(503, '5.5.1', 'Send EHLO first'),
  authDone: def(503, '5.5.1', 'Already authenticated'),
  authInTransaction: def(503, '5.5.1', 'AUTH not allowed during a mail transaction'),
  authNoUsers: def(503, '5.5.1', 'AUTH not available (no users configured)'),
  encryptionRequired: def(538, '5.7.11', 'Encryption required for requested authentication mechanism'),
  authMechanism: def(504, '5.5.4', 'Unrecognized authentication type (PLAIN or LOGIN)'),
  authChallenge: def(334, '', (challenge: string) => challenge),
  authCancelled: def(501, '5.7.0', 'Authentication cancelled'),
  authNotBase64: def(501, '5.5.2', 'Cannot decode response (base64 expected)'),
  authMalformed: def(501, '5.5.2', 'Malformed PLAIN response'),
  authInvalid: def(535, '5.7.8', 'Authentication credentials invalid'),
  authOk: def(235, '2.7.0', 'Authentication successful'),
  tooManyAuthFailures: def(421, '4.7.0', (host: string) => `${host} Too many authentication failures, closing connection`),
} as const;

export type ReplyName = keyof typeof REPLIES;

type ArgsOf<T> = T extends (...args: infer A) => string ? A : [];
export type ReplyArgs<N extends ReplyName> = ArgsOf<(typeof REPLIES)[N]['text']>;

/** A reply with its wire form made once (the replies without arguments). */
export type WiredReply = SmtpReply & { readonly wire: string };

const fixedReplies = new Map<ReplyName, WiredReply>();
for (const [name, spec] of Object.entries(REPLIES) as Array<[ReplyName, ReplySpec]>) {
  if (typeof spec.text !== 'string') continue;
  const r = reply(spec.code, spec.enhanced, spec.text);
  fixedReplies.set(name, Object.freeze({ ...r, wire: formatReply(r) }));
}

/**
 * smtpReply - the reply named `name`, its text made from `args`. Replies
 * without arguments are made once and shared (with their wire form).
 */
export function smtpReply<N extends ReplyName>(name: N, ...args: ReplyArgs<N>): SmtpReply {
  const fixed = fixedReplies.get(name);
  if (fixed) return fixed;
  const spec = REPLIES[name] as ReplySpec;
  const text = (spec.text as (...a: unknown[]) => string)(...(args as unknown[]));
  return reply(spec.code, spec.enhanced, text);
}

/** wireOf - the wire form of a reply, reusing the one made in advance when there is one. */
export function wireOf(r: SmtpReply): string {
  return (r as Partial<WiredReply>).wire ?? formatReply(r);
}
