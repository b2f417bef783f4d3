// End to end: DNS block lists (issue 15). Clients connect from different
// loopback addresses (127.0.0.x); the loopback DNS server plays the lists.
// A listed client is refused 554 5.7.1 at RCPT naming the list; an unlisted
// one is accepted; a list that never answers, or answers 127.255.255.254
// (a refused query), does not block: the mail is accepted with a
// dnsbl_error event. relay_networks clients are not looked up.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { SmtpTalk, replyLine } from '../helpers/smtp-talk.js';
import { cleanup, startPetrel, waitFor, type InProcess } from '../helpers/petrel-harness.js';
import { queryName } from '../../src/checks/dnsbl.js';

describe('DNS block lists', () => {
  let dns: DnsServer;
  let p: InProcess;

  before(async () => {
    dns = await startDnsServer({
      '2.0.0.127.listed.test': { A: ['127.0.0.2'] },
      '6.0.0.127.listed.test': { A: ['127.0.0.2'] },
      '4.0.0.127.silent.test': 'SILENT',
      '5.0.0.127.refusing.test': { A: ['127.255.255.254'] },
    });
    p = await startPetrel(`[smtp]
listen = ["127.0.0.1:0"]
relay_networks = ["127.0.0.6/32"]
[local]
domains = ["local.test"]
[delivery]
dns_servers = ["${dns.address}"]
[checks]
dnsbl = ["listed.test", "silent.test", "refusing.test"]
dns_timeout = "300ms"
`);
  });
  after(async () => {
    await p.stop();
    await dns.close();
    cleanup(p.dir);
  });

  async function rcpt(from: string): Promise<{ t: SmtpTalk; reply: string }> {
    const t = await SmtpTalk.open(p.port, '127.0.0.1', from);
    await t.read();
    await t.cmd('EHLO client.test');
    await t.cmd('MAIL FROM:<x@sender.test>');
    return { t, reply: replyLine(await t.cmd('RCPT TO:<bob@local.test>')) };
  }

  test('a listed client is refused 554 5.7.1 at RCPT, naming the list', async () => {
    const { t, reply } = await rcpt('127.0.0.2');
    assert.equal(reply, '554 5.7.1 Service unavailable; client [127.0.0.2] blocked using listed.test');
    t.close();
  });

  test('an unlisted client is accepted, with no event', async () => {
    const t = await SmtpTalk.open(p.port, '127.0.0.1', '127.0.0.3');
    await t.read();
    await t.cmd('EHLO client.test');
    assert.match(replyLine(await t.send('x@sender.test', ['bob@local.test'], 'Subject: clean\r\n\r\nhi\r\n')), /^250 /);
    t.close();
    await waitFor(() => p.events().find((e) => e.event === 'received' && e.remote?.includes('[127.0.0.3]')), 5000, 'received');
    assert.equal(p.events().filter((e) => e.event === 'dnsbl_error' && (e.detail ?? '').includes('127.0.0.3')).length, 0);
  });

  test('a list that never answers, or refuses the query (127.255.255.x): accepted, with a dnsbl_error event', async () => {
    for (const [ip, list] of [['127.0.0.4', 'silent.test'], ['127.0.0.5', 'refusing.test']] as const) {
      const t = await SmtpTalk.open(p.port, '127.0.0.1', ip);
      await t.read();
      await t.cmd('EHLO client.test');
      assert.match(replyLine(await t.send('x@sender.test', ['bob@local.test'], `Subject: via ${ip}\r\n\r\nhi\r\n`)), /^250 /);
      t.close();
      const ev = await waitFor(() => p.events().find((e) => e.event === 'dnsbl_error' && (e.detail ?? '').startsWith(`${list}:`)), 5000, `dnsbl_error for ${list}`);
      assert.equal(ev.id, 1300);
      assert.match(ev.detail ?? '', new RegExp(ip.replace(/\./g, '\\.')));
      assert.ok(ev.queue_id, 'the event belongs to the accepted message');
    }
  });

  test('a client in relay_networks is not looked up, even if listed', async () => {
    const before = dns.queries.filter((q) => q.name.startsWith('6.0.0.127.')).length;
    const { t, reply } = await rcpt('127.0.0.6');
    assert.match(reply, /^250 /);
    t.close();
    assert.equal(dns.queries.filter((q) => q.name.startsWith('6.0.0.127.')).length, before);
  });

  test('queryName: IPv4 reversed, IPv6 as 32 reversed nibbles', () => {
    assert.equal(queryName('192.0.2.99', 'zen.example'), '99.2.0.192.zen.example');
    assert.equal(queryName('2001:db8::1', 'zen.example'), `1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example`);
  });
});
