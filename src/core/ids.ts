/*
 * core/ids - queue ids and Message-IDs.
 *
 * A queue id is 16 characters of Crockford base32: 9 of milliseconds since the
 * epoch (sorts by arrival), then 7 of a per-process counter seeded at random.
 * Unique within a process by the counter, across restarts and nodes by the
 * random seed and the clock; safe in file names and URLs.
 */
import { randomBytes, randomInt } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
let counter = randomInt(0, 2 ** 30);

function base32(n: number, width: number): string {
  let out = '';
  for (let i = 0; i < width; i++) {
    out = ALPHABET[n % 32]! + out;
    n = Math.floor(n / 32);
  }
  return out;
}

export function newQueueId(now = Date.now()): string {
  counter = (counter + 1) % 32 ** 7;
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
