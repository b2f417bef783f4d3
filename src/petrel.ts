/*
 * petrel - one running Petrel: wires the queue store, event log, enqueue,
 * inbound listeners, scheduler, delivery agents and reporter together, and
 * takes them down in the safe order.
 *
 * Start order: store (recovery) -> event log (catches up) -> operator
 * redirects into the router -> agents -> scheduler -> admin listener ->
 * SMTP listeners and the pickup directory (only then is mail accepted).
 * Local users and aliases are re-read when their files change and on reload()
 * (SIGHUP); reconfigure() takes a whole new configuration (petrel reload):
 * see docs/admin.md, "Reload".
 * Stop order (SIGTERM): pickup stops after its current file; listeners stop
 * accepting and finish their replies ->
 * admin listener closes -> scheduler stops claiming, running deliveries get until the deadline ->
 * agents close -> event log flushes -> store closes. Whatever was in flight
 * and not finished is "delivering" in the store and due again at next start:
 * deferred, never lost.
 *
 * Roles (`[server] workers` > 1, workers/): "queue" is all of the above but
 * the SMTP listeners (the primary process); "inbound" only the SMTP
 * listeners, local users and TLS, over a store that hands each message to
 * the primary (a worker process). The default, "whole", is one process.
 */
import { statfsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { AdminActions } from './admin/actions.js';
import { AdminMetrics } from './admin/metrics.js';
import { endBackOffs } from './admin/retry-now.js';
import { AuthThrottle } from './inbound/auth-throttle.js';
import { AdminServer } from './admin/server.js';
import { parseEndpoint, type Config } from './config/schema.js';
import type { DeliveryAgent, NextHop } from './delivery/agent.js';
import { DirectoryAgent } from './delivery/directory.js';
import { MaildirAgent } from './delivery/maildir.js';
import { LmtpAgent } from './delivery/lmtp/lmtp-agent.js';
import { SmtpAgent, poolOptionsFrom } from './delivery/smtp/smtp-agent.js';
import { ConnectionPool } from './delivery/smtp/pool.js';
import { shaperFrom, shapingOf, type Shaper } from './delivery/smtp/shaping.js';
import { Reporter } from './dsn/reporter.js';
import { Enqueuer } from './enqueue/enqueue.js';
import { DkimSigner } from './dkim/signer.js';
import { DkimKeys } from './dkim/keys.js';
import { RecipientPolicy } from './inbound/policy.js';
import { InboundServer, type ConnectionGate } from './inbound/server.js';
import { loadTls } from './inbound/tls.js';
import { SubmissionUsers } from './inbound/submission-users.js';
import { SenderLogins } from './inbound/sender-logins.js';
import type { SessionContext } from './inbound/smtp-session.js';
import { LocalRecipients } from './local/recipients.js';
import { EventLog } from './log/event-log.js';
import { trace } from './log/trace.js';
import { PickupDirectory } from './pickup/pickup.js';
import { describeOpenFailure, makeQueue } from './queue/open.js';
import { warnImpossibleMinFreeSpace } from './core/space-check.js';
import { assertSourcesBindable, warnSendingIdentity } from './delivery/smtp/identity-warnings.js';
import type { Claim, QueueStore } from './queue/store.js';
import { inboundChecksFor } from './checks/inbound-checks.js';
import { Router } from './routing/router.js';
import { Scheduler } from './scheduler/scheduler.js';
import { SharedLimits } from './scheduler/shared-limits.js';
import { TlsRecorder } from './tlsrpt/recorder.js';
import { TlsReportSender } from './tlsrpt/sender.js';

export interface PetrelOptions {
  /** Replace the store (tests use MemoryStore or a store with fault injection). */
  store?: QueueStore;
  /** Replace or add delivery agents by hop kind. */
  agents?: Partial<Record<NextHop['kind'], DeliveryAgent>>;
  /** Role "queue": the smtp agent the scheduler uses, made around this process's own (workers/outbound hands jobs to the workers). */
  smtpAgent?: (local: SmtpAgent) => DeliveryAgent;
  /**
   * Which part of a server this process is (`[server] workers`, workers/):
   * "whole" (the default) is all of it; "queue" is the primary of several
   * processes, everything but the SMTP listeners; "inbound" is a worker, only
   * the SMTP listeners, handing each message to the primary through `store`.
   */
  role?: 'whole' | 'queue' | 'inbound';
  /** Role "queue": the SMTP connections open in the workers (for /metrics). */
  connections?: () => number;
  /** Role "inbound": the connection limits counted by the primary for every worker. */
  gate?: ConnectionGate;
  /** Role "inbound": failed logins counted by the primary for every worker (returns the wait before answering). */
  authFailed?: (ip: string, user: string) => Promise<number>;
}

/** A configuration reload that was refused: the running configuration stays, whole. */
export class ReloadRefused extends Error {}

/**
 * restartNeeded - the keys that differ between two configurations and cannot
 * change while Petrel runs: where the queue is (data_dir, [queue] backend,
 * postgres_url) and who this node is (node_name).
 */
export function restartNeeded(running: Config, next: Config): string[] {
  const out: string[] = [];
  if (running.data_dir !== next.data_dir) out.push('data_dir');
  if (running.queue.backend !== next.queue.backend) out.push('[queue] backend');
  if (running.queue.postgres_url !== next.queue.postgres_url) out.push('[queue] postgres_url');
  if (running.queue.node_name !== next.queue.node_name) out.push('[queue] node_name');
  return out;
}

/**
 * atRestart - the keys that differ but are read once, at start (the admin
 * listener, the outbound SMTP client and its pool, log level, workers, the
 * host name): a reload takes the rest and names these. ([checks] and
 * [filter] are read at each use: checks/inbound-checks, delivery/maildir.)
 */
export function atRestart(running: Config, next: Config): string[] {
  const d = (c: Config): unknown[] => [c.delivery.helo_name, c.delivery.connect_timeout, c.delivery.dns_servers, c.delivery.max_recipients_per_transaction, c.delivery.max_connections, c.delivery.max_connections_per_destination, c.delivery.max_messages_per_connection, c.delivery.connection_idle_timeout, c.delivery.source_ipv4, c.delivery.source_ipv6, c.delivery.helo_name_ipv6, c.delivery.address_family, c.delivery.address_preference];
  const keys: Array<[string, (c: Config) => unknown]> = [
    ['hostname', (c) => c.hostname],
    ['[admin]', (c) => c.admin],
    ['[delivery] connection settings', d],
    ['[log] level', (c) => c.log.level],
    ['[queue] max_in_flight', (c) => c.queue.max_in_flight],
    ['[delivery] shaping', (c) => c.delivery.shaping],
    ['[server] workers', (c) => (c as Partial<Config>).server?.workers],
  ];
  return keys.filter(([, get]) => JSON.stringify(get(running)) !== JSON.stringify(get(next))).map(([name]) => name);
}

export class Petrel {
  readonly store: QueueStore;
  readonly router: Router;
  readonly enqueuer: Enqueuer;
  /** DKIM signing at enqueue (dkim/signer). */
  readonly dkim: DkimSigner;
  readonly reporter: Reporter;
  readonly scheduler: Scheduler;
  readonly eventLog: EventLog;
  readonly agents: Partial<Record<NextHop['kind'], DeliveryAgent>>;
  readonly metrics: AdminMetrics;
  readonly actions: AdminActions;
  /** Local users, aliases and catch-alls (RCPT checks and enqueue-time expansion); replaced by reconfigure(). */
  local: LocalRecipients;
  readonly pickup: PickupDirectory;
  /** Failed logins per client address, across sessions. */
  readonly authThrottle: AuthThrottle;
  /** Users who may authenticate on submission listeners ([smtp] users_file). */
  submissionUsers: SubmissionUsers;
  /** Who may send as whom once authenticated ([smtp] sender_logins). */
  senderLogins: SenderLogins;
  /** What every inbound session reads its configuration, policy, TLS and users from; reconfigure() updates it. */
  private inboundCtx: SessionContext | null = null;
  inbound: InboundServer | null = null;
  /** Outbound connections, shared by the SMTP and LMTP agents ([delivery] max_connections in all). */
  readonly pool: ConnectionPool;
  /** TLS results per policy domain and day, for TLS reports (RFC 8460): the SMTP agent calls tlsRecorder.record(). */
  readonly tlsRecorder: TlsRecorder;
  /** Sends the daily TLS reports (and `petrel tlsrpt send`). */
  readonly tlsReports: TlsReportSender;
  /** Traffic shaping per provider (null with [delivery] shaping = false). */
  readonly shaper: Shaper | null;
  admin: AdminServer | null = null;
  /** In a cluster: per-destination limits shared with the other nodes. */
  private shared: SharedLimits | null = null;
  private accepting = true;
  /** The last statfs of data_dir (free octets, when), and the octets accepted since (see lowOnSpace). */
  private spaceCheck = { at: 0, free: Infinity, since: 0 };
  /** The start-up DNS check of the sending identity (delivery/smtp/identity-warnings); tests await `done`. */
  identityCheck: ReturnType<typeof warnSendingIdentity> | null = null;
  private readonly role: NonNullable<PetrelOptions['role']>;
  private readonly gate: ConnectionGate | null;
  /** Role "inbound": the primary's failed-login count (PetrelOptions.authFailed). */
  private readonly sharedAuthFailed: ((ip: string, user: string) => Promise<number>) | null;

  constructor(
    readonly config: Config,
    options: PetrelOptions = {},
  ) {
    this.role = options.role ?? 'whole';
    this.gate = options.gate ?? null;
    this.sharedAuthFailed = options.authFailed ?? null;
    this.store = options.store ?? makeQueue(config, { recover: true, trace: trace('queue') });
    this.router = new Router(config);
    const localTrace = trace('local');
    this.local = new LocalRecipients({
      domains: config.local.domains,
      usersFile: config.local.users_file,
      aliasesFile: config.local.aliases_file,
      onProblem: (text) => localTrace.warn({ problem: text }, 'local users/aliases'),
    });
    // DKIM keys ([[dkim]]), checked at load; the signing threads start with the first signature.
    this.dkim = new DkimSigner({ keys: config.dkim ?? [], dataDir: config.data_dir, headerLimit: config.smtp.max_header_size });
    this.enqueuer = new Enqueuer({
      hostname: config.hostname,
      dkim: this.dkim,
      store: this.store,
      router: this.router,
      expand: (rs) => this.local.expand(rs),
      // The scheduler is made below; the fast path reaches it when a message arrives (a worker's primary takes that decision).
      ...(this.role === 'inbound' ? {} : { fresh: { room: (n: number) => this.scheduler.fresh.room(n), take: (c: Claim) => this.scheduler.fresh.take(c) } }),
    });
    this.pool = new ConnectionPool(poolOptionsFrom(config));
    this.tlsRecorder = new TlsRecorder({ dir: join(config.data_dir, 'tlsrpt'), onProblem: (text) => trace('tlsrpt').warn({ problem: text }, 'TLS report counts') });
    this.shaper = shaperFrom(config, {
      onEvent: (e) => void this.store.appendEvents([e]).catch((err) => trace('shaping').warn({ err: (err as Error).message, event: e.event }, 'cannot record a shaping event')),
      onResume: (p) => this.pool.resumeProvider(p),
      // Throttle state kept across restarts by the process that delivers (a worker only receives).
      ...(this.role === 'inbound' ? {} : { statePath: join(config.data_dir, 'shaping.json'), onStateProblem: (text: string) => trace('shaping').warn({ problem: text }, 'shaping state') }),
    });
    // Every connection under an MTA-STS or DANE policy is counted for TLS reports.
    const smtp = SmtpAgent.fromConfig(config, { pool: this.pool, onTlsResult: (r) => this.tlsRecorder.record(r), ...(this.shaper ? { shaper: this.shaper } : {}) });
    this.agents = {
      maildir: new MaildirAgent({ junkFolder: () => config.checks.junk_folder }),
      directory: new DirectoryAgent({ requireMount: config.delivery.directory_require_mount }),
      smtp: options.smtpAgent ? options.smtpAgent(smtp) : smtp,
      lmtp: LmtpAgent.fromConfig(config, { pool: this.pool }),
      ...options.agents,
    };
    this.tlsReports = new TlsReportSender({ config, enqueuer: this.enqueuer, recorder: this.tlsRecorder, trace: trace('tlsrpt') });
    this.metrics = new AdminMetrics(this.store, options.connections ?? (() => this.inbound?.connectionCount ?? 0), { defaults: true });
    if (this.shaper) {
      const shaper = this.shaper;
      this.metrics.watchShaping(() => shaper.snapshot());
    }
    this.reporter = new Reporter({ config, store: this.store, enqueuer: this.enqueuer, trace: trace('dsn'), onQueued: (kind) => this.metrics.onReport(kind) });
    this.scheduler = new Scheduler({
      config,
      store: this.store,
      router: this.router,
      agents: this.agents,
      report: (qid) => this.reporter.report(qid),
      trace: trace('scheduler'),
      onResult: (res, m, hop) => this.metrics.onResult(res, m, hop),
      maxInflight: config.queue.max_in_flight,
    });
    this.eventLog = new EventLog(this.store, join(config.data_dir, 'log', 'events.jsonl'), trace('eventlog'));
    this.eventLog.policy = { retentionMs: config.log.retention, rotateSize: config.log.rotate_size, keep: config.log.rotate_keep };
    this.eventLog.onWritten = (events) => this.metrics.onEvents(events);
    this.actions = new AdminActions({
      store: this.store,
      router: this.router,
      report: (qid) => this.reporter.report(qid),
      tlsrptSend: (day, force) => this.tlsReports.sendDay(day, { force }),
      // An operator's retry ends the delivery back-off of its next hops first (admin/retry-now).
      ...(this.shaper ? { shaping: () => this.shaper!.snapshot() } : {}),
      onResumeProvider: (name) => {
        const p = this.shaper?.get(name);
        return p ? this.shaper!.resume(p, 'resumed by an operator (petrel queue resume)') : null;
      },
      onRetry: (ds) => endBackOffs(ds, { router: this.router, pool: this.pool, ...(config.queue.backend === 'postgres' ? { cluster: { store: this.store, node: config.queue.node_name } } : {}) }),
    });
    this.submissionUsers = new SubmissionUsers(config.smtp.users_file);
    this.senderLogins = new SenderLogins(config.smtp.sender_logins);
    this.authThrottle = new AuthThrottle();
    this.pickup = new PickupDirectory({ config, enqueuer: this.enqueuer, trace: trace('pickup'), record: (events) => this.store.appendEvents(events) });
  }

  /** start - open everything and begin accepting mail (a worker: only the SMTP listeners). */
  async start(): Promise<void> {
    // A source address this machine does not have: refuse to start before anything is opened (nothing could be delivered).
    await assertSourcesBindable(this.config);
    mkdirSync(this.config.data_dir, { recursive: true });
    if (this.role !== 'inbound') await this.startQueue();
    const tls = await loadTls(this.config);
    this.local.watch();
    this.inboundCtx = {
      config: this.config,
      enqueuer: this.enqueuer,
      policy: new RecipientPolicy(this.config, this.local),
      tls: tls.context,
      trace: trace('inbound'),
      lowOnSpace: () => this.lowOnSpace(),
      accepting: () => this.accepting,
      users: this.submissionUsers,
      onReply: (code) => this.metrics.onReply(code),
      onAccepted: (_qid, size) => {
        this.spaceCheck.since += size;
        this.metrics.onAccepted(size);
      },
      onConnect: () => this.metrics.onConnect(),
      senderLogins: this.senderLogins,
      authFailed: (ip, user) => {
        this.metrics.onAuthFailure();
        return this.sharedAuthFailed ? this.sharedAuthFailed(ip, user) : this.authThrottle.failed(ip, user);
      },
    };
    if (this.role !== 'queue') {
      this.inbound = new InboundServer(this.inboundCtx, this.gate);
      await this.inbound.listen();
    }
    if (this.role !== 'inbound') {
      await this.pickup.start();
      // PTR / forward-confirmed / HELO checks of the source addresses: warnings only, in the background.
      this.identityCheck = warnSendingIdentity(this.config, { trace: trace('smtp') });
      this.tlsReports.start();
    }
  }

  /** startQueue - the store (recovery), event log, redirects, scheduler and admin listener. */
  private async startQueue(): Promise<void> {
    warnImpossibleMinFreeSpace(this.config.data_dir, this.config.queue.min_free_space, { trace: trace('queue') });
    try {
      await this.store.open();
    } catch (e) {
      throw describeOpenFailure(this.config, e);
    }
    await this.eventLog.open();
    if (this.config.queue.backend === 'postgres') {
      const node = this.config.queue.node_name;
      this.shared = new SharedLimits({
        store: this.store,
        pool: this.pool,
        node,
        trace: trace('cluster'),
        shaper: this.shaper,
        retryHeld: async (destinations, provider) => {
          for (const destination of destinations) await this.store.retryNow({ destination }, { who: `node ${node}`, reason: `provider ${provider} resumed on another node` });
        },
      });
      this.shared.start();
    }
    for (const o of await this.store.overrides()) {
      const to = o.kind === 'redirect' ? parseEndpoint(o.to) : null;
      if (to) this.router.setRedirect(o.destination, to);
    }
    this.scheduler.start();
    if (this.config.admin.listen) {
      this.admin = new AdminServer({ listen: this.config.admin.listen, token: this.config.admin.token, actions: this.actions, metrics: this.metrics, trace: trace('admin') });
      await this.admin.listen();
    }
  }

  /** reload - re-read the local users, aliases and submission users files now (SIGHUP). */
  reload(): void {
    this.local.reload();
    this.submissionUsers.reload();
    this.senderLogins.reload();
    inboundChecksFor(this.config).reloadTables();
  }

  /**
   * reconfigure - take a new configuration while running (petrel reload):
   * nothing of it is applied when it needs a restart (restartNeeded) or when
   * its TLS files or new listeners cannot be opened (ReloadRefused); otherwise
   * routes, smarthost, limits, local domains, users, aliases, submission
   * users, sender logins, DKIM keys, traffic shaping rules (providers keep
   * their throttle state) and TLS certificates apply to the next connection,
   * message and delivery; listeners are opened and closed to match. No
   * connection and no message is dropped: sessions keep going, and a closed
   * listener only stops accepting. Returns the keys that changed but are read
   * only at start (atRestart), to be named to the operator.
   */
  async reconfigure(next: Config): Promise<string[]> {
    const restart = restartNeeded(this.config, next);
    if (restart.length) throw new ReloadRefused(`${restart.join(', ')} cannot change while Petrel runs: restart it to apply this file; nothing of it was applied`);
    const ctx = this.inboundCtx;
    const tls = ctx ? await loadTls(next).catch((e: Error) => Promise.reject(new ReloadRefused(`TLS: ${e.message}; nothing was applied`))) : null;
    let dkimKeys: DkimKeys | null = null;
    if (JSON.stringify(this.config.dkim) !== JSON.stringify(next.dkim)) {
      try {
        dkimKeys = DkimKeys.load(next.dkim ?? []);
      } catch (e) {
        throw new ReloadRefused(`[[dkim]]: ${(e as Error).message}; nothing was applied`);
      }
    }
    if (this.inbound) await this.inbound.openListeners(next.smtp.listen, next.smtp.submission_listen).catch((e: Error) => Promise.reject(new ReloadRefused(`cannot listen: ${e.message}; nothing was applied`)));
    // From here on nothing fails: every part sees the new configuration.
    // Sections are replaced whole, never changed inside: a shallow copy keeps the old ones.
    const old: Config = { ...this.config };
    const later = atRestart(old, next);
    // The host name stays what it was (Received: and Message-ID: are made with it until a restart).
    for (const key of Object.keys(next) as Array<keyof Config>) if (key !== 'hostname') (this.config as unknown as Record<string, unknown>)[key] = next[key];
    this.router.reconfigure();
    if (dkimKeys) this.dkim.reconfigure(dkimKeys);
    if (this.shaper && next.delivery.shaping) {
      const { rules, feedback } = shapingOf(next);
      this.shaper.reconfigure(rules, feedback);
    }
    const localChanged = JSON.stringify([old.local.domains, old.local.users_file, old.local.aliases_file]) !== JSON.stringify([next.local.domains, next.local.users_file, next.local.aliases_file]);
    if (localChanged) {
      this.local.unwatch();
      this.local = new LocalRecipients({ domains: next.local.domains, usersFile: next.local.users_file, aliasesFile: next.local.aliases_file, onProblem: (text) => trace('local').warn({ problem: text }, 'local users/aliases') });
      this.local.watch();
    }
    this.submissionUsers = new SubmissionUsers(next.smtp.users_file);
    this.senderLogins = new SenderLogins(next.smtp.sender_logins);
    if (!localChanged) this.local.reload();
    inboundChecksFor(this.config).reloadTables();
    this.eventLog.policy = { retentionMs: next.log.retention, rotateSize: next.log.rotate_size, keep: next.log.rotate_keep };
    if (ctx) {
      ctx.policy = new RecipientPolicy(this.config, this.local);
      ctx.users = this.submissionUsers;
      ctx.senderLogins = this.senderLogins;
      if (tls) ctx.tls = tls.context;
    }
    await this.inbound?.closeListeners(next.smtp.listen, next.smtp.submission_listen);
    return later;
  }

  /**
   * lowOnSpace - free space under data_dir below min_free_space. min_free_space
   * is the reserve the queue's own writes (claims, outcomes, events) need to
   * go on delivering, which is what frees space: it must not be spent on new
   * messages. Far from the limit, a figure up to a second old, less what was
   * accepted since, is enough; near it (within twice min_free_space), the file
   * system is asked at every MAIL, so a burst of messages within one second
   * cannot take the reserve and fill the disk (the flaky disk-full test).
   */
  lowOnSpace(): boolean {
    const min = this.config.queue.min_free_space;
    const now = Date.now();
    const estimate = this.spaceCheck.free - this.spaceCheck.since;
    if (now - this.spaceCheck.at < 1000 && estimate >= 2 * min) return false;
    this.spaceCheck = { at: now, free: Infinity, since: 0 };
    try {
      const s = statfsSync(this.config.data_dir);
      this.spaceCheck.free = s.bavail * s.bsize;
    } catch {
      // A file system that cannot be asked refuses nothing (the writes themselves still fail cleanly).
    }
    return this.spaceCheck.free < min;
  }

  /** stop - the SIGTERM path (see the file comment); resolves within `deadlineMs` plus a little. */
  async stop(deadlineMs = 25_000): Promise<void> {
    this.accepting = false;
    this.identityCheck?.cancel();
    const t0 = Date.now();
    this.local.unwatch();
    if (this.role === 'inbound') {
      await this.inbound?.close(Math.min(5000, deadlineMs));
      await this.dkim.close();
      return;
    }
    await this.pickup.stop();
    await this.tlsReports.stop();
    await this.inbound?.close(Math.min(5000, deadlineMs));
    await this.admin?.close();
    await this.scheduler.stop(Math.max(1000, deadlineMs - (Date.now() - t0) - 2000));
    this.shared?.stop();
    this.shaper?.close();
    await Promise.allSettled([...Object.values(this.agents).map((a) => a?.close()), this.pool.close()]);
    await this.tlsRecorder.close();
    await this.dkim.close();
    await this.eventLog.close();
    await this.store.close();
  }
}
