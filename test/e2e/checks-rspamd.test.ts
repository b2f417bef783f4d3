// End to end: content scanning with a real rspamd (Debian's package) on
// loopback (issue 15). GTUBE is refused 550 5.7.1 with nothing kept; a clean
// message is accepted with X-Spamd-Result: and the verdict in its received
// event; a message rspamd scores "add header" gets X-Spam: Yes; rspamd
// stopped is 451 4.7.0 (tempfail), or with filter_failure = "accept" the
// message is accepted with a not_scanned event. A fake rspamd that answers
// garbage, cuts its answer short, or never answers is a failure too, never
// a pass.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { hasRspamd, startRspamd, type Rspamd } from '../helpers/rspamd.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { cleanup, tempDir, startPetrel, waitFor, type InProcess } from '../helpers/petrel-harness.js';

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

function message(subject: string, body: string): string {
  return `From: Alice <alice@sender.test>\r\nTo: Bob <bob@local.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@sender.test>\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${body}\r\n`;
}

/** stored - the messages in bob's inbox, or in one of his Maildir++ folders ("Junk"). */
function stored(p: InProcess, folder = ''): string[] {
  const dir = join(p.dir, 'var', 'mail', 'local.test', 'bob', folder ? `.${folder}` : '', 'new');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f), 'latin1').replace(/\r?\n/g, '\r\n')) : [];
}

async function send(p: InProcess, subject: string, text: string): Promise<string> {
  const t = await SmtpTalk.open(p.port);
  await t.read();
  await t.cmd('EHLO client.sender.test');
  const r = await t.send('alice@sender.test', ['bob@local.test'], text);
  t.close();
  return replyLine(r);
}

function config(dns: string, url: string, extra = ''): string {
  return `[smtp]
listen = ["127.0.0.1:0"]
relay_networks = ["10.0.0.0/8"]
[local]
domains = ["local.test"]
[delivery]
dns_servers = ["${dns}"]
[filter]
rspamd_url = "${url}"
filter_timeout = "3s"
${extra}`;
}

describe('rspamd content scan', { skip: hasRspamd() ? false : 'rspamd is not installed (apt-get install rspamd)' }, () => {
  let dns: DnsServer;
  let rspamd: Rspamd;
  let p: InProcess;
  let lenient: InProcess;

  before(async () => {
    dns = await startDnsServer({});
    rspamd = await startRspamd(dns.address);
    p = await startPetrel(config(dns.address, rspamd.url, 'result_headers = true\n'));
    lenient = await startPetrel(config(dns.address, rspamd.url, 'filter_failure = "accept"\n'));
  });
  after(async () => {
    await p?.stop();
    await lenient?.stop();
    await rspamd?.stop();
    await dns?.close();
    if (p) cleanup(p.dir);
    if (lenient) cleanup(lenient.dir);
  });

  test('GTUBE is refused 550 5.7.1 with rspamd\'s message, nothing kept', async () => {
    const r = await send(p, 'gtube', message('gtube', GTUBE));
    assert.match(r, /^550 5\.7\.1 Gtube pattern/);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(p.events().filter((e) => e.event === 'received').length, 0);
  });

  test('a clean message is accepted with X-Spamd-Result: and the verdict in the received event', async () => {
    assert.match(await send(p, 'clean', message('clean', 'Hello Bob,\r\nlunch on Friday at noon?\r\nAlice')), /^250 /);
    const m = await waitFor(() => stored(p).find((x) => x.includes('Subject: clean\r\n')), 10_000, 'delivery');
    assert.match(m, /X-Spamd-Result: default: False \[-?[\d.]+\/15\]; action=no action;/);
    const ev = p.events().find((e) => e.event === 'received');
    assert.match(ev?.remote ?? '', /rspamd: no action -?[\d.]+\/15 \[/);
  });

  test('a message rspamd scores for greylisting (no From:, no Message-ID:) gets 451 4.7.1, nothing kept', async () => {
    const junk = 'Subject: greylist me\r\nTo: bob@local.test\r\n\r\nbuy now\r\n';
    assert.match(await send(p, 'greylist me', junk), /^451 4\.7\.1 /);
    assert.equal(stored(p).filter((x) => x.includes('greylist me')).length, 0);
  });

  test('rspamd stopped: 451 4.7.0 (tempfail); with filter_failure = "accept": accepted with a not_scanned event', async () => {
    await rspamd.kill();
    assert.match(await send(p, 'down', message('down', 'is anybody there?')), /^451 4\.7\.0 /);
    assert.match(await send(lenient, 'down accepted', message('down accepted', 'is anybody there?')), /^250 /);
    const ev = await waitFor(() => lenient.events().find((e) => e.event === 'not_scanned'), 5000, 'not_scanned event');
    assert.equal(ev.id, 1200);
    assert.match(ev.detail ?? '', /rspamd: .*ECONNREFUSED/);
    const rec = lenient.events().find((e) => e.event === 'received');
    assert.match(rec?.remote ?? '', /rspamd: not scanned/);
    await rspamd.restart();
    assert.match(await send(p, 'back', message('back', 'hello again')), /^250 /);
  });
});

describe('a broken rspamd is a failure, never a pass', () => {
  let dns: DnsServer;
  let fake: Server;
  let mode: 'garbage' | 'cut' | 'silent' | 'unknown action' | 'add header' | 'rewrite subject' = 'garbage';
  let p: InProcess;

  before(async () => {
    dns = await startDnsServer({});
    fake = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (mode === 'garbage') res.end('<html>not json</html>');
        else if (mode === 'unknown action') res.end('{"action":"deliver it","score":0}');
        else if (mode === 'add header') res.end(JSON.stringify({ action: 'add header', score: 7, required_score: 15, symbols: { BAD: { score: 7 } }, milter: { add_headers: { 'X-Spam-Level': { value: '*******', order: 0 }, 'Bad Name': 'x' } } }));
        else if (mode === 'rewrite subject') res.end(JSON.stringify({ action: 'rewrite subject', score: 9, required_score: 15, subject: '[SPAM] rewritten', symbols: {} }));
        else if (mode === 'cut') {
          res.writeHead(200, { 'content-length': '1000' });
          res.write('{"action":"no ac');
          setTimeout(() => res.destroy(), 50);
        }
        // silent: never answers
      });
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    const port = (fake.address() as AddressInfo).port;
    p = await startPetrel(config(dns.address, `http://127.0.0.1:${port}`).replace('filter_timeout = "3s"', 'filter_timeout = "500ms"'));
  });
  after(async () => {
    await p.stop();
    fake.closeAllConnections();
    await new Promise<void>((r) => fake.close(() => r()));
    await dns.close();
    cleanup(p.dir);
  });

  for (const m of ['garbage', 'unknown action', 'cut', 'silent'] as const) {
    test(`rspamd answering ${m}: 451 4.7.0, nothing kept`, async () => {
      mode = m;
      assert.match(await send(p, m, message(m, 'hello')), /^451 4\.7\.0 /);
      assert.equal(p.events().filter((e) => e.event === 'received').length, 0);
    });
  }

  test('"add header": accepted with X-Spam: Yes and the headers rspamd asks for (well-formed names only), filed in Junk', async () => {
    mode = 'add header';
    assert.match(await send(p, 'add me', message('add me', 'hello')), /^250 /);
    const m = await waitFor(() => stored(p, 'Junk').find((x) => x.includes('Subject: add me\r\n')), 10_000, 'delivery');
    assert.match(m, /\r\nX-Spam: Yes\r\nX-Spam-Level: \*{7}\r\nX-Petrel-Junk: rspamd add header 7\/15\r\n/);
    assert.equal(stored(p).filter((x) => x.includes('Subject: add me\r\n')).length, 0, 'not in the inbox');
    // The verdict as fields of the received event: in the event log, and read back from the store (track, the viewer).
    const expected = { action: 'add header', score: 7, required: 15, symbols: ['BAD(7)'] };
    const ev = await waitFor(() => p.events().find((e) => e.event === 'received' && e.filter?.action === 'add header'), 10_000, 'the received event');
    assert.deepEqual(ev.filter, expected);
    assert.equal(ev.auth?.dmarc !== undefined, true, 'auth fields too (authenticate is on by default)');
    const back = await p.petrel.store.eventsOf(ev.queue_id, 0, 100);
    assert.deepEqual(back.find((e) => e.event === 'received')?.filter, expected);
    // The viewer's message page lists them (Debian's chromium driven by playwright-core, as test/e2e/queue-viewer).
    const profile = tempDir('petrel-chromium-');
    const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'], headless: true });
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      page.setDefaultTimeout(15_000);
      await page.goto(`http://127.0.0.1:${p.petrel.admin!.bound!.port}/#/message/${ev.queue_id}`);
      const dd = await page.waitForSelector('#checks dd[data-filter-action="add header"]');
      assert.equal(await dd.textContent(), 'add header, score 7 / 15');
      assert.match((await page.textContent('#checks')) ?? '', /SPF.*DKIM.*DMARC.*ARC.*rspamd.*Symbols\s*BAD\(7\)/s);
    } finally {
      await context.close();
      cleanup(profile);
    }
    assert.doesNotMatch(m, /Bad Name/);
  });

  test('"rewrite subject": accepted with rspamd\'s Subject: in place of the old one', async () => {
    mode = 'rewrite subject';
    assert.match(await send(p, 'old subject', message('old subject', 'hello')), /^250 /);
    const m = await waitFor(() => stored(p).find((x) => x.includes('Subject: [SPAM] rewritten\r\n')), 10_000, 'delivery');
    assert.doesNotMatch(m, /Subject: old subject/);
    assert.equal(m.match(/^Subject:/gm)?.length, 1);
  });
});
