/*
 * inbound/server - the SMTP listeners: accepts connections, enforces the
 * connection limits (`max_connections` in all, `max_connections_per_client`
 * for every client address — relay networks included) with 421 4.7.0 at the
 * greeting, and starts a Session for each.
 *
 * Invariants: the per-client table holds only addresses with open
 * connections (bounded by max_connections); close() stops accepting at once
 * and lets sessions finish the reply they are writing.
 *
 * In an inbound worker (`[server] workers`) the limits are the whole
 * server's: a ConnectionGate asks the primary, which counts the connections
 * of every worker, before the greeting.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { smtpReply } from '../core/replies.js';
import type { Endpoint } from '../config/schema.js';
import { normalizeIp } from './policy.js';
import { Session, type SessionContext } from './smtp-session.js';

/** Counts connections across processes: admit before the greeting, release at the end of an admitted one. */
export interface ConnectionGate {
  /** null: serve it; else the name of the 421 reply to give. */
  admit(ip: string): Promise<'tooManyConnections' | 'tooManyFromClient' | null>;
  release(ip: string): void;
}

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

  constructor(
    private readonly ctx: SessionContext,
    private readonly gate: ConnectionGate | null = null,
  ) {}

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
    if (this.gate) return this.acceptGated(socket, kind, ip, this.gate);
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

  /** acceptGated - the session starts once the gate (the primary) has counted it: greeted, or refused with 421. */
  private acceptGated(socket: Socket, kind: BoundListener['kind'], ip: string, gate: ConnectionGate): void {
    let state: 'asking' | 'admitted' | 'refused' | 'closed' = 'asking';
    this.sockets.add(socket);
    const session = new Session(socket, this.ctx, () => {
      this.sessions.delete(session);
      this.sockets.delete(socket);
      if (state === 'admitted') gate.release(ip);
      state = 'closed';
    }, kind);
    this.sessions.add(session);
    const hostname = this.ctx.config.hostname;
    gate.admit(ip).then(
      (refusal) => {
        if (state === 'closed') {
          if (!refusal) gate.release(ip);
          return;
        }
        state = refusal ? 'refused' : 'admitted';
        session.start(refusal ? smtpReply(refusal, hostname) : null);
      },
      // The primary is gone: this process ends in a moment; serve no one meanwhile.
      () => state !== 'closed' && session.start(smtpReply('tooManyConnections', hostname)),
    );
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
