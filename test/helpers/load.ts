/*
 * test/helpers/load - SMTP load for crash tests and benchmarks: C client
 * connections send numbered messages (unique Message-IDs) until the counter
 * reaches its end or the server goes away, recording which ones got 250.
 * Bounded by the counter; a connection lost mid-message simply stops that
 * client (that message was not acknowledged).
 */
import { SmtpTalk } from './smtp-talk.js';

export interface LoadCounter {
  /** Next message number to send. */
  i: number;
  /** Stop before this number. */
  to: number;
}

export interface LoadOptions {
  clients: number;
  recipients?: number;
  /** Octets of body per message (approximate). */
  size?: number;
  prefix?: string;
}

/** messageIdOf - the Message-ID load message n carries. */
export function messageIdOf(n: number, prefix = 'load'): string {
  return `<${prefix}-${n}@example.com>`;
}

/** sendLoad - run the clients until the counter is exhausted or the server dies. */
export async function sendLoad(port: number, next: LoadCounter, acked: Set<string>, o: LoadOptions): Promise<void> {
  const rcpts = o.recipients ?? 1;
  const filler = 'body '.repeat(Math.max(1, Math.floor((o.size ?? 1000) / 5)));
  const client = async (): Promise<void> => {
    let t: SmtpTalk;
    try {
      t = await SmtpTalk.open(port);
      await t.read();
      await t.cmd('EHLO load.test');
    } catch {
      return;
    }
    try {
      while (next.i < next.to) {
        const n = next.i++;
        const id = messageIdOf(n, o.prefix);
        const to = Array.from({ length: rcpts }, (_, k) => `r${n}-${k}@remote.example`);
        const r = await t.send('load@example.com', to, `Subject: load ${n}\r\nMessage-ID: ${id}\r\n\r\n${filler}\r\n`);
        if (r.code === 250) acked.add(id);
      }
      await t.cmd('QUIT').catch(() => undefined);
    } catch {
      // The server was killed mid-conversation: this message was not acknowledged.
    } finally {
      t.close();
    }
  };
  await Promise.all(Array.from({ length: o.clients }, client));
}
