/*
 * cli/admin-client - how the queue commands reach the queue: over the
 * running server's admin API, or — when nothing answers there (connection
 * refused, or `[admin] listen = ""`) — by opening the queue store directly
 * and running the very same routes in-process (admin/routes +
 * admin/actions), so both ways answer alike.
 *
 * Opening the store directly never runs crash recovery (a server might be
 * running with its admin listener off: its claims and new bodies are left
 * alone) and never creates a queue: no queue.db means "unavailable" (69).
 * Offline, actions are written to the store; the server picks them up when
 * it starts (reports for `delete --ndr` are made then).
 *
 * Untrusted input: the server's replies (parsed as JSON, shown as text).
 */
import { request } from 'node:http';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import { AdminActions, AdminError, type Params } from '../admin/actions.js';
import { match } from '../admin/routes.js';
import type { Config } from '../config/schema.js';
import { openQueue, QueueUnavailable, redactUrl } from '../queue/open.js';
import type { Queue } from '../queue/queue.js';

export interface Answer {
  status: number;
  // The API's JSON, checked by each command as it reads it.
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON from the API; each command reads the fields it printed
  /** "server" or "store" (offline). */
  via: 'server' | 'store';
}

export class Unavailable extends Error {}

/** The operator's name in events: "user@host (cli)". */
export function cliOperator(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry: keep "unknown"
  }
  return `${user}@${hostname()} (cli)`;
}

export class AdminClient {
  private store: Queue | null = null;
  private offlineNoted = false;

  constructor(
    private readonly config: Config,
    private readonly note: (s: string) => void,
  ) {}

  /** call - one API request; falls back to the store when the server does not answer. */
  async call(method: 'GET' | 'POST', path: string, params: Params = {}, body: Record<string, unknown> = {}): Promise<Answer> {
    const qs = new URLSearchParams(Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined)).toString();
    const listen = this.config.admin.listen;
    if (listen && !this.store) {
      try {
        return await this.http(method, path + (qs ? `?${qs}` : ''), body);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ECONNREFUSED') throw new Unavailable(`cannot reach the admin API at ${listen.host}:${listen.port}: ${(e as Error).message}`);
      }
    }
    return this.local(method, path, params, body);
  }

  private http(method: string, path: string, body: Record<string, unknown>): Promise<Answer> {
    const listen = this.config.admin.listen!;
    const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
    const payload = method === 'POST' ? JSON.stringify(body) : undefined;
    const headers: Record<string, string> = { Host: `${host.includes(':') ? `[${host}]` : host}:${listen.port}` };
    if (this.config.admin.token) headers.Authorization = `Bearer ${this.config.admin.token}`;
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(payload));
    }
    return new Promise((resolve, reject) => {
      const req = request({ host, port: listen.port, method, path, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = { error: text.slice(0, 500) };
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, via: 'server' });
        });
      });
      req.setTimeout(60_000, () => req.destroy(new Error('no answer within 60 s')));
      req.on('error', reject);
      req.end(payload);
    });
  }

  private async local(method: 'GET' | 'POST', path: string, params: Params, body: Record<string, unknown>): Promise<Answer> {
    const where = this.config.admin.listen ? `the server does not answer at ${this.config.admin.listen.host}:${this.config.admin.listen.port}` : 'the admin listener is off';
    const queue = this.config.queue.backend === 'postgres' ? `the queue database ${redactUrl(this.config.queue.postgres_url)}` : `the queue at ${join(this.config.data_dir, 'queue', 'queue.db')}`;
    if (!this.store) {
      try {
        this.store = await openQueue(this.config, { recover: false });
      } catch (e) {
        if (e instanceof QueueUnavailable && this.config.queue.backend === 'embedded') throw new Unavailable(`${where}, and there is no queue at ${join(this.config.data_dir, 'queue', 'queue.db')}`);
        throw new Unavailable(`${where}, and ${queue} cannot be opened: ${(e as Error).message}`);
      }
    }
    if (!this.offlineNoted) {
      this.offlineNoted = true;
      this.note(`petrel: the server is not running here; using ${queue} directly`);
    }
    const actions = new AdminActions({ store: this.store });
    try {
      const { route, parts } = match(method, path);
      const result = await route.handle(actions, { params, parts, body, defaultOperator: cliOperator() });
      return { status: 200, body: result, via: 'store' };
    } catch (e) {
      if (e instanceof AdminError) return { status: e.status, body: { error: e.message }, via: 'store' };
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.store?.close();
    this.store = null;
  }
}
