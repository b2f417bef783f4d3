/*
 * bench/scan - what each pass over a message body costs: the three that look
 * at every line of a relayed message (inbound/data-reader: the end of data,
 * dot-stuffing and bare line ends; dkim/line-wrap: lines over 998 octets;
 * delivery/smtp/body wireReady: whether the stored octets can go out as they
 * are), each with its reference path where it has one (`fastPath: false`).
 * The body is smtp-source's: 74-octet lines, as bench/relay and bench/compare
 * send them, cut in two chunks as a 64 KB socket read would.
 *
 * Usage: node dist/bench/scan.js [--size 102400] [--rounds 2000]
 *   scan pass=line_wrap size=102400 us_per_body=14.0
 */
import { DataReader } from '../src/inbound/data-reader.js';
import { LineWrapper } from '../src/dkim/line-wrap.js';
import { wireReady } from '../src/delivery/smtp/body.js';
import { arg } from './lib.js';

const size = Number(arg('size', '102400'));
const rounds = Number(arg('rounds', '2000'));
const LINE = 'La de da de da 1. La de da de da 2. La de da de da 3. La de da de da 4.\r\n';
let text = 'From: a@example.com\r\nTo: b@example.net\r\nSubject: scan\r\n\r\n';
while (text.length < size) text += LINE;
const body = Buffer.from(text);
const wire = Buffer.concat([body, Buffer.from('.\r\n')]);
const cut = Math.min(65536, wire.length);

function time(pass: string, fn: () => unknown): void {
  for (let i = 0; i < Math.min(200, rounds); i++) fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) fn();
  const us = Number(process.hrtime.bigint() - t0) / rounds / 1000;
  console.log(`scan pass=${pass} size=${body.length} us_per_body=${us.toFixed(1)}`);
}

const read = (fastPath: boolean) => () => {
  const r = new DataReader({ fastPath });
  r.push(wire.subarray(0, cut));
  return r.push(wire.subarray(cut));
};
const wrap = (fastPath: boolean) => () => {
  const w = new LineWrapper({ fastPath });
  w.push(body.subarray(0, cut));
  w.push(body.subarray(cut));
  return w.finish();
};
time('data_reader', read(true));
time('data_reader_reference', read(false));
time('line_wrap', wrap(true));
time('line_wrap_reference', wrap(false));
time('wire_ready', () => wireReady(body));
