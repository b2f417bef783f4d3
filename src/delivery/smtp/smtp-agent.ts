/*
 * delivery/smtp/smtp-agent - SmtpAgent: the DeliveryAgent for `smtp` next hops,
 * by MX (`hosts: 'mx'`) or to a fixed host (routes, smarthost).
 *
 * Invariants:
 * - hosts are tried in MX order (mx.ts); a host that does not connect, or
 *   refuses at greeting/EHLO, or (TLS required) cannot do TLS, makes us try
 *   the next one in the same attempt; only when all fail is the job deferred,
 *   with the last error;
 * - each host gets the TLS policy tls/policy.ts decides for it (DANE, then
 *   MTA-STS, then the operator's `tls`); a host that does not meet an
 *   enforced policy (no STARTTLS, a certificate that does not verify, an MX
 *   host an enforced MTA-STS policy does not name, a failed TLSA look-up) is
 *   skipped like an unreachable one: the next host is tried, and when none
 *   is left the job is deferred with the last error (4.7.5 for verify,
 *   MTA-STS and DANE; 4.7.4 for `required` without STARTTLS);
 * - opportunistic TLS whose handshake fails is retried once in plain text on
 *   the same address (mail is not held back by a broken TLS stack, as Postfix
 *   does); an enforced policy never falls back to plain text;
 * - every connection attempt under an MTA-STS or DANE policy is told to
 *   `onTlsResult` (TLS reporting, RFC 8460), success or failure;
 * - the addresses tried are filtered and ordered by [delivery] address_family
 *   and address_preference (address-order.ts); a host left with none is a
 *   temporary failure, never "no such domain";
 * - each connection binds the source address of its family and says that
 *   source's EHLO name (source.ts);
 * - connections are shared through the pool, keyed by next-hop host and TLS
 *   policy: for an MX hop the key is the domain's MX host set (mx.ts
 *   hostSetKey, "MX rollup"), so thousands of domains behind one provider's
 *   MX hosts share connections and limits. The MX look-up (cached) is made
 *   before a connection is borrowed; its failure is a result for every
 *   recipient, as it always was. The TLS requirement is part of the key: a
 *   connection good for one domain's policy is not taken for a stricter one;
 * - per-recipient outcomes come from session.ts.
 *
 * Untrusted input: DNS answers (mx.ts) and peer replies (client.ts).
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import type { Config } from '../../config/schema.js';
import type { DeliveryAgent, DeliveryJob, NextHop, RecipientResult } from '../agent.js';
import { resultsFor } from '../agent.js';
import { ClientError, SmtpClient, type SmtpTimeouts } from './client.js';
import { deliverPooled, errorResults } from './deliver.js';
import { lookupFailure } from './failure-text.js';
import { hostSetKey, LookupError, MxResolver, type ResolverOptions, type TargetHost } from './mx.js';
import { ConnectionPool, type PoolOptions } from './pool.js';
import type { SecureContext } from 'node:tls';
import { trustContext } from '../tls/cert-check.js';
import { domainTls, hostPolicy, type DomainTls, type HostDecision, type PolicySources } from '../tls/policy.js';
import type { TlsPolicyFailure, TlsPolicyKind } from '../tls/outcome.js';
import { MtaStsResolver, mxAllowed, policyStrings } from '../tls/mta-sts.js';
import { DaneResolver, daneMatches } from '../tls/dane.js';

/** One connection attempt under an MTA-STS or DANE policy, for TLS reporting (src/tlsrpt's recorder.record). */
export interface TlsAttemptResult {
  policy: TlsPolicyKind;
  policyDomain: string;
  mx: string;
  receivingIp: string;
  success: boolean;
  failure?: TlsPolicyFailure;
  /** sts: the policy as RFC 8460 policy-string lines. */
  policyText?: string[];
}
import { orderAddresses, type AddressPolicy } from './address-order.js';
import { identities, identityFor, type SendingIdentity } from './source.js';
import type { Provider, Shaper } from './shaping.js';

export type SmtpHop = Extract<NextHop, { kind: 'smtp' }>;

/** SmtpAgent.plan's answer: the MX hosts (null: a fixed host), the shaping provider, or the look-up's failure. */
export interface SmtpPlan {
  hosts: TargetHost[] | null;
  provider: Provider | null;
  error?: unknown;
}

export interface SmtpAgentOptions {
  /** Our EHLO name. */
  heloName: string;
  /** [delivery] max_recipients_per_transaction (LIMITS RCPTMAX lowers it per peer). */
  maxRecipientsPerTransaction: number;
  /** Per-phase timeouts; `connect` is [delivery] connect_timeout. */
  timeouts?: Partial<SmtpTimeouts>;
  /** DNS: servers and timeouts, or a resolver to share. */
  dns?: ResolverOptions;
  resolver?: MxResolver;
  /** A pool to share (with the LMTP agent), or options for a pool of its own. */
  pool?: ConnectionPool;
  poolOptions?: Partial<PoolOptions>;
  /** Traffic shaping (delivery/smtp/shaping); none: only the pool's limits. */
  shaper?: Shaper;
  /** Most MX hosts, and addresses per host, tried in one attempt. */
  maxHosts?: number;
  maxAddressesPerHost?: number;
  /** [delivery] tls_ca_file: extra trust anchors (checked at load). */
  tlsCaFile?: string;
  /** MTA-STS and DANE resolvers ([delivery] mta_sts, dane); absent: not used. */
  tlsSources?: PolicySources;
  /** TLS reporting hook: called once per connection attempt under an MTA-STS or DANE policy. */
  onTlsResult?: (r: TlsAttemptResult) => void;
  /** Sending identity per family (source.ts): the address bound and the EHLO name; heloName when absent. */
  identities?: { ipv4: SendingIdentity; ipv6: SendingIdentity };
  /** Which addresses are tried, in what order (address-order.ts); all, in DNS order, when absent. */
  addressPolicy?: AddressPolicy;
}

/** poolOptionsFrom - the pool settings in a Config. */
export function poolOptionsFrom(config: Config): Partial<PoolOptions> {
  const d = config.delivery;
  return {
    maxPerDestination: d.max_connections_per_destination,
    maxTotal: d.max_connections,
    maxMessagesPerConnection: d.max_messages_per_connection,
    idleTimeoutMs: d.connection_idle_timeout,
    deadBackoffMs: d.dead_destination_backoff,
  };
}

export class SmtpAgent implements DeliveryAgent {
  readonly pool: ConnectionPool;
  private readonly resolver: MxResolver;
  private readonly ownPool: boolean;
  private tlsContext: SecureContext | null = null;

  constructor(readonly options: SmtpAgentOptions) {
    this.resolver = options.resolver ?? new MxResolver(options.dns);
    this.ownPool = !options.pool;
    this.pool = options.pool ?? new ConnectionPool(options.poolOptions);
  }

  /** fromConfig - an agent with the [delivery] settings of `config` (pass `pool` to share one with LmtpAgent). */
  static fromConfig(config: Config, extra: Partial<SmtpAgentOptions> = {}): SmtpAgent {
    const d = config.delivery;
    return new SmtpAgent({
      heloName: d.helo_name || config.hostname,
      maxRecipientsPerTransaction: d.max_recipients_per_transaction,
      timeouts: { connect: d.connect_timeout },
      dns: { servers: d.dns_servers },
      poolOptions: poolOptionsFrom(config),
      tlsCaFile: d.tls_ca_file,
      tlsSources: {
        ...(d.mta_sts ? { sts: { resolver: new MtaStsResolver({ dnsServers: d.dns_servers, ...(d.tls_ca_file ? { caFile: d.tls_ca_file } : {}) }), mxAllowed } } : {}),
        ...(d.dane ? { dane: { resolver: new DaneResolver({ dnsServers: d.dns_servers }), matches: daneMatches } } : {}),
      },
      identities: identities(config),
      addressPolicy: { family: d.address_family, preference: d.address_preference, sourceIpv6: d.source_ipv6 },
      ...extra,
    });
  }

  /**
   * plan - what a delivery to `hop` starts from: its MX hosts (the cached
   * look-up; null for a fixed host) and its shaping provider (null: none, or
   * no shaper). A failed look-up is `error` (deliver reports it for every
   * recipient). workers/outbound asks it to decide where a job runs.
   */
  async plan(hop: SmtpHop): Promise<SmtpPlan> {
    let hosts: TargetHost[] | null = null;
    if (hop.hosts === 'mx') {
      try {
        hosts = (await this.resolver.cachedHosts(hop.domain)).slice(0, this.options.maxHosts ?? 10);
      } catch (e) {
        return { hosts: null, provider: null, error: e };
      }
    }
    const shaper = this.options.shaper;
    const name = hop.hosts === 'mx' ? hop.domain : hop.host;
    const provider = shaper ? shaper.providerFor(name, hosts ? hosts.map((h) => h.name) : [name]) : null;
    return { hosts, provider };
  }

  /** deliver - attempt the job; every recipient gets one result through `report`. `given`: its plan, already made (else made here). */
  async deliver(job: DeliveryJob, report: (results: RecipientResult[]) => void, given?: SmtpPlan): Promise<void> {
    const hop = job.hop;
    if (hop.kind !== 'smtp') {
      report(resultsFor(job.recipients, { kind: 'deferred', status: '4.3.5', reply: `smtp agent given a ${hop.kind} next hop`, remote: hop.key, remoteReply: false }));
      return;
    }
    const label = hop.hosts === 'mx' ? hop.domain : hop.host;
    const plan = given ?? (await this.plan(hop));
    if (plan.error !== undefined) {
      report(errorResults(job.recipients, plan.error, label));
      return;
    }
    // "TLS-Required: No" (RFC 8689 §5): the recipient domain's policies (MTA-STS, DANE) are not applied
    // to this message, and its sessions are not counted for TLS reports; the operator's own `tls` still is.
    const sources: PolicySources = job.message.tlsRequiredNo ? {} : (this.options.tlsSources ?? {});
    const { hosts, provider } = plan;
    let key: string;
    let domain: DomainTls = { sts: null };
    if (hop.hosts === 'mx' && hosts) {
      // The domain's TLS policy (cached) before a connection is borrowed: it is part of the key.
      domain = await domainTls(hop, sources);
      key = `smtp:mx:${hostSetKey(hop.domain, hosts)}:${hop.port}:${tlsKey(hop, domain, sources)}`;
      // An operator's retry names the hop (mx:<domain>): the pool finds this key from it.
      this.pool.alias(hop.key, key);
    } else {
      key = `smtp:${hop.key}:${hop.hosts === 'fixed' ? hop.host : hop.domain}:${hop.port}:${hop.tls}`;
    }
    const shaper = this.options.shaper;
    await deliverPooled(job, provider && shaper ? feedbackReport(shaper, provider, label, report) : report, {
      pool: this.pool,
      key,
      label,
      open: () => this.open(hop, hosts, domain, sources),
      maxRecipients: this.options.maxRecipientsPerTransaction,
      provider,
    });
  }

  /** close - close idle connections; connections in use close when their job ends. */
  async close(): Promise<void> {
    if (this.ownPool) await this.pool.close();
  }

  /**
   * open - a connected client to the first host of the hop that works;
   * throws LookupError or ClientError. `resolved`: the MX hosts already
   * looked up for this hop (else they are looked up here).
   */
  async open(hop: SmtpHop, resolved: TargetHost[] | null = null, known?: DomainTls, given?: PolicySources): Promise<SmtpClient> {
    let hosts: TargetHost[];
    if (hop.hosts === 'mx') hosts = resolved ? resolved.map((h) => ({ ...h, addresses: [...h.addresses] })) : (await this.resolver.hosts(hop.domain)).slice(0, this.options.maxHosts ?? 10);
    else hosts = [{ name: hop.host, preference: 0, addresses: isIP(hop.host) ? [hop.host] : await lookupFixed(hop.host) }];
    const implicit = hop.hosts === 'mx' && hosts.length === 1 && hosts[0]!.name === hop.domain;
    const sources = given ?? this.options.tlsSources ?? {};
    const domain: DomainTls = known ?? (await domainTls(hop, sources));

    let last: unknown = null;
    let anyAddress = false;
    let lookupFailed = false;
    for (const host of hosts) {
      let addresses = host.addresses;
      if (addresses.length === 0) {
        try {
          addresses = await this.resolver.addresses(host.name);
        } catch (e) {
          last = e;
          lookupFailed = true;
          continue;
        }
      }
      if (addresses.length === 0) {
        last ??= new LookupError(false, '4.4.3', `host ${host.name} has no address`);
        continue;
      }
      anyAddress = true;
      const policy = this.options.addressPolicy;
      if (policy) {
        const kept = orderAddresses(addresses, policy);
        if (kept.length === 0) {
          // Not an answer about the domain: it has addresses, only not of the family we may use. Temporary.
          last ??= new LookupError(false, '4.4.3', `host ${host.name} has no ${policy.family === 'ipv4' ? 'IPv4' : 'IPv6'} address ([delivery] address_family = "${policy.family}"; it has ${addresses.join(', ')})`);
          continue;
        }
        addresses = kept;
      }
      const decision = await hostPolicy(hop, host.name, domain, sources);
      if (decision.refuse) {
        // Enforced policy refuses this host before any connection (MTA-STS: not named; DANE: TLSA look-up failed).
        const e = new ClientError('tls', '4.7.5', `TLS policy (${decision.policy.kind === 'sts' ? 'MTA-STS' : 'DANE'}, ${decision.policy.domain}) not met: ${decision.refuse.detail}`);
        e.tlsFailure = decision.refuse;
        e.remote = host.name;
        this.reportTls(decision, host.name, '', e, null, domain);
        last = e;
        continue;
      }
      for (const address of addresses.slice(0, this.options.maxAddressesPerHost ?? 5)) {
        try {
          const client = await this.connectTo(host.name, address, hop.port, decision, sources);
          if (!client.tlsNote && decision.note) client.tlsNote = decision.note;
          if (!client.tlsNote && domain.stsFailure) client.tlsNote = domain.stsFailure;
          this.reportTls(decision, host.name, address, null, client.tlsNote, domain);
          return client;
        } catch (e) {
          this.reportTls(decision, host.name, address, e, null, domain);
          last = e;
        }
      }
    }
    if (!anyAddress && implicit && !lookupFailed) {
      throw new LookupError(true, '5.4.4', `Host or domain name not found: ${hop.domain} has no MX and no address record`);
    }
    throw last ?? new LookupError(false, '4.4.3', `no host to try for ${hop.hosts === 'mx' ? hop.domain : hop.host}`);
  }

  /** reportTls - tell TLS reporting about one connection attempt under an MTA-STS or DANE policy. */
  private reportTls(d: HostDecision, mx: string, ip: string, err: unknown, note: TlsPolicyFailure | null, domain: DomainTls): void {
    const hook = this.options.onTlsResult;
    if (!hook || (d.policy.kind !== 'sts' && d.policy.kind !== 'tlsa')) return;
    const failure = err instanceof ClientError ? err.tlsFailure : note;
    if (err && !failure) return; // not a TLS result (refused connection, greeting): nothing to report
    try {
      const text = d.policy.kind === 'sts' && domain.sts ? { policyText: policyStrings(domain.sts) } : {};
      hook({ policy: d.policy.kind, policyDomain: d.policy.domain, mx, receivingIp: ip, success: !failure, ...(failure ? { failure } : {}), ...text });
    } catch {
      // A report hook never changes a delivery.
    }
  }

  /** context - the trust anchors, made once (Node's CAs plus tls_ca_file). */
  private context(): SecureContext {
    return (this.tlsContext ??= trustContext(this.options.tlsCaFile ?? ''));
  }

  /** connectTo - one address; opportunistic TLS falls back to plain text once after a failed handshake. */
  private async connectTo(name: string, address: string, port: number, d: HostDecision, sources: PolicySources): Promise<SmtpClient> {
    const id = this.options.identities ? identityFor(this.options.identities, address) : null;
    const heloName = id?.heloName || this.options.heloName;
    const bind = id?.address ? { localAddress: id.address } : {};
    const make = (mode: 'opportunistic' | 'required' | 'none'): SmtpClient =>
      new SmtpClient({
        host: address,
        port,
        hostname: name,
        heloName,
        ...bind,
        tls: mode,
        ...(mode === 'none' ? {} : { tlsCheck: { policy: d.policy, context: () => this.context(), tlsa: d.tlsa, ...(sources.dane ? { matches: sources.dane.matches } : {}) } }),
        ...(this.options.timeouts ? { timeouts: this.options.timeouts } : {}),
      });
    const client = make(d.policy.enforce ? 'required' : 'opportunistic');
    try {
      await client.connect();
      return client;
    } catch (e) {
      if (!(!d.policy.enforce && e instanceof ClientError && e.kind === 'tls' && e.reply === null)) throw e;
    }
    const plain = make('none');
    await plain.connect();
    return plain;
  }
}

/**
 * feedbackReport - the provider reads every result of its jobs: a "too fast"
 * reply slows it, a "blocked" one suspends it (and the recipient that got it
 * is deferred, not failed: a block is about the sender, never bounced before
 * expiry), an accepted message helps it recover.
 */
function feedbackReport(shaper: Shaper, provider: Provider, destination: string, report: (results: RecipientResult[]) => void): (results: RecipientResult[]) => void {
  return (results) => {
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (r.heldUntil !== undefined) {
        // Put back: by a suspension (an operator's resume makes them due), or by a busy provider (they come back at its pace).
        if (provider.suspended) provider.noteHeld(destination);
        continue;
      }
      if (r.kind === 'delivered') {
        shaper.accepted(provider);
        continue;
      }
      if (!r.remoteReply) continue;
      const said = shaper.classify(r.reply);
      if (said === 'throttle') shaper.throttled(provider, r.reply, r.remote);
      else if (said === 'block') {
        shaper.blocked(provider, r.reply, r.remote);
        // Deferred (never failed: a block is about the sender), and not tried again until the suspension
        // ends: a resume (an operator's, or another node's) makes it due with the others put back.
        const next = r.kind === 'failed' ? { ...r, kind: 'deferred' as const, status: `4${r.status.slice(1)}` } : { ...r };
        if (provider.suspended) {
          next.notBefore = provider.suspendedUntil;
          provider.noteHeld(destination);
        }
        results[i] = next;
      }
    }
    report(results);
  };
}

/**
 * tlsKey - the TLS part of an MX hop's pool key. Connections are shared by
 * every domain behind the same MX hosts (MX rollup), so the key carries what
 * the domain's policy demands of a connection: an enforced MTA-STS policy is
 * the domain's own (its connections are not lent to other domains, nor theirs
 * to it); DANE, which a validated MX answer turns on, is judged per MX host
 * (a DANE-checked connection serves every such domain); otherwise the
 * operator's `tls` setting, which is always part of it.
 */
function tlsKey(hop: SmtpHop, domain: DomainTls, sources: PolicySources): string {
  const parts: string[] = [hop.tls];
  if (sources.dane && domain.daneMx !== false) parts.push('dane');
  if (domain.sts?.mode === 'enforce') parts.push(`sts=${hop.hosts === 'mx' ? hop.domain : hop.host}`);
  return parts.join('+');
}

/** lookupFixed - addresses of a route's or smarthost's host name through the system resolver (hosts file included). */
async function lookupFixed(host: string): Promise<string[]> {
  try {
    const all = await dnsPromises.lookup(host, { all: true });
    return all.map((a) => a.address);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    // Temporary even when not found: a route's or smarthost's host is the operator's, and may come back.
    if (code === 'ENOTFOUND') throw new LookupError(false, '4.4.3', `Host or domain name not found: ${host} (ENOTFOUND)`);
    throw new LookupError(false, '4.4.3', lookupFailure(`address look-up for ${host}`, [code || (e as Error).message]));
  }
}
