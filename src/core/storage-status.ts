/*
 * core/storage-status - the one mapping from a failed local write (an errno)
 * to an RFC 3463 status, for every writer of mail: enqueue (Petrel's own
 * spool), Maildir delivery and the directory connector.
 *
 * The status depends on whose storage is out of room, not only on the errno:
 * - ENOSPC is the file system being full: "4.3.1 Mail system full" wherever
 *   it happens (RFC 3463 §3.5: "mail system storage has been exceeded").
 * - EDQUOT is a quota. Written into a recipient's mailbox (Maildir, the
 *   directory a connector hands mail to) it is that mailbox's quota: "4.2.2
 *   Mailbox full" (RFC 3463 §3.3: "the user has exceeded a per-mailbox
 *   administrative quota"), which the sender reads in a delay report as the
 *   recipient's problem, as Postfix's local(8) and Dovecot say it. Written
 *   into Petrel's own spool it is Petrel's quota, no recipient's: 4.3.1, the
 *   same as a full disk — a 452 4.2.2 at end of data would tell the client
 *   that a mailbox is full when it is the mail system that is.
 * - anything else is "4.3.0 Other or undefined mail system status" and
 *   temporary: an unclassified local error is never permanent.
 */
import { errno } from './durable-fs.js';

/** Where the write that failed was going. */
export type StorageTarget = 'spool' | 'mailbox';

export type StorageStatus = '4.3.1' | '4.2.2' | '4.3.0';

/** storageStatus - the RFC 3463 status of a failed write of mail into `target`. */
export function storageStatus(e: unknown, target: StorageTarget): StorageStatus {
  const code = errno(e);
  if (code === 'ENOSPC') return '4.3.1';
  if (code === 'EDQUOT') return target === 'mailbox' ? '4.2.2' : '4.3.1';
  return '4.3.0';
}
