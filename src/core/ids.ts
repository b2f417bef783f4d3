/*
 * core/ids - queue ids and Message-IDs.
 *
 * A queue id is 16 characters of Crockford base32: 9 of milliseconds since the
 * epoch (sorts by arrival), then 7 of a per-process counter seeded at random.
 * Unique within a process by the counter, across restarts and nodes by the
 * random seed and the clock; safe in file names and URLs. The processes of
 * one server (`[server] workers`) each count in their own share of the
 * counter's range (idRange): two of them never make the same id in the same
 * millisecond.
 */
import { randomBytes, randomInt } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** The counter's range: 32^7 values, cut into 256 shares of 2^27 (one per process of a server). */
const SHARE = 2 ** 27;
let base = 0;
let span = 32 ** 7;
let counter = randomInt(0, 2 ** 30);

/** idRange - this process counts only in share `n` (0..255) from now on: the primary is 0, inbound workers 1.. (workers/). */
export function idRange(n: number): void {
  base = n * SHARE;
  span = SHARE;
  counter = base + randomInt(0, SHARE);
}

function base32(n: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    out = ALPHABET[n % 32]! + out;
    n = Math.floor(n / 32);
  }
  return out;
}

export function newQueueId(now = Date.now()): string {
  counter = base + ((counter - base + 1) % span);
  return base32(now, 9) + base32(counter, 7);
}

export function isQueueId(text: string): boolean {
  return /^[0-9A-HJKMNP-TV-Z]{16}$/.test(text);
}

/** newMessageId - "<queueid.random@hostname>" for messages that arrive without one. */
export function newMessageId(hostname: string, queueId = newQueueId()): string {
  return `<${queueId}.${randomBytes(4).toString('hex')}@${hostname}>`;
}

/** normalizeMessageId - strip the angle brackets, as `--message-id` accepts both. */
export function normalizeMessageId(text: string): string {
  return text.trim().replace(/^<(.*)>$/, '$1');
}
