// Regression test named after seed 000: 2,000 RCPTs with max_recipients = 1000
// -> exactly the first 1,000 get 250, the rest 452 4.5.3, and the message
// reaches exactly those 1,000 (RFC 5321 §4.5.3.1.10; no silent cap).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { SmtpTalk } from '../helpers/smtp-talk.js';
import { startPetrel, waitFor, cleanup } from '../helpers/petrel-harness.js';

test('2,000 RCPTs, limit 1,000: first 1,000 accepted and delivered, the rest 452 4.5.3', async () => {
  const p = await startPetrel('[smtp]\nlisten = ["127.0.0.1:0"]\nmax_recipients = 1000\n');
  try {
    const t = await SmtpTalk.open(p.port);
    await t.read();
    await t.cmd('EHLO client.test');
    // Pipelined, as a real bulk sender would: one write with MAIL and every RCPT.
    let batch = 'MAIL FROM:<bulk@example.com>\r\n';
    for (let i = 0; i < 2000; i++) batch += `RCPT TO:<u${i}@localhost>\r\n`;
    t.write(batch);
    assert.equal((await t.read())!.code, 250);
    const codes: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const r = (await t.read())!;
      codes.push(`${r.code} ${r.enhanced}`);
    }
    assert.deepEqual(codes.slice(0, 1000), Array(1000).fill('250 2.1.5'));
    assert.deepEqual(codes.slice(1000), Array(1000).fill('452 4.5.3'));
    assert.equal((await t.cmd('DATA')).code, 354);
    t.write('Subject: many\r\nMessage-ID: <many@example.com>\r\n\r\nhello\r\n.\r\n');
    assert.equal((await t.read(30_000))!.code, 250);
    await t.cmd('QUIT');
    t.close();
    const mail = join(p.dir, 'var', 'mail', 'localhost');
    await waitFor(() => p.events().filter((e) => e.event === 'delivered').length === 1000, 60_000, '1,000 deliveries');
    const boxes = readdirSync(mail);
    assert.equal(boxes.length, 1000);
    for (let i = 0; i < 2000; i++) {
      const box = join(mail, `u${i}`, 'new');
      assert.equal(existsSync(box) && readdirSync(box).length === 1, i < 1000, `u${i}`);
    }
    const received = p.events().filter((e) => e.event === 'received');
    assert.equal(received.length, 1000);
  } finally {
    await p.stop();
    cleanup(p.dir);
  }
});
