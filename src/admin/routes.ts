/*
 * admin/routes - the admin API's endpoints: method, path, handler. Reads are
 * GET, actions are POST (docs/admin.md lists every one with an example).
 *
 * Invariants: every list is paged (`limit` at most MAX_PAGE, a `next`
 * cursor); every action names its operator and reason; path segments are
 * decoded and checked (queue ids by their alphabet, destinations by the
 * action layer) and never used as file names.
 *
 * Untrusted input: the path, the query string and the JSON body.
 */
import { AdminActions, AdminError, operatorOf, targetOf, type Params } from './actions.js';

export interface RouteContext {
  params: Params;
  /** Path parts captured by the route's pattern. */
  parts: string[];
  /** The parsed JSON body of a POST (an object), or {} for GET. */
  body: Record<string, unknown>;
  /** Who is asking when the body does not say: "api 127.0.0.1", "viewer 127.0.0.1". */
  defaultOperator: string;
}

export interface Route {
  method: 'GET' | 'POST';
  pattern: RegExp;
  handle(actions: AdminActions, ctx: RouteContext): Promise<unknown>;
}

const QID = '([0-9A-HJKMNP-TV-Z]{16})';
const SEG = '([^/]+)';

function text(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function flag(v: unknown): boolean {
  return v === true || v === 'true' || v === '1';
}

function op(ctx: RouteContext) {
  return operatorOf(text(ctx.body.operator) ?? ctx.defaultOperator, text(ctx.body.reason));
}

function decode(seg: string): string {
  try {
    return decodeURIComponent(seg);
  } catch {
    throw new AdminError(400, 'bad percent-encoding in the path');
  }
}

/** A message action: /api/messages/QID/<verb>. */
function messageAction(verb: 'retry' | 'suspend' | 'resume' | 'delete'): Route {
  return {
    method: 'POST',
    pattern: new RegExp(`^/api/messages/${QID}/${verb}$`),
    handle(a, ctx) {
      const queueId = ctx.parts[0]!;
      switch (verb) {
        case 'retry':
          return a.retry({ queueId }, op(ctx));
        case 'suspend':
          return a.suspend({ queueId }, op(ctx));
        case 'resume':
          return a.resume({ queueId }, op(ctx));
        case 'delete': {
          const ndr = flag(ctx.body.ndr);
          if (ndr && flag(ctx.body.silent)) throw new AdminError(400, 'ndr and silent exclude each other');
          return a.remove(queueId, op(ctx), ndr);
        }
      }
    },
  };
}

/** A destination action: /api/destinations/DEST/<verb>. */
function destinationAction(verb: 'retry' | 'suspend' | 'resume'): Route {
  return {
    method: 'POST',
    pattern: new RegExp(`^/api/destinations/${SEG}/${verb}$`),
    handle(a, ctx) {
      const t = targetOf({ destination: decode(ctx.parts[0]!) });
      return verb === 'retry' ? a.retry(t, op(ctx)) : verb === 'suspend' ? a.suspend(t, op(ctx)) : a.resume(t, op(ctx));
    },
  };
}

export const ROUTES: Route[] = [
  { method: 'GET', pattern: /^\/api\/queue$/, handle: (a) => a.summary() },
  { method: 'GET', pattern: /^\/api\/queue\/ages$/, handle: (a) => a.ages() },
  { method: 'GET', pattern: /^\/api\/messages$/, handle: (a, ctx) => a.list(ctx.params) },
  { method: 'GET', pattern: new RegExp(`^/api/messages/${QID}$`), handle: (a, ctx) => a.show(ctx.parts[0]!, ctx.params) },
  messageAction('retry'),
  messageAction('suspend'),
  messageAction('resume'),
  messageAction('delete'),
  destinationAction('retry'),
  destinationAction('suspend'),
  destinationAction('resume'),
  {
    method: 'POST',
    pattern: new RegExp(`^/api/destinations/${SEG}/redirect$`),
    handle: (a, ctx) => {
      const to = ctx.body.to;
      if (to !== null && typeof to !== 'string') throw new AdminError(400, 'to must be "host:port", or null / "" to end the redirect');
      return a.redirect(decode(ctx.parts[0]!), to, op(ctx));
    },
  },
  { method: 'GET', pattern: /^\/api\/overrides$/, handle: (a) => a.overrides() },
  { method: 'GET', pattern: /^\/api\/quarantine$/, handle: (a, ctx) => a.quarantine(ctx.params) },
  { method: 'GET', pattern: new RegExp(`^/api/quarantine/${QID}$`), handle: (a, ctx) => a.show(ctx.parts[0]!, ctx.params) },
  { method: 'POST', pattern: new RegExp(`^/api/quarantine/${QID}/release$`), handle: (a, ctx) => a.release(ctx.parts[0]!, op(ctx)) },
  { method: 'POST', pattern: new RegExp(`^/api/quarantine/${QID}/delete$`), handle: (a, ctx) => a.quarantineDelete(ctx.parts[0]!, op(ctx), flag(ctx.body.ndr)) },
  { method: 'GET', pattern: /^\/api\/track$/, handle: (a, ctx) => a.track(ctx.params) },
  { method: 'GET', pattern: /^\/api\/cluster$/, handle: (a) => a.cluster() },
  { method: 'POST', pattern: /^\/api\/tlsrpt\/send$/, handle: (a, ctx) => a.tlsrptSend(text(ctx.body.date), flag(ctx.body.force)) },
];

/** match - the route for a method and path; AdminError 404/405 when there is none. */
export function match(method: string, path: string): { route: Route; parts: string[] } {
  let other = false;
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    if (route.method === method || (method === 'HEAD' && route.method === 'GET')) return { route, parts: m.slice(1) };
    other = true;
  }
  if (other) throw new AdminError(405, `${method} is not allowed here (reads are GET, actions are POST)`);
  throw new AdminError(404, `no such endpoint: ${path}`);
}
