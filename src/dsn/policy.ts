/*
 * dsn/policy - who gets a report, in one place (RFC 3461 §4.1; invariants 2
 * and 9): the scheduler asks it when an outcome is recorded, the admin
 * actions when an operator deletes with --ndr, the reporter when it
 * addresses a report.
 *
 * - never to the null sender <> (no report about a report's failure goes to
 *   its sender; DSNs are not sent about DSNs);
 * - a report of Petrel's own that fails is reported to the postmaster (its
 *   NOTIFY does not apply); a failed postmaster notice is reported to no one;
 * - otherwise NOTIFY decides: absent means FAILURE and DELAY.
 */
import type { MessageRecord, RecipientRecord } from '../queue/store.js';

/** The `client` of a report whose subject was itself a report: it goes to the postmaster. */
export const POSTMASTER_NOTICE = 'postmaster-notice';

export type NotifyKind = 'SUCCESS' | 'FAILURE' | 'DELAY';

/** wantsReport - does NOTIFY (null: not given) ask for this kind of report (RFC 3461 §4.1)? */
export function wantsReport(notify: string | null, kind: NotifyKind): boolean {
  if (notify === null) return kind !== 'SUCCESS';
  return notify.split(',').includes(kind);
}

/** reportWanted - should this outcome of this recipient produce a report? */
export function reportWanted(m: MessageRecord, r: RecipientRecord, kind: NotifyKind): boolean {
  if (m.isReport) return kind === 'FAILURE' && m.client !== POSTMASTER_NOTICE;
  return m.sender !== '' && wantsReport(r.notify, kind);
}
