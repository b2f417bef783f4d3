// outbound-postfix: interop with a real Postfix smtpd as the receiving server,
// smtpd_recipient_limit = 100: one job of 5,000 recipients is delivered in
// full, with 0 failures, although max_recipients_per_transaction (1000) is far
// above the receiver's limit - the 452s are re-sent on the same connection.
// Postfix's own log is the witness: 5,000 distinct recipients discarded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmtpAgent } from '../../src/delivery/smtp/smtp-agent.js';
import { startPostfix } from '../helpers/postfix.js';
import { collect, fixedHop, makeJob, rcpts } from '../helpers/jobs.js';

test('Postfix smtpd_recipient_limit=100: 5,000 recipients in one job, max_recipients_per_transaction 1000 -> 5,000 delivered, 0 failures', async (t) => {
  const pf = await startPostfix({ recipientLimit: 100 });
  const a = new SmtpAgent({ heloName: 'petrel.test', maxRecipientsPerTransaction: 1000, timeouts: { connect: 5000 } });
  t.after(async () => {
    await a.close();
    await pf.stop();
  });
  const addresses = rcpts(5000, 'remote.test');
  const job = makeJob(addresses, fixedHop(pf.port));
  const c = collect(job);
  const started = Date.now();
  await a.deliver(job, c.report);
  const took = Date.now() - started;
  assert.equal(c.byAddress.size, 5000);
  assert.equal(c.count('failed'), 0);
  assert.equal(c.count('deferred'), 0, [...c.byAddress.values()].find((r) => r.kind === 'deferred')?.reply);
  assert.equal(c.count('delivered'), 5000);
  t.diagnostic(`5,000 recipients handed to Postfix in ${took} ms`);

  await a.close(); // QUIT the pooled connection: Postfix then logs the session's counters

  // Postfix accepted exactly 100 per transaction: 50 messages, and discards each recipient once.
  const deadline = Date.now() + 60_000;
  const quitSeen = (): boolean => pf.log().some((l) => l.includes('disconnect from') && l.includes(' mail='));
  while ((pf.delivered().length < 5000 || !quitSeen()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  const done = pf.delivered();
  assert.equal(done.length, 5000);
  assert.equal(new Set(done).size, 5000);
  const accepted = pf.log().filter((l) => /postfix\/qmgr.*nrcpt=/.test(l));
  assert.equal(accepted.length, 50, 'one Postfix queue file per transaction');
  for (const l of accepted) assert.match(l, /nrcpt=100 /);
  // One connection carried all 50 transactions (the other disconnect is the readiness probe).
  const sessions = pf.log().filter((l) => l.includes('disconnect from') && l.includes(' mail='));
  assert.equal(sessions.length, 1, sessions.join('\n'));
  // 5,900 RCPTs: 1,000 in the first transaction (900 answered 452), then 49 x 100 once the limit was learned.
  assert.match(sessions[0]!, / ehlo=1 mail=50 rcpt=5900 data=50 rset=49 quit=1 /);
  t.diagnostic(sessions[0]!.replace(/^.*disconnect/, 'disconnect'));
});
