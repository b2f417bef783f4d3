/*
 * test/helpers/jobs - DeliveryJob builders and a result collector for agent
 * tests: the collector fails the test when a recipient gets two results.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import type { DeliveryJob, NextHop, RecipientResult } from '../../src/delivery/agent.js';
import type { TlsMode } from '../../src/delivery/tls/outcome.js';
import { newRecipientRecord, type MessageRecord, type RecipientRecord } from '../../src/queue/store.js';

let nextId = 1;

export interface JobOptions {
  sender?: string;
  body?: Buffer | string | (() => Readable);
  smtputf8?: boolean;
  eightBit?: boolean;
  envid?: string | null;
  ret?: 'FULL' | 'HDRS' | null;
  notify?: string | null;
  orcpt?: (address: string) => string | null;
  size?: number;
}

export const SMALL_BODY = 'From: a@example.org\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n';

/** makeJob - a job for `addresses` going to `hop`, with the body held in memory (or made by a function). */
export function makeJob(addresses: string[], hop: NextHop, o: JobOptions = {}): DeliveryJob {
  const queueId = `Q${nextId++}`;
  const bodyOpt = o.body ?? SMALL_BODY;
  const bodyBuf = typeof bodyOpt === 'function' ? null : Buffer.from(bodyOpt);
  const message: MessageRecord = {
    queueId,
    messageId: `<${queueId}@test>`,
    sender: o.sender ?? 'sender@example.org',
    envid: o.envid ?? null,
    ret: o.ret ?? null,
    size: o.size ?? bodyBuf?.length ?? 1000,
    receivedAt: Date.now(),
    smtputf8: o.smtputf8 ?? false,
    eightBit: o.eightBit ?? false,
    isReport: false,
    client: 'test',
    subject: 'test',
    recipientCount: addresses.length,
    quarantine: '',
  };
  const recipients: RecipientRecord[] = addresses.map((address) =>
    newRecipientRecord(nextId++, queueId, { address, orcpt: o.orcpt ? o.orcpt(address) : null, notify: o.notify ?? null, destination: 'test' }, 'delivering', 0),
  );
  return {
    message,
    recipients,
    hop,
    openBody: async () => (typeof bodyOpt === 'function' ? bodyOpt() : Readable.from([bodyBuf!])),
  };
}

export interface Collected {
  report: (results: RecipientResult[]) => void;
  /** Result per recipient address. */
  byAddress: Map<string, RecipientResult>;
  /** Number of report calls (one per transaction or so). */
  calls: number;
  count(kind: RecipientResult['kind']): number;
}

/** collect - a report callback that records results and rejects a second result for a recipient. */
export function collect(job: DeliveryJob): Collected {
  const addr = new Map(job.recipients.map((r) => [r.id, r.address]));
  const c: Collected = {
    byAddress: new Map(),
    calls: 0,
    report: (results) => {
      c.calls++;
      for (const r of results) {
        const a = addr.get(r.recipientId);
        assert.ok(a, `result for unknown recipient ${r.recipientId}`);
        assert.ok(!c.byAddress.has(a), `second result for ${a}`);
        c.byAddress.set(a, r);
      }
    },
    count: (kind) => [...c.byAddress.values()].filter((r) => r.kind === kind).length,
  };
  return c;
}

/** rcpts - n addresses "u<i>@domain". */
export function rcpts(n: number, domain = 'example.net'): string[] {
  return Array.from({ length: n }, (_, i) => `u${i + 1}@${domain}`);
}

/** fixedHop - an smtp next hop to one host and port. */
export function fixedHop(port: number, host = '127.0.0.1', tls: TlsMode = 'opportunistic'): NextHop {
  return { kind: 'smtp', key: `${host}:${port}`, hosts: 'fixed', host, port, tls };
}

/** mxHop - an smtp next hop by MX. */
export function mxHop(domain: string, port: number, tls: TlsMode = 'opportunistic'): NextHop {
  return { kind: 'smtp', key: domain, hosts: 'mx', domain, port, tls };
}
