/*
 * admin/events-stream - `GET /api/events/stream`: the mail events as they
 * happen, as server-sent events (text/event-stream), for the web viewer's
 * live updates and for scripts (`curl -N`). Each message is
 *
 *     id: <seq>
 *     event: mail
 *     data: <the event's JSON, as in events.jsonl>
 *
 * Resuming: a client that lost its connection comes back with
 * `Last-Event-ID: <seq>` (EventSource does this by itself), or `?after=<seq>`;
 * the events after that seq are replayed from the store (store.eventsAfter,
 * REPLAY_PAGE at a time) before the live ones, so nothing is missed and
 * nothing is sent twice. Without either, the stream starts at the newest
 * durable event. A client further behind than `maxReplay` events gets
 * `event: reset` (read everything again) and goes on from now.
 *
 * Invariants:
 * - bounded: at most `maxClients` streams; a client whose unsent output
 *   passes `maxBuffered` octets (it does not read) is cut off, never buffered
 *   without limit — it resumes with Last-Event-ID and loses nothing;
 * - one store listener for every stream (store.onEvents has no removal): the
 *   hub fans events out;
 * - a comment line every `heartbeatMs` keeps proxies and idle timers from
 *   closing a quiet stream.
 * Events come from this node's store listener; in a cluster the events other
 * nodes write reach a stream on this node only by a resume (eventsAfter).
 *
 * Untrusted input: Last-Event-ID and `after` (numbers, checked).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MailEvent } from '../log/events.js';
import type { QueueStore } from '../queue/store.js';
import { eventJson } from './json.js';

export interface EventStreamLimits {
  maxClients: number;
  /** Octets of unsent output a client may have before it is cut off. */
  maxBuffered: number;
  /** Events a resuming client may be behind before it is told to reset instead. */
  maxReplay: number;
  heartbeatMs: number;
}

export const DEFAULT_STREAM_LIMITS: EventStreamLimits = { maxClients: 100, maxBuffered: 1024 * 1024, maxReplay: 20_000, heartbeatMs: 15_000 };

const REPLAY_PAGE = 500;

interface Client {
  res: ServerResponse;
  /** The last seq written to it. */
  sent: number;
  /** Live events that came while the replay was running (sent after it, those beyond `sent`). */
  pending: MailEvent[] | null;
  closed: boolean;
}

export class EventStreamHub {
  private readonly clients = new Set<Client>();
  private readonly limits: EventStreamLimits;
  private heartbeat: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Clients cut off for not reading (tests and metrics read it). */
  cutOff = 0;

  constructor(
    private readonly store: QueueStore,
    limits: Partial<EventStreamLimits> = {},
  ) {
    this.limits = { ...DEFAULT_STREAM_LIMITS, ...limits };
    store.onEvents((events) => this.publish(events));
  }

  get size(): number {
    return this.clients.size;
  }

  /** handle - answer one stream request (auth was checked by the server). */
  async handle(req: IncomingMessage, res: ServerResponse, headers: Record<string, string>, after: string | null): Promise<void> {
    if (this.stopped || this.clients.size >= this.limits.maxClients) {
      res.writeHead(503, { ...headers, 'Content-Type': 'application/json; charset=utf-8', 'Retry-After': '5' });
      return void res.end(JSON.stringify({ error: `at most ${this.limits.maxClients} event streams at once` }));
    }
    const raw = (req.headers['last-event-id'] as string | undefined) ?? after;
    let from: number | null = null;
    if (raw !== undefined && raw !== null && raw !== '') {
      from = Number(raw);
      if (!Number.isSafeInteger(from) || from < 0) {
        res.writeHead(400, { ...headers, 'Content-Type': 'application/json; charset=utf-8' });
        return void res.end(JSON.stringify({ error: 'Last-Event-ID (or after) must be the seq of an event' }));
      }
    }
    res.writeHead(200, { ...headers, 'Content-Type': 'text/event-stream; charset=utf-8', 'X-Accel-Buffering': 'no', Connection: 'keep-alive' });
    res.socket?.setNoDelay(true);
    const c: Client = { res, sent: from ?? this.store.durableEventSeq(), pending: [], closed: false };
    this.clients.add(c);
    const drop = (): void => {
      c.closed = true;
      this.clients.delete(c);
    };
    res.on('close', drop);
    this.write(c, `retry: 2000\n: resuming after ${c.sent}\n\n`);
    this.startHeartbeat();
    try {
      if (from !== null) await this.replay(c);
    } catch {
      this.write(c, 'event: reset\ndata: {}\n\n');
      c.sent = this.store.durableEventSeq();
    }
    const pending = c.pending ?? [];
    c.pending = null;
    this.send(c, pending);
  }

  /** replay - the events after c.sent from the store, a page at a time; a client too far behind is told to reset. */
  private async replay(c: Client): Promise<void> {
    let replayed = 0;
    for (;;) {
      if (c.closed) return;
      const page = await this.store.eventsAfter(c.sent, REPLAY_PAGE);
      if (replayed + page.length > this.limits.maxReplay) {
        this.write(c, `event: reset\ndata: ${JSON.stringify({ reason: `more than ${this.limits.maxReplay} events to replay` })}\n\n`);
        c.sent = this.store.durableEventSeq();
        return;
      }
      this.send(c, page);
      replayed += page.length;
      if (page.length < REPLAY_PAGE) return;
      // Wait for the client to take what was written before reading more (bounded, as live events are).
      if (c.res.writableNeedDrain) await new Promise<void>((resolve) => c.res.once('drain', resolve).once('close', resolve));
    }
  }

  private publish(events: MailEvent[]): void {
    if (this.stopped || this.clients.size === 0) return;
    for (const c of this.clients) {
      if (c.pending) c.pending.push(...events);
      else this.send(c, events);
    }
  }

  /** send - the events beyond what the client has, in order. */
  private send(c: Client, events: MailEvent[]): void {
    let out = '';
    for (const e of events) {
      const seq = e.seq ?? 0;
      if (seq <= c.sent) continue;
      out += `id: ${seq}\nevent: mail\ndata: ${JSON.stringify(eventJson(e))}\n\n`;
      c.sent = seq;
    }
    if (out) this.write(c, out);
  }

  /** write - to the client, unless it has more than maxBuffered octets unsent: then it is cut off. */
  private write(c: Client, text: string): void {
    if (c.closed) return;
    if (c.res.writableLength > this.limits.maxBuffered) {
      this.cutOff++;
      c.closed = true;
      this.clients.delete(c);
      c.res.destroy();
      return;
    }
    c.res.write(text);
  }

  private startHeartbeat(): void {
    if (this.heartbeat) return;
    this.heartbeat = setInterval(() => {
      if (this.clients.size === 0) {
        clearInterval(this.heartbeat!);
        this.heartbeat = null;
        return;
      }
      for (const c of this.clients) this.write(c, ': ping\n\n');
    }, this.limits.heartbeatMs);
    this.heartbeat.unref();
  }

  /** disconnectAll - cut every stream now (as a network drop would); clients come back with Last-Event-ID. */
  disconnectAll(): void {
    for (const c of this.clients) {
      c.closed = true;
      c.res.destroy();
    }
    this.clients.clear();
  }

  /** close - end every stream (the listener closes). */
  close(): void {
    this.stopped = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    for (const c of this.clients) {
      c.closed = true;
      c.res.end();
    }
    this.clients.clear();
  }
}
