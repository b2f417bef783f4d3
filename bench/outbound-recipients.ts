/*
 * bench/outbound-recipients - one message with 100,000 recipients relayed by
 * SmtpAgent through a loopback peer that takes 100 per transaction (452
 * after that), with max_recipients_per_transaction = 1000. Prints one JSON
 * line: time to full delivery, transactions, peak RSS. Run by hand:
 *   npm run build && node dist/bench/outbound-recipients.js [recipients]
 */
import { SmtpAgent } from '../src/delivery/smtp/smtp-agent.js';
import { startPeer } from '../test/helpers/test-peer.js';
import { fixedHop, makeJob, rcpts } from '../test/helpers/jobs.js';

const n = Number(process.argv[2] ?? 100_000);
const peer = await startPeer({ rcptLimit: { after: 100, reply: '452 4.5.3 Too many recipients' } });
const agent = new SmtpAgent({ heloName: 'bench.test', maxRecipientsPerTransaction: 1000 });
const job = makeJob(rcpts(n), fixedHop(peer.port));
let delivered = 0;
let other = 0;
let peakRss = process.memoryUsage().rss;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
const started = process.hrtime.bigint();
await agent.deliver(job, (results) => {
  for (const r of results) r.kind === 'delivered' ? delivered++ : other++;
});
const ms = Number(process.hrtime.bigint() - started) / 1e6;
clearInterval(sampler);
peakRss = Math.max(peakRss, process.memoryUsage().rss);
console.log(JSON.stringify({ bench: 'outbound-recipients', recipients: n, delivered, notDelivered: other, transactions: peer.transactions.length, ms: Math.round(ms), recipientsPerSecond: Math.round((n / ms) * 1000), peakRssMB: Math.round(peakRss / 1048576) }));
await agent.close();
await peer.close();
