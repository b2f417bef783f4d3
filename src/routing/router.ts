/*
 * routing/router - where each recipient goes next, in the contract's order:
 * local domain -> [[routes]] entry for the domain -> smarthost -> MX.
 *
 * TLS: a route's `tls`, else `[delivery] tls`, for MX, smarthost and address
 * literals; an operator redirect stays opportunistic (its host is an address
 * the operator chose, which a certificate seldom names).
 *
 * Also names the recipient's destination for operators (CONTRACT.md): the
 * recipient domain, or "[host]:port" for the smarthost. Pure: no I/O; the MX
 * look-up itself happens in the SMTP agent at delivery time.
 *
 * Operator redirects (`petrel queue redirect`, stored by the queue store) are
 * applied last: the destination keeps its name, its next hop becomes
 * smtp:HOST:PORT.
 */
import type { Config, Transport } from '../config/schema.js';
import { domainOf } from '../core/address.js';
import { DECIDED, isDecided, type Decision } from '../core/decided.js';
import type { NextHop } from '../delivery/agent.js';
import type { TlsMode } from '../delivery/tls/outcome.js';

export interface Routed {
  hop: NextHop;
  destination: string;
}

export class Router {
  private local = new Set<string>();
  private routes = new Map<string, Config['routes'][number]>();
  private readonly redirects = new Map<string, { host: string; port: number }>();

  constructor(private readonly config: Config) {
    this.reconfigure();
  }

  /** reconfigure - read local domains and routes again from the configuration (petrel reload changed it in place). */
  reconfigure(): void {
    this.local = new Set(this.config.local.domains);
    this.routes = new Map(this.config.routes.map((r) => [r.domain, r]));
  }

  isLocalDomain(domain: string): boolean {
    return this.local.has(domain.toLowerCase());
  }

  /**
   * routeRecipient - the next hop for a queued recipient: as route(), except
   * that a recipient whose fate enqueue already decided (an alias loop, an
   * unknown user from pickup, an alias expanded; core/decided) gets a reject
   * hop carrying that decision.
   */
  routeRecipient(r: { address: string; destination: string }): Routed {
    if (isDecided(r.destination)) {
      const d: Decision = DECIDED[r.destination];
      const hop: NextHop = { kind: 'reject', key: `reject:${r.destination}`, status: d.status, text: d.text(r.address), ...(d.report ? { report: d.report } : {}) };
      return { hop, destination: r.destination };
    }
    return this.route(r.address);
  }

  /** setRedirect - send a destination's mail to host:port from now on (null: route it as configured again). */
  setRedirect(destination: string, to: { host: string; port: number } | null): void {
    if (to) this.redirects.set(destination, to);
    else this.redirects.delete(destination);
  }

  /** route - the next hop for one recipient address (an operator redirect wins). */
  route(address: string): Routed {
    const routed = this.configured(address);
    const to = this.redirects.size ? this.redirects.get(routed.destination) : undefined;
    if (!to) return routed;
    return { hop: { kind: 'smtp', key: `smtp:${to.host}:${to.port}`, hosts: 'fixed', host: to.host, port: to.port, tls: 'opportunistic' }, destination: routed.destination };
  }

  /** configured - the next hop as the configuration says (local -> routes -> smarthost -> MX). */
  private configured(address: string): Routed {
    const domain = domainOf(address);
    if (this.local.has(domain)) {
      return { hop: { kind: 'maildir', key: `maildir:${this.config.local.maildir}`, root: this.config.local.maildir, perDomain: true }, destination: domain };
    }
    const route = this.routes.get(domain);
    if (route) return { hop: transportHop(route.via, route.tls), destination: domain };
    const smart = this.config.delivery.smarthost;
    if (smart) {
      return {
        hop: { kind: 'smtp', key: `smtp:${smart.host}:${smart.port}`, hosts: 'fixed', host: smart.host, port: smart.port, tls: this.config.delivery.tls },
        destination: `[${smart.host}]:${smart.port}`,
      };
    }
    const literal = /^\[(?:IPv6:)?([^\]]+)\]$/i.exec(domain);
    if (literal) {
      const port = this.config.delivery.smtp_port;
      return { hop: { kind: 'smtp', key: `smtp:${literal[1]}:${port}`, hosts: 'fixed', host: literal[1]!, port, tls: this.config.delivery.tls }, destination: domain };
    }
    return { hop: { kind: 'smtp', key: `mx:${domain}`, hosts: 'mx', domain, port: this.config.delivery.smtp_port, tls: this.config.delivery.tls }, destination: domain };
  }
}

/** transportHop - a route's `via` as a next hop. */
export function transportHop(via: Transport, tls: TlsMode): NextHop {
  switch (via.kind) {
    case 'smtp':
      return { kind: 'smtp', key: `smtp:${via.host}:${via.port}`, hosts: 'fixed', host: via.host, port: via.port, tls };
    case 'lmtp':
      return 'socket' in via ? { kind: 'lmtp', key: `lmtp:${via.socket}`, socket: via.socket } : { kind: 'lmtp', key: `lmtp:${via.host}:${via.port}`, host: via.host, port: via.port };
    case 'maildir':
      return { kind: 'maildir', key: `maildir:${via.path}`, root: via.path, perDomain: true };
    case 'directory':
      return { kind: 'directory', key: `directory:${via.path}`, path: via.path };
  }
}
