/*
 * delivery/lmtp/lmtp-agent - LmtpAgent: the DeliveryAgent for `lmtp` next hops
 * (`lmtp:HOST:PORT` or `lmtp:/path/to/socket`), RFC 2033.
 *
 * It is the SMTP machinery in LMTP mode: LHLO instead of EHLO, and after the
 * data one reply per accepted recipient, in RCPT order, each deciding that
 * recipient alone (session.ts). 452/552 at RCPT are re-sent as for SMTP.
 * STARTTLS is used when a TCP peer offers it; never on a unix socket.
 *
 * Untrusted input: the LMTP server's replies (client.ts).
 */
import type { Config } from '../../config/schema.js';
import type { DeliveryAgent, DeliveryJob, NextHop, RecipientResult } from '../agent.js';
import { resultsFor } from '../agent.js';
import { SmtpClient, type SmtpTimeouts } from '../smtp/client.js';
import { deliverPooled } from '../smtp/deliver.js';
import { ConnectionPool, type PoolOptions } from '../smtp/pool.js';
import { poolOptionsFrom } from '../smtp/smtp-agent.js';

type LmtpHop = Extract<NextHop, { kind: 'lmtp' }>;

export interface LmtpAgentOptions {
  heloName: string;
  maxRecipientsPerTransaction: number;
  timeouts?: Partial<SmtpTimeouts>;
  pool?: ConnectionPool;
  poolOptions?: Partial<PoolOptions>;
}

export class LmtpAgent implements DeliveryAgent {
  readonly pool: ConnectionPool;
  private readonly ownPool: boolean;

  constructor(readonly options: LmtpAgentOptions) {
    this.ownPool = !options.pool;
    this.pool = options.pool ?? new ConnectionPool(options.poolOptions);
  }

  /** fromConfig - an agent with the [delivery] settings of `config`. */
  static fromConfig(config: Config, extra: Partial<LmtpAgentOptions> = {}): LmtpAgent {
    const d = config.delivery;
    return new LmtpAgent({
      heloName: d.helo_name || config.hostname,
      maxRecipientsPerTransaction: d.max_recipients_per_transaction,
      timeouts: { connect: d.connect_timeout },
      poolOptions: poolOptionsFrom(config),
      ...extra,
    });
  }

  /** deliver - attempt the job; every recipient gets one result through `report`. */
  async deliver(job: DeliveryJob, report: (results: RecipientResult[]) => void): Promise<void> {
    const hop = job.hop;
    if (hop.kind !== 'lmtp') {
      report(resultsFor(job.recipients, { kind: 'deferred', status: '4.3.5', reply: `lmtp agent given a ${hop.kind} next hop`, remote: hop.key, remoteReply: false }));
      return;
    }
    const label = 'socket' in hop ? `lmtp:${hop.socket}` : `lmtp:${hop.host}:${hop.port}`;
    await deliverPooled(job, report, {
      pool: this.pool,
      key: `lmtp:${hop.key}:${label}`,
      label,
      open: () => this.open(hop),
      maxRecipients: this.options.maxRecipientsPerTransaction,
    });
  }

  async close(): Promise<void> {
    if (this.ownPool) await this.pool.close();
  }

  /** open - a connected LMTP client (throws ClientError). */
  async open(hop: LmtpHop): Promise<SmtpClient> {
    const timeouts = this.options.timeouts ? { timeouts: this.options.timeouts } : {};
    const client =
      'socket' in hop
        ? new SmtpClient({ path: hop.socket, lmtp: true, heloName: this.options.heloName, tls: 'none', ...timeouts })
        : new SmtpClient({ host: hop.host, port: hop.port, hostname: hop.host, lmtp: true, heloName: this.options.heloName, tls: 'opportunistic', ...timeouts });
    await client.connect();
    return client;
  }
}
