/*
 * inbound/policy - who may send to whom, decided per RCPT (DESIGN.md,
 * "inbound"; invariant 9: no open relay).
 *
 * A recipient is accepted when its domain is local (from any network: that is
 * what an MX is for; with `[local] users_file` set the user must exist — or
 * be an alias or caught by a catch-all — else 550 5.1.1: refused now, never
 * accepted and bounced later), or when the
 * client may relay: its address is in `relay_networks` or it authenticated.
 * Everything else gets 554 5.7.1. Pure apart from the users table it is given.
 */
import { BlockList, isIP } from 'node:net';
import type { Config } from '../config/schema.js';
import { parseCidr } from '../config/schema.js';
import { domainOf } from '../core/address.js';
import { smtpReply } from '../core/replies.js';
import type { SmtpReply } from '../core/smtp-reply.js';

/** The local-recipient check policy needs (local/recipients: users, aliases, catch-alls). */
export interface LocalRecipientCheck {
  exists(address: string): boolean;
}

/** normalizeIp - "::ffff:127.0.0.1" -> "127.0.0.1" so IPv4 networks match mapped addresses. */
export function normalizeIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? m[1]! : ip;
}

/** Client addresses whose answer RelayNetworks remembers (a bounded table: cleared when full). */
export const REMEMBERED_ADDRESSES = 4096;

export class RelayNetworks {
  private readonly list = new BlockList();
  /** Answers already worked out: BlockList.check costs microseconds, a client connects again and again. */
  private readonly known = new Map<string, boolean>();

  constructor(networks: readonly string[]) {
    for (const n of networks) {
      const c = parseCidr(n);
      if (c) this.list.addSubnet(c.address, c.prefix, c.family);
    }
  }

  /** How many answers are remembered (at most REMEMBERED_ADDRESSES). */
  get remembered(): number {
    return this.known.size;
  }

  contains(ip: string): boolean {
    const seen = this.known.get(ip);
    if (seen !== undefined) return seen;
    const a = normalizeIp(ip);
    const family = isIP(a);
    const inside = family !== 0 && this.list.check(a, family === 4 ? 'ipv4' : 'ipv6');
    if (this.known.size >= REMEMBERED_ADDRESSES) this.known.clear();
    this.known.set(ip, inside);
    return inside;
  }
}

export interface RcptContext {
  clientIp: string;
  authenticated: boolean;
  /** The client's address is in relay_networks (a session works it out once). */
  inRelayNetworks?: boolean;
}

export class RecipientPolicy {
  private readonly relay: RelayNetworks;
  private readonly local: Set<string>;

  constructor(
    config: Config,
    private readonly users: LocalRecipientCheck,
  ) {
    this.relay = new RelayNetworks(config.smtp.relay_networks);
    this.local = new Set(config.local.domains);
  }

  mayRelay(ctx: RcptContext): boolean {
    return ctx.authenticated || (ctx.inRelayNetworks ?? this.relay.contains(ctx.clientIp));
  }

  /** inRelayNetworks - is this client address in relay_networks? */
  inRelayNetworks(ip: string): boolean {
    return this.relay.contains(ip);
  }

  isLocal(address: string): boolean {
    return this.local.has(domainOf(address));
  }

  /** check - null when the recipient is accepted, else the reply refusing it. */
  check(address: string, ctx: RcptContext): SmtpReply | null {
    if (this.isLocal(address)) {
      return this.users.exists(address) ? null : smtpReply('userUnknown', address);
    }
    if (this.mayRelay(ctx)) return null;
    return smtpReply('relayDenied', address);
  }
}
