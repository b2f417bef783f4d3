/*
 * inbound/server - the SMTP listeners: accepts connections, enforces the
 * connection limits (`max_connections` in all, `max_connections_per_client`
 * for every client address — relay networks included) with 421 4.7.0 at the
 * greeting, and starts a Session for each.
 *
 * Invariants: the per-client table holds only addresses with open
 * connections (bounded by max_connections); close() stops accepting at once
 * and lets sessions finish the reply they are writing.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { smtpReply } from '../core/replies.js';
import type { Endpoint } from '../config/schema.js';
import { normalizeIp } from './policy.js';
import { Session, type SessionContext } from './smtp-session.js';

export interface BoundListener {
  kind: 'smtp' | 'submission';
  host: string;
  port: number;
}

/** listenerKey - a listener as the configuration names it ("smtp 127.0.0.1:25"). */
function listenerKey(kind: BoundListener['kind'], ep: Endpoint): string {
  return `${kind} ${ep.host}:${ep.port}`;
}

export class InboundServer {
  private servers: Array<{ server: Server; kind: BoundListener['kind']; key: string; bound: BoundListener }> = [];
  private readonly sessions = new Set<Session>();
  private readonly sockets = new Set<Socket>();
  private readonly perClient = new Map<string, number>();
  readonly bound: BoundListener[] = [];

  constructor(private readonly ctx: SessionContext) {}

  get connectionCount(): number {
    return this.sessions.size;
  }

  async listen(): Promise<void> {
    for (const ep of this.ctx.config.smtp.listen) await this.listenOne(ep, 'smtp');
    for (const ep of this.ctx.config.smtp.submission_listen) await this.listenOne(ep, 'submission');
  }

  /**
   * openListeners - (reload) start the listeners of these lists that are not
   * open yet. All or nothing: when one cannot be opened, those opened here are
   * closed again and the error is thrown.
   */
  async openListeners(listen: readonly Endpoint[], submission: readonly Endpoint[]): Promise<void> {
    const open = new Set(this.servers.map((s) => s.key));
    const opened: string[] = [];
    try {
      for (const [kind, eps] of [['smtp', listen], ['submission', submission]] as const) {
        for (const ep of eps) {
          const key = listenerKey(kind, ep);
          if (open.has(key)) continue;
          await this.listenOne(ep, kind);
          open.add(key);
          opened.push(key);
        }
      }
    } catch (e) {
      await this.closeWhere((key) => opened.includes(key));
      throw e;
    }
  }

  /** closeListeners - (reload) stop accepting on the listeners not in these lists; their sessions go on. */
  async closeListeners(listen: readonly Endpoint[], submission: readonly Endpoint[]): Promise<void> {
    const keep = new Set([...listen.map((ep) => listenerKey('smtp', ep)), ...submission.map((ep) => listenerKey('submission', ep))]);
    await this.closeWhere((key) => !keep.has(key));
  }

  private async closeWhere(match: (key: string) => boolean): Promise<void> {
    const closing = this.servers.filter((s) => match(s.key));
    this.servers = this.servers.filter((s) => !match(s.key));
    for (const s of closing) {
      const i = this.bound.indexOf(s.bound);
      if (i >= 0) this.bound.splice(i, 1);
    }
    // server.close() calls back only once its connections are gone: do not wait for it.
    for (const s of closing) s.server.close();
  }

  private listenOne(ep: Endpoint, kind: BoundListener['kind']): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true }, (socket) => this.accept(socket, kind));
      server.once('error', reject);
      server.listen({ host: ep.host, port: ep.port, backlog: 1024 }, () => {
        server.off('error', reject);
        server.on('error', (e) => this.ctx.trace.error({ err: e.message }, 'listener error'));
        const addr = server.address();
        const port = typeof addr === 'object' && addr ? addr.port : ep.port;
        const bound = { kind, host: ep.host, port };
        this.bound.push(bound);
        this.servers.push({ server, kind, key: listenerKey(kind, ep), bound });
        resolve();
      });
    });
  }

  private accept(socket: Socket, kind: BoundListener['kind']): void {
    const ip = normalizeIp(socket.remoteAddress ?? '');
    const limits = this.ctx.config.smtp;
    this.ctx.onConnect?.();
    let refusal = null;
    if (this.sessions.size >= limits.max_connections) {
      refusal = smtpReply('tooManyConnections', this.ctx.config.hostname);
    } else if ((this.perClient.get(ip) ?? 0) >= limits.max_connections_per_client) {
      refusal = smtpReply('tooManyFromClient', this.ctx.config.hostname);
    }
    if (refusal) {
      // Not counted: the socket is answered and closed at once.
      socket.on('error', () => undefined);
      socket.end(`${refusal.code} ${refusal.enhanced} ${refusal.lines[0]}\r\n`);
      setTimeout(() => socket.destroy(), 2000).unref();
      this.ctx.onReply?.(421);
      return;
    }
    this.perClient.set(ip, (this.perClient.get(ip) ?? 0) + 1);
    this.sockets.add(socket);
    const session = new Session(socket, this.ctx, () => {
      this.sessions.delete(session);
      this.sockets.delete(socket);
      const n = (this.perClient.get(ip) ?? 1) - 1;
      if (n <= 0) this.perClient.delete(ip);
      else this.perClient.set(ip, n);
    }, kind);
    this.sessions.add(session);
    session.start(null);
  }

  /** close - stop listening at once; give sessions `graceMs` to finish their replies, then drop them. */
  async close(graceMs = 5000): Promise<void> {
    // server.close() only calls back once every connection is gone: start it, do not wait for it yet.
    const closed = this.servers.map(({ server }) => new Promise<void>((r) => server.close(() => r())));
    this.servers = [];
    for (const s of this.sessions) s.shutdown();
    const deadline = Date.now() + graceMs;
    while (this.sessions.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const s of this.sockets) s.destroy();
    await Promise.all(closed);
  }
}
