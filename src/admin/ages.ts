/*
 * admin/ages - `petrel queue --ages` and `GET /api/queue/ages`: the
 * recipients still in the queue (queued, delivering, deferred, quarantined)
 * per destination by age, in the buckets of Postfix's qshape: 5, 10, 20, 40,
 * 80, 160, 320, 640, 1280 minutes and older. A recipient's age is that of its
 * message (the arrival time its queue id carries, core/ids), so a bucket "10"
 * holds recipients of messages that arrived 5 to 10 minutes ago.
 *
 * Cost: O(recipients in the store) per call — a page-wise scan
 * (store.scanRecipients, SCAN_PAGE at a time, in id order), with memory
 * bounded by the counts kept (one row of buckets per destination), never the
 * recipients. Fine for an operator's command; nothing calls it on a timer.
 * It works on every queue backend alike (no backend method of its own).
 */
import type { QueueStore } from '../queue/store.js';

/** Upper bounds of the buckets in minutes; a last bucket holds everything older. */
export const AGE_BUCKETS_MIN = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const;
export const AGE_BUCKET_NAMES = [...AGE_BUCKETS_MIN.map((m) => `${m}m`), `${AGE_BUCKETS_MIN[AGE_BUCKETS_MIN.length - 1]}m+`];

const SCAN_PAGE = 2000;
const FINAL = new Set(['delivered', 'failed', 'expired', 'removed']);
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

export interface AgesRow {
  destination: string;
  total: number;
  /** One count per bucket, in AGE_BUCKET_NAMES order. */
  counts: number[];
}

export interface AgesView {
  /** Bucket names: "5m" holds ages up to 5 minutes, "10m" 5 to 10, ..., "1280m+" older than 1280. */
  buckets: string[];
  /** Largest total first. */
  destinations: AgesRow[];
  total: AgesRow;
  at: string;
}

/** arrivalOf - the arrival time (epoch ms) a queue id carries in its first 9 characters; null if it is not one. */
export function arrivalOf(queueId: string): number | null {
  let n = 0;
  for (let i = 0; i < 9; i++) {
    const v = ALPHABET.indexOf(queueId[i] ?? '');
    if (v < 0) return null;
    n = n * 32 + v;
  }
  return n;
}

/** bucketOf - the bucket index for an age in ms. */
export function bucketOf(ageMs: number): number {
  const min = ageMs / 60_000;
  for (let i = 0; i < AGE_BUCKETS_MIN.length; i++) if (min <= AGE_BUCKETS_MIN[i]!) return i;
  return AGE_BUCKETS_MIN.length;
}

/** queueAges - see the file comment. */
export async function queueAges(store: QueueStore, now: number): Promise<AgesView> {
  const rows = new Map<string, AgesRow>();
  const total: AgesRow = { destination: 'TOTAL', total: 0, counts: AGE_BUCKET_NAMES.map(() => 0) };
  let after = 0;
  for (;;) {
    const page = await store.scanRecipients(after, SCAN_PAGE);
    for (const r of page) {
      if (FINAL.has(r.state)) continue;
      const b = bucketOf(Math.max(0, now - (arrivalOf(r.queueId) ?? now)));
      let row = rows.get(r.destination);
      if (!row) rows.set(r.destination, (row = { destination: r.destination, total: 0, counts: AGE_BUCKET_NAMES.map(() => 0) }));
      row.total++;
      row.counts[b]!++;
      total.total++;
      total.counts[b]!++;
    }
    if (page.length < SCAN_PAGE) break;
    after = page[page.length - 1]!.id;
  }
  const destinations = [...rows.values()].sort((a, b) => b.total - a.total || a.destination.localeCompare(b.destination));
  return { buckets: AGE_BUCKET_NAMES, destinations, total, at: new Date(now).toISOString() };
}
