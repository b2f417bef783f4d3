/*
 * dsn/explain - what happened, in words an ordinary sender understands: one
 * explanation per kind of outcome, chosen from the RFC 3463 status of the
 * last attempt and from who decided (the recipient's server, or this mail
 * system). The report groups its recipients by explanation, so each text is
 * written once per report, not once per recipient.
 *
 * Invariants:
 * - every status, valid or not, gets an explanation (the most specific entry
 *   for subject.detail, then for the subject, then a general one), so a
 *   report is never held up for want of words;
 * - there are few explanations (the table below): a report about 100,000
 *   recipients has at most that many groups, whatever their replies say;
 * - texts are fixed here; nothing untrusted goes into them (the remote's own
 *   words are quoted per recipient by dsn/human, never mixed in here).
 *
 * The bar is Exchange's non-delivery reports: a title that says what
 * happened, a sentence on who said so, and what the sender can do.
 *
 * RFCs: 3463 (enhanced status codes: class.subject.detail), 7505 (null MX).
 */
import type { ReportKind } from '../queue/store.js';

export interface Explanation {
  /** Groups recipients: equal keys share one explanation in a report. */
  key: string;
  /** A short heading: "The address does not exist". */
  title: string;
  /** What happened, one or two sentences. */
  what: string;
  /** What the sender can do; empty when there is nothing to do. */
  advice: string;
}

interface Reason {
  title: string;
  /** When the recipient's server said so. */
  remote: string;
  /** When this mail system decided (DNS, connection, local delivery, policy). */
  local: string;
  advice: string;
}

const AGAIN_LATER = 'You can try sending the message again later. If it keeps happening, contact the recipient another way.';

/** Keyed by RFC 3463 "subject.detail", then "subject", then "". */
const REASONS: Record<string, Reason> = {
  '1.1': {
    title: 'The address does not exist',
    remote: "The recipient's mail server said that this address does not exist.",
    local: 'This address does not exist on this mail system.',
    advice: 'Check the address for typing mistakes, or ask the recipient for the right address, then send the message again.',
  },
  '1.2': {
    title: "The recipient's domain does not exist",
    remote: 'The mail server said that the domain (the part of the address after the @) does not exist or receives no email there.',
    local: 'The domain (the part of the address after the @) could not be found, or it receives no email.',
    advice: 'Check the part of the address after the @ for typing mistakes, then send the message again.',
  },
  '1.3': {
    title: 'The address is not written correctly',
    remote: "The recipient's mail server said that the address is not written correctly.",
    local: 'The address is not written correctly.',
    advice: 'Check the address for typing mistakes or stray characters, then send the message again.',
  },
  '1.6': {
    title: 'The recipient has moved',
    remote: "The recipient's mail server said that this address is no longer in use.",
    local: 'This address is no longer in use.',
    advice: 'Ask the recipient for their new address, and send the message to that address.',
  },
  '1.10': {
    title: "The recipient's domain does not accept email",
    remote: 'The domain (the part of the address after the @) has published that it accepts no email at all.',
    local: 'The domain (the part of the address after the @) has published that it accepts no email at all.',
    advice: 'Check the part of the address after the @. If it is right, contact the recipient another way.',
  },
  '1': {
    title: 'There is a problem with the address',
    remote: "The recipient's mail server did not accept the address.",
    local: 'This mail system could not use the address.',
    advice: 'Check the address for typing mistakes, then send the message again.',
  },
  '2.1': {
    title: "The recipient's mailbox is not accepting messages",
    remote: "The recipient's mail server said that the mailbox is disabled or closed.",
    local: "The recipient's mailbox is disabled or closed.",
    advice: 'Contact the recipient another way: their mailbox may have been closed.',
  },
  '2.2': {
    title: "The recipient's mailbox is full",
    remote: "The recipient's mail server said that the mailbox is full.",
    local: "The recipient's mailbox is full.",
    advice: 'Let the recipient know another way so they can make room, then send the message again later.',
  },
  '2.3': {
    title: 'Your message is too large for the recipient',
    remote: "The recipient's mail server said that the message is larger than the mailbox accepts.",
    local: 'The message is larger than the mailbox accepts.',
    advice: 'Send it again with fewer or smaller attachments, or share large files through a link.',
  },
  '2': {
    title: "There is a problem with the recipient's mailbox",
    remote: "The recipient's mail server said that the mailbox cannot take the message.",
    local: "The recipient's mailbox cannot take the message.",
    advice: AGAIN_LATER,
  },
  '3.4': {
    title: 'Your message is too large',
    remote: "The recipient's mail server said that the message is larger than it accepts.",
    local: 'The message is larger than this mail system can pass on.',
    advice: 'Send it again with fewer or smaller attachments, or share large files through a link.',
  },
  '3': {
    title: "The recipient's mail system has a problem",
    remote: "The recipient's mail server has a problem and could not take the message.",
    local: 'This mail system had a problem delivering the message.',
    advice: AGAIN_LATER,
  },
  '4.1': {
    title: "The recipient's mail server did not answer",
    remote: "The recipient's mail server did not answer.",
    local: "No mail server for the recipient's domain answered.",
    advice: "The recipient's mail server may be down. Check the part of the address after the @, or try again later.",
  },
  '4.2': {
    title: "The connection to the recipient's mail server failed",
    remote: "The connection to the recipient's mail server broke while the message was being sent.",
    local: "The connection to the recipient's mail server broke while the message was being sent.",
    advice: AGAIN_LATER,
  },
  '4.3': {
    title: "The recipient's domain could not be looked up",
    remote: "The recipient's mail server could not look up a name it needed.",
    local: "The domain name system (DNS) did not answer questions about the recipient's domain.",
    advice: 'Check the part of the address after the @, or try again later.',
  },
  '4.4': {
    title: "No mail server was found for the recipient's domain",
    remote: 'The mail server could not find where to send the message next.',
    local: "This mail system could not find a mail server that receives email for the recipient's domain.",
    advice: 'Check the part of the address after the @ for typing mistakes, then send the message again.',
  },
  '4.6': {
    title: 'The message went round in a loop',
    remote: 'The message was passed between mail servers, or forwarded between addresses, too many times. This usually means a forwarding mistake.',
    local: 'The message was passed between mail servers, or forwarded between addresses, too many times. This usually means a forwarding mistake.',
    advice: "Tell the recipient's mail administrator; the mistake is in their forwarding, not in your message.",
  },
  '4.7': {
    title: 'Delivery took too long',
    remote: 'The message could not be delivered in the time allowed.',
    local: 'The message could not be delivered in the time allowed.',
    advice: AGAIN_LATER,
  },
  '4': {
    title: "The recipient's mail server could not be reached",
    remote: "The recipient's mail server could not be reached.",
    local: "This mail system could not reach a mail server for the recipient's domain.",
    advice: 'Check the part of the address after the @, or try again later.',
  },
  '5': {
    title: 'The mail servers could not understand each other',
    remote: "The recipient's mail server did not accept the way the message was sent (a protocol error).",
    local: "This mail system and the recipient's mail server could not agree on how to send the message (a protocol error).",
    advice: 'This is usually not something you can fix yourself; the postmaster of this mail system can help.',
  },
  '6': {
    title: "The recipient's mail server did not accept the content",
    remote: "The recipient's mail server could not accept the content or the format of your message.",
    local: 'This mail system could not pass on the content or the format of your message.',
    advice: 'Try sending the message again in a simpler form, for example without unusual attachments.',
  },
  '7.1': {
    title: "The recipient's mail server refused your message",
    remote: "The recipient's mail server refused to accept this message from you. This is a decision of that server's policy; its reply below often says why.",
    local: 'This mail system is not allowed to deliver this message to that address.',
    advice: 'If you think this is a mistake, contact the recipient another way and show them the reply below.',
  },
  '7.23': {
    title: "Your message failed the recipient's sender checks",
    remote: "The recipient's mail server could not confirm that the message really came from your domain (an SPF, DKIM or DMARC check failed).",
    local: 'The message failed a check of where it came from (SPF, DKIM or DMARC).',
    advice: "Tell the administrator of your own email domain: this is fixed in your domain's settings, not by sending the message again.",
  },
  '7': {
    title: "The message was refused for security reasons",
    remote: "The recipient's mail server refused the message for security or policy reasons.",
    local: 'This mail system refused to deliver the message for security or policy reasons.',
    advice: 'If you think this is a mistake, contact the recipient another way and show them the reply below.',
  },
  '': {
    title: 'The message could not be delivered',
    remote: "The recipient's mail server did not accept the message.",
    local: 'This mail system could not deliver the message.',
    advice: 'The reply below may say why. Check the address, or try again later.',
  },
};
/** Codes that share another entry's text (RFC 7372: 5.7.20-5.7.26 are sender-authentication failures). */
const SAME_AS: Record<string, string> = { '7.20': '7.23', '7.21': '7.23', '7.22': '7.23', '7.25': '7.23', '7.26': '7.23' };

/** reasonKey - the table entry for a status: "5.1.1" -> "1.1", else "1", else "". */
export function reasonKey(status: string): string {
  const m = /^[245]\.(\d{1,3})\.(\d{1,3})$/.exec(status.trim());
  if (!m) return '';
  const detail = `${Number(m[1])}.${Number(m[2])}`;
  if (SAME_AS[detail]) return SAME_AS[detail];
  if (REASONS[detail]) return detail;
  return REASONS[String(Number(m[1]))] ? String(Number(m[1])) : '';
}

const DELIVERED: Explanation = {
  key: 'delivered',
  title: 'Delivered',
  what: "The message was delivered to the recipient's mailbox.",
  advice: '',
};

const RELAYED: Explanation = {
  key: 'relayed',
  title: 'Passed on to a server that sends no delivery reports',
  what: 'The message was handed to the next mail server, which accepted it but does not send delivery reports. This mail system cannot tell you what happens to it from there, and no later notice about these recipients will come from it, even if delivery fails further on.',
  advice: '',
};

const EXPANDED: Explanation = {
  key: 'expanded',
  title: 'Passed on to the addresses of an alias',
  what: 'The address is an alias (a forwarding address or list) on this mail system. The message was accepted for it and passed on to the addresses it stands for. You will hear again about those addresses only if delivery to one of them fails or is delayed.',
  advice: '',
};

/**
 * explain - the explanation for one recipient of a report of `kind`, whose
 * last attempt ended with `status` (for an expiry: the last error, not
 * 4.4.7), decided by a remote server when `remote`.
 */
export function explain(kind: ReportKind, status: string, remote: boolean): Explanation {
  if (kind === 'delivered') return DELIVERED;
  if (kind === 'relayed') return RELAYED;
  if (kind === 'expanded') return EXPANDED;
  const key = reasonKey(status);
  const r = REASONS[key]!;
  return {
    key: `${key || 'general'}:${remote ? 'remote' : 'local'}`,
    title: r.title,
    what: remote ? r.remote : r.local,
    // A delay is not the sender's to fix yet: the mail system is still trying.
    advice: kind === 'delayed' ? '' : r.advice,
  };
}
