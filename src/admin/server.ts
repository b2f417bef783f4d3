/*
 * admin/server - the admin listener (`[admin] listen`, default
 * 127.0.0.1:8025; "" turns it off): the JSON API (admin/routes), the web
 * queue viewer (admin/static), /metrics (admin/metrics), the live event
 * stream (admin/events-stream) and the viewer's login form. Plain node:http.
 *
 * Invariants:
 * - every path but the login form passes admin/auth first (token or session
 *   when a token is set; a loopback Host header when it is not);
 * - actions are POST with a JSON body and a same-origin (or no) Origin;
 * - request bodies are bounded (MAX_BODY); responses are never cached; pages
 *   carry a Content-Security-Policy that allows only this origin;
 * - no URL is mapped to a file: the viewer's files are served from memory by
 *   exact name (admin/static-files).
 *
 * Untrusted input: everything in the request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Endpoint } from '../config/schema.js';
import type { Trace } from '../log/trace.js';
import { AdminActions, AdminError, type Params } from './actions.js';
import { AdminAuth } from './auth.js';
import { EventStreamHub, type EventStreamLimits } from './events-stream.js';
import type { AdminMetrics } from './metrics.js';
import { match } from './routes.js';
import { loadStaticFiles, type StaticFile } from './static-files.js';

/** Largest request body accepted (an action's JSON is a few hundred octets). */
const MAX_BODY = 64 * 1024;

const SECURITY_HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
};
const PAGE_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

export interface AdminServerDeps {
  listen: Endpoint;
  token: string;
  actions: AdminActions;
  metrics: AdminMetrics | null;
  trace: Trace;
  /** Bounds of the live event stream (tests make them small). */
  streamLimits?: Partial<EventStreamLimits>;
}

export class AdminServer {
  private server: Server | null = null;
  private readonly auth: AdminAuth;
  private readonly files: Map<string, StaticFile>;
  /** GET /api/events/stream: the mail events as server-sent events (admin/events-stream). */
  readonly stream: EventStreamHub;
  bound: Endpoint | null = null;

  constructor(private readonly deps: AdminServerDeps) {
    this.auth = new AdminAuth(deps.token);
    this.files = loadStaticFiles();
    this.stream = new EventStreamHub(deps.actions.store, deps.streamLimits);
  }

  async listen(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        this.deps.trace.error({ err: (e as Error).stack }, 'admin request failed');
        if (!res.headersSent) this.json(res, 500, { error: 'internal error' });
        else res.destroy();
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.deps.listen.host, port: this.deps.listen.port }, () => {
        server.off('error', reject);
        server.on('error', (e) => this.deps.trace.error({ err: e.message }, 'admin listener error'));
        resolve();
      });
    });
    const addr = server.address();
    this.bound = { host: this.deps.listen.host, port: typeof addr === 'object' && addr ? addr.port : this.deps.listen.port };
    this.server = server;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    this.stream.close();
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://admin.invalid');
    } catch {
      return this.json(res, 400, { error: 'bad request line' });
    }
    const path = url.pathname;
    if (path === '/login') return this.login(req, res, method);
    if (!this.auth.allowed(req)) {
      if (method === 'GET' && (path === '/' || path.startsWith('/static/'))) {
        if (!this.auth.required) return this.json(res, 403, { error: 'the admin listener answers only to a loopback Host name' });
        res.writeHead(303, { ...SECURITY_HEADERS, Location: '/login' });
        return void res.end();
      }
      return this.json(res, this.auth.required ? 401 : 403, { error: this.auth.required ? 'Authorization: Bearer <token> needed' : 'the admin listener answers only to a loopback Host name' }, this.auth.required ? { 'WWW-Authenticate': 'Bearer realm="petrel"' } : {});
    }
    if (path === '/logout' && method === 'POST') {
      this.auth.logout(req);
      res.writeHead(303, { ...SECURITY_HEADERS, Location: '/login', 'Set-Cookie': AdminAuth.cookie('') });
      return void res.end();
    }
    if (path === '/metrics' && (method === 'GET' || method === 'HEAD')) {
      if (!this.deps.metrics) return this.json(res, 404, { error: 'metrics are off' });
      const text = await this.deps.metrics.text();
      res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': this.deps.metrics.contentType });
      return void res.end(method === 'HEAD' ? undefined : text);
    }
    if (!path.startsWith('/api/')) return this.page(res, method, path);
    if (path === '/api/events/stream') {
      if (method !== 'GET') return this.json(res, 405, { error: 'the event stream is GET' }, { Allow: 'GET' });
      return this.stream.handle(req, res, SECURITY_HEADERS, url.searchParams.get('after'));
    }
    try {
      const { route, parts } = match(method, path);
      let body: Record<string, unknown> = {};
      if (route.method === 'POST') {
        const refusal = this.auth.actionAllowed(req);
        if (refusal) return this.json(res, 403, { error: refusal });
        body = await readJson(req);
      }
      const params: Params = {};
      for (const [k, v] of url.searchParams) params[k] = v;
      const who = `${req.headers['x-petrel-viewer'] ? 'viewer' : 'api'} ${req.socket.remoteAddress ?? ''}`.trim();
      const result = await route.handle(this.deps.actions, { params, parts, body, defaultOperator: who });
      this.json(res, 200, result);
    } catch (e) {
      if (e instanceof AdminError) return this.json(res, e.status, { error: e.message }, e.status === 405 ? { Allow: 'GET, POST' } : {});
      throw e;
    }
  }

  /** page - the viewer: "/" is index.html, "/static/NAME" one of its files. */
  private page(res: ServerResponse, method: string, path: string): void {
    if (method !== 'GET' && method !== 'HEAD') return this.json(res, 405, { error: 'pages are GET' });
    const name = path === '/' ? 'index.html' : path.startsWith('/static/') ? path.slice('/static/'.length) : null;
    const file = name !== null ? this.files.get(name) : undefined;
    if (!file) return this.json(res, 404, { error: `no such page: ${path}` });
    res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': file.type, 'Content-Security-Policy': PAGE_CSP });
    res.end(method === 'HEAD' ? undefined : file.body);
  }

  /** login - GET shows the form; POST checks the token and sets the session cookie. */
  private async login(req: IncomingMessage, res: ServerResponse, method: string): Promise<void> {
    if (!this.auth.required) {
      res.writeHead(303, { ...SECURITY_HEADERS, Location: '/' });
      return void res.end();
    }
    if (method === 'POST') {
      const raw = (await readBody(req)).toString('utf8');
      const token = new URLSearchParams(raw).get('token') ?? '';
      const id = this.auth.login(token);
      if (id) {
        res.writeHead(303, { ...SECURITY_HEADERS, Location: '/', 'Set-Cookie': AdminAuth.cookie(id) });
        return void res.end();
      }
      // A wrong token costs the guesser a moment.
      await new Promise((r) => setTimeout(r, 250));
      return this.loginForm(res, 401, 'That token is not right.');
    }
    if (method !== 'GET' && method !== 'HEAD') return this.json(res, 405, { error: 'GET or POST' });
    this.loginForm(res, 200, '');
  }

  private loginForm(res: ServerResponse, status: number, message: string): void {
    // Self-contained (inline style, its own CSP): nothing else is served before login.
    const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Petrel admin: log in</title>
<style>body{font:15px system-ui,sans-serif;background:#f3f5f8;display:grid;place-items:center;min-height:90vh;margin:0}
.card{background:#fff;border:1px solid #d5dbe3;border-radius:8px;padding:24px 28px;max-width:360px}
h1{font-size:20px;margin:0 0 8px}label{display:block;margin:14px 0}input{display:block;width:100%;padding:6px;margin-top:4px;box-sizing:border-box}
button{padding:7px 16px;background:#1f5fbf;color:#fff;border:0;border-radius:4px}.error{color:#b3261e}</style></head><body>
<form method="post" action="/login" class="card"><h1>Petrel queue viewer</h1>
<p>Enter the admin token (<code>[admin] token</code> in the configuration).</p>
${message ? `<p class="error">${message}</p>` : ''}
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Log in</button></form></body></html>`;
    res.writeHead(status, {
      ...SECURITY_HEADERS,
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    });
    res.end(html);
  }

  private json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
    const body = JSON.stringify(value);
    res.writeHead(status, { ...SECURITY_HEADERS, ...headers, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }
}

/** readBody - the request body, at most MAX_BODY octets. */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new AdminError(400, `request body over ${MAX_BODY} octets`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const raw = (await readBody(req)).toString('utf8').trim();
  if (raw === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new AdminError(400, 'the body is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AdminError(400, 'the body must be a JSON object');
  return v as Record<string, unknown>;
}
