// Delivery status notifications end to end: a real Petrel, a scriptable next
// hop, and the sender's own Maildir as the place reports arrive. Each report
// is read back with Python's email package (a real MIME parser).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup, type InProcess } from '../helpers/petrel-harness.js';
import { startPeer, type TestPeer } from '../helpers/test-peer.js';
import { python, type Parsed } from '../helpers/dsn-writer.js';

function mailbox(p: InProcess, user: string, domain = 'home.test'): Buffer[] {
  const box = join(p.dir, 'var', 'mail', domain, user, 'new');
  if (!existsSync(box)) return [];
  return readdirSync(box)
    .sort()
    .map((f) => Buffer.from(readFileSync(join(box, f), 'latin1').replace(/\r?\n/g, '\r\n'), 'latin1'));
}

async function send(p: InProcess, from: string, rcpts: string[], params: Record<string, string> = {}, mailParams = ''): Promise<void> {
  const t = await SmtpTalk.open(p.port);
  await t.read();
  await t.cmd('EHLO client.test');
  assert.equal((await t.cmd(`MAIL FROM:<${from}>${mailParams}`)).code, 250);
  for (const r of rcpts) assert.equal((await t.cmd(`RCPT TO:<${r}>${params[r] ? ' ' + params[r] : ''}`)).code, 250);
  assert.equal((await t.cmd('DATA')).code, 354);
  t.write(`From: <${from}>\r\nSubject: dsn test\r\nMessage-ID: <dsn-${Date.now()}@example.com>\r\n\r\nbody\r\n.\r\n`);
  assert.equal((await t.read())!.code, 250);
  await t.cmd('QUIT');
  t.close();
}

async function setup(peer: TestPeer, extra = ''): Promise<InProcess> {
  return startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\ndead_destination_backoff = "0ms"\n[local]\ndomains = ["home.test"]\n${extra}`);
}

test('a delay warning arrives once, then the expiry report (4.4.7) with the last error', async () => {
  const peer = await startPeer({ rcptReply: () => '451 4.3.2 System busy, try later' });
  const p = await setup(peer, '[queue]\nretry_intervals = ["300ms"]\ndelay_warning = "1s"\nmax_lifetime = "3s"\n');
  try {
    await send(p, 'alice@home.test', ['bob@far.example']);
    await waitFor(() => mailbox(p, 'alice').length === 2, 15_000, 'two reports');
    await new Promise((r) => setTimeout(r, 800));
    const reports = mailbox(p, 'alice');
    assert.equal(reports.length, 2, 'exactly one delay warning and one expiry report');
    const [delay, expiry] = (await Promise.all(reports.map((r) => python(r)))) as [Parsed, Parsed];
    assert.equal(delay.contentType, 'multipart/report');
    assert.equal(delay.params['report-type'], 'delivery-status');
    assert.equal(delay.recipients[0]!['action'], 'delayed');
    assert.ok(delay.recipients[0]!['will-retry-until'], 'Will-Retry-Until on a delay report');
    assert.equal(expiry.recipients[0]!['action'], 'failed');
    assert.equal(expiry.recipients[0]!['status'], '4.4.7');
    assert.match(expiry.recipients[0]!['diagnostic-code']!, /451 4\.3\.2 System busy/);
    assert.equal(expiry.recipients[0]!['final-recipient'], 'rfc822; bob@far.example');
    assert.equal(expiry.perMessage['reporting-mta'], 'dns; petrel.test');
    assert.equal(expiry.headers['auto-submitted']?.[0], 'auto-replied');
    const ev = p.events();
    assert.equal(ev.filter((e) => e.event === 'delay_notice').length, 1);
    assert.equal(ev.filter((e) => e.event === 'expired').length, 1);
  } finally {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  }
});

test('NOTIFY and ORCPT/ENVID are honoured and carried into the reports', async () => {
  const peer = await startPeer({ dsn: false, rcptReply: (a) => (a.startsWith('gone') ? '550 5.1.1 No such user here' : undefined) });
  const p = await setup(peer);
  try {
    await send(
      p,
      'alice@home.test',
      ['carol@home.test', 'gone1@far.example', 'gone2@far.example', 'dave@far.example'],
      {
        'carol@home.test': 'NOTIFY=SUCCESS ORCPT=rfc822;carol+40old.example',
        'gone1@far.example': 'NOTIFY=NEVER',
        'gone2@far.example': 'NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;gone2@far.example',
        'dave@far.example': 'NOTIFY=SUCCESS',
      },
      ' ENVID=batch-42 RET=HDRS',
    );
    // Expect: delivered report for carol (local) and relayed for dave (next hop lacks DSN)
    // together? No: different kinds -> separate reports. A failure report for gone2 only.
    await waitFor(() => mailbox(p, 'alice').length === 3, 15_000, 'three reports');
    await new Promise((r) => setTimeout(r, 500));
    const parsed = await Promise.all(mailbox(p, 'alice').map((r) => python(r)));
    assert.equal(parsed.length, 3);
    const byAction = Object.fromEntries(parsed.map((x) => [x.recipients[0]!['action'], x]));
    assert.deepEqual(Object.keys(byAction).sort(), ['delivered', 'failed', 'relayed']);
    const failed = byAction['failed']!;
    assert.deepEqual(failed.recipients.map((r) => r['final-recipient']), ['rfc822; gone2@far.example'], 'NOTIFY=NEVER suppressed gone1');
    assert.equal(failed.recipients[0]!['original-recipient'], 'rfc822; gone2@far.example');
    assert.equal(failed.recipients[0]!['status'], '5.1.1');
    assert.match(failed.recipients[0]!['diagnostic-code']!, /^smtp; 550 5\.1\.1 No such user here/);
    assert.equal(failed.perMessage['original-envelope-id'], 'batch-42');
    assert.ok(failed.original, 'headers of the original returned');
    const delivered = byAction['delivered']!;
    assert.equal(delivered.recipients[0]!['final-recipient'], 'rfc822; carol@home.test');
    assert.equal(delivered.recipients[0]!['original-recipient'], 'rfc822; carol@old.example');
    assert.equal(byAction['relayed']!.recipients[0]!['final-recipient'], 'rfc822; dave@far.example');
  } finally {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  }
});

test('a failure from <> makes no report; a failed report goes to the postmaster once, and never loops', async () => {
  // Everything remote fails permanently; the sender's own domain is remote too, so the report to it fails as well.
  const peer = await startPeer({ rcptReply: () => '550 5.1.1 No such user' });
  const p = await setup(peer, '[dsn]\npostmaster = "postmaster@home.test"\n');
  try {
    await send(p, '', ['x@far.example']);
    await send(p, 'alice@elsewhere.example', ['y@far.example']);
    await waitFor(() => mailbox(p, 'postmaster').length === 1, 15_000, 'postmaster notice');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(mailbox(p, 'postmaster').length, 1, 'one notice, no loop');
    const notice = await python(mailbox(p, 'postmaster')[0]!);
    assert.equal(notice.recipients[0]!['final-recipient'], 'rfc822; alice@elsewhere.example');
    const ev = p.events();
    const dsn = ev.filter((e) => e.event === 'dsn_queued');
    assert.equal(dsn.length, 2, 'the report to alice, then the notice to the postmaster');
    assert.ok(ev.some((e) => e.event === 'failed' && e.sender === '' && e.recipient === 'x@far.example'), 'the <> failure is in the log');
    assert.deepEqual(await p.petrel.store.list({ limit: 10 }), [], 'nothing left in the queue');
  } finally {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  }
});

test('a report to a sender that is a local alias reaches the alias target', async () => {
  const peer = await startPeer({ rcptReply: () => '550 5.1.1 No such user' });
  const { writeFileSync } = await import('node:fs');
  const { tempDir } = await import('../helpers/petrel-harness.js');
  const dir = tempDir();
  writeFileSync(join(dir, 'aliases'), 'boss: alice\n');
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\n[local]\ndomains = ["home.test"]\naliases_file = "aliases"\n`, {}, dir);
  try {
    await send(p, 'boss@home.test', ['x@far.example']);
    await waitFor(() => mailbox(p, 'alice').length === 1, 10_000, 'the report in the target mailbox');
    assert.equal(mailbox(p, 'boss').length, 0, 'no mailbox named after the alias');
  } finally {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  }
});

test('NOTIFY=SUCCESS to an alias: one "expanded" report for the alias; its addresses go on without SUCCESS', async () => {
  const peer = await startPeer({ dsn: true });
  const { writeFileSync } = await import('node:fs');
  const { tempDir } = await import('../helpers/petrel-harness.js');
  const dir = tempDir();
  writeFileSync(join(dir, 'aliases'), 'team: bob, carol, outside@far.example\nsolo: dave\n');
  const p = await startPetrel(`[delivery]\nsmarthost = "127.0.0.1:${peer.port}"\n[local]\ndomains = ["home.test"]\naliases_file = "aliases"\n`, {}, dir);
  try {
    await send(p, 'alice@home.test', ['team@home.test', 'solo@home.test', 'erin@home.test'], {
      'team@home.test': 'NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;team@home.test',
      'solo@home.test': 'NOTIFY=SUCCESS',
      'erin@home.test': 'NOTIFY=SUCCESS',
    });
    await waitFor(() => mailbox(p, 'bob').length === 1 && mailbox(p, 'carol').length === 1 && mailbox(p, 'dave').length === 1 && peer.delivered().length === 1, 10_000, 'the alias targets');
    await waitFor(() => mailbox(p, 'alice').length >= 2, 10_000, 'reports');
    await new Promise((r) => setTimeout(r, 500));
    const reports = await Promise.all(mailbox(p, 'alice').map((r) => python(r)));
    assert.equal(reports.length, 2, 'one report per kind: expanded (team, solo) and delivered (erin)');
    const byAction = new Map(reports.map((r) => [r.recipients[0]!['action'], r]));
    const expanded = byAction.get('expanded')!;
    assert.ok(expanded, 'an expanded report');
    assert.deepEqual(expanded.defects, []);
    assert.deepEqual(expanded.recipients.map((r) => r['final-recipient']).sort(), ['rfc822; solo@home.test', 'rfc822; team@home.test']);
    assert.ok(expanded.recipients.every((r) => r['action'] === 'expanded' && r['status'] === '2.0.0'));
    assert.equal(expanded.recipients.find((r) => r['final-recipient'] === 'rfc822; team@home.test')!['original-recipient'], 'rfc822; team@home.test');
    assert.match(expanded.headers['subject']![0]!, /^Expanded/);
    const delivered = byAction.get('delivered')!;
    assert.deepEqual(delivered.recipients.map((r) => r['final-recipient']), ['rfc822; erin@home.test']);
    // The alias's addresses were not asked for success: the remote one went on with NOTIFY less SUCCESS.
    const tx = peer.transactions.find((x) => x.completed)!;
    assert.equal(tx.rcpts.length, 1);
    assert.equal(tx.rcpts[0]!.address, 'outside@far.example');
    assert.ok(tx.rcpts[0]!.params.includes('NOTIFY=FAILURE'), tx.rcpts[0]!.params.join(' '));
    assert.ok(tx.rcpts[0]!.params.includes('ORCPT=rfc822;team@home.test'), tx.rcpts[0]!.params.join(' '));
    const ev = p.events();
    const teamDone = ev.find((e) => e.event === 'delivered' && e.recipient === 'team@home.test');
    assert.equal(teamDone?.report, 'expanded');
    assert.match(teamDone?.reply ?? '', /alias expanded/);
    assert.equal(ev.filter((e) => e.event === 'delivered' && e.report === 'delivered').map((e) => e.recipient).join(), 'erin@home.test');
  } finally {
    await p.stop();
    await peer.close();
    cleanup(p.dir);
  }
});
