/*
 * bench/crash - crash under load (issue 7): N messages with R recipients each
 * into a Petrel child process relaying to a peer that defers ~10% of RCPTs at
 * random; Petrel is kill -9'd K times at random moments and restarted each
 * time. At the end every recipient of every acknowledged message must have
 * reached the peer (lost must be 0), duplicates must not exceed what was in
 * flight at the kills (recipients in state "delivering" in the store right
 * after each kill), and `petrel audit` must find no exception.
 *
 * Usage: node dist/bench/crash.js [--messages 20000] [--recipients 3] [--kills 5] [--clients 12] [--workers N]
 * (--workers: `[server] workers`; the kill -9 goes to the primary, which takes its workers with it.)
 * Prints one line of key=value figures; exits 1 when a property fails.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { sendLoad, type LoadCounter } from '../test/helpers/load.js';
import { startPeer } from '../test/helpers/test-peer.js';
import { arg, freePort, removeDir, run, sleep, startPetrel, tempDir, ROOT, type Proc } from './lib.js';

async function main(): Promise<void> {
  const messages = Number(arg('messages', '20000'));
  const recipients = Number(arg('recipients', '3'));
  const kills = Number(arg('kills', '5'));
  const clients = Number(arg('clients', '12'));
  const workers = arg('workers', '');
  const peer = await startPeer({ rcptReply: () => (Math.random() < 0.1 ? '451 4.3.2 Try again later' : undefined) });
  const dir = tempDir('petrel-bench-crash-');
  const port = await freePort();
  const config = `hostname = "petrel.bench"\ndata_dir = "${join(dir, 'var')}"\n[smtp]\nlisten = ["127.0.0.1:${port}"]\nmax_connections_per_client = 200\n[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\ndead_destination_backoff = "0ms"\n[local]\ndomains = []\n[queue]\nretry_intervals = ["500ms"]\n[admin]\nlisten = ""\n[log]\nlevel = "error"\n${workers ? `[server]\nworkers = ${Number(workers)}\n` : ''}`;
  const t0 = Date.now();
  let petrel: Proc = await startPetrel(dir, config);
  const acked = new Set<string>();
  const next: LoadCounter = { i: 0, to: messages };
  let inFlightAtKills = 0;
  try {
    for (let k = 0; k < kills; k++) {
      const target = Math.floor(((k + 1) * messages) / (kills + 1) + (Math.random() - 0.5) * (messages / (kills + 1) / 2));
      const load = sendLoad(port, next, acked, { clients, recipients, prefix: 'crash' });
      while (next.i < target && next.i < messages) await sleep(20);
      await sleep(Math.random() * 300);
      petrel.child.kill('SIGKILL');
      await new Promise((r) => petrel.child.once('exit', r));
      await load;
      // What the store had claimed at the kill: the most that can be delivered twice.
      const db = new Database(join(dir, 'var', 'queue', 'queue.db'), { readonly: true });
      inFlightAtKills += (db.prepare(`SELECT COUNT(*) AS n FROM recipients WHERE state = 'delivering'`).get() as { n: number }).n;
      db.close();
      petrel = await startPetrel(dir, config);
    }
    await sendLoad(port, next, acked, { clients, recipients, prefix: 'crash' });
    // Every acknowledged message's recipients at the peer.
    const wanted = new Set<string>();
    for (const id of acked) {
      const n = Number(/crash-(\d+)@/.exec(id)![1]);
      for (let r = 0; r < recipients; r++) wanted.add(`r${n}-${r}@remote.example`);
    }
    const deadline = Date.now() + 600_000;
    let arrived = new Map<string, number>();
    for (;;) {
      arrived = new Map();
      for (const a of peer.delivered()) arrived.set(a, (arrived.get(a) ?? 0) + 1);
      if ([...wanted].every((w) => arrived.has(w)) || Date.now() > deadline) break;
      await sleep(500);
    }
    const lost = [...wanted].filter((w) => !arrived.has(w)).length;
    let duplicates = 0;
    for (const n of arrived.values()) duplicates += n - 1;
    const audit = await run(process.execPath, [join(ROOT, 'bin', 'petrel.js'), 'audit', '--config', join(dir, 'petrel.toml')]).catch((e: Error) => e.message);
    const exceptions = Number(/exceptions: (\d+)/.exec(audit)?.[1] ?? -1);
    const ok = lost === 0 && duplicates <= inFlightAtKills && exceptions === 0;
    console.log(
      [
        `messages=${messages}`,
        `recipients_per_message=${recipients}`,
        `kills=${kills}`,
        `acknowledged=${acked.size}`,
        `recipients_acknowledged=${wanted.size}`,
        `lost=${lost}`,
        `duplicates=${duplicates}`,
        `in_flight_at_kills=${inFlightAtKills}`,
        `audit_exceptions=${exceptions}`,
        `seconds=${((Date.now() - t0) / 1000).toFixed(0)}`,
        `result=${ok ? 'pass' : 'FAIL'}`,
      ].join(' '),
    );
    if (!ok) process.exitCode = 1;
  } finally {
    await petrel.stop();
    await peer.close();
    removeDir(dir);
  }
}

main().catch((e) => {
  console.error(`bench/crash: ${(e as Error).stack}`);
  process.exit(1);
});
