/*
 * test/helpers/admin-http - a small client for the admin listener in tests:
 * JSON GETs and POSTs with an optional bearer token, and raw requests (any
 * header, Host included) through node:http.
 */
import { request } from 'node:http';

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json<T = any>(): T; // eslint-disable-line @typescript-eslint/no-explicit-any -- test convenience: callers assert the shape
}

export function raw(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: { ...(body !== undefined ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
      });
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('admin request timed out')));
    req.end(body);
  });
}

export class AdminClient {
  constructor(
    readonly port: number,
    readonly token = '',
  ) {}
  private auth(): Record<string, string> {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }
  get(path: string): Promise<Reply> {
    return raw(this.port, 'GET', path, this.auth());
  }
  post(path: string, body: unknown = {}): Promise<Reply> {
    return raw(this.port, 'POST', path, { ...this.auth(), 'Content-Type': 'application/json' }, JSON.stringify(body));
  }
}
