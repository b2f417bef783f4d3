/*
 * dkim/sign-worker - a signing thread (node:worker_threads): takes a message
 * as chunks from dkim/signer and answers its DKIM-Signature fields, so that
 * the hashing and the RSA or Ed25519 operation (RSA-2048 1.0-1.4 ms of CPU
 * a message, Ed25519 0.2-0.6 ms, measured) never run on the thread that
 * answers SMTP.
 *
 * Messages from the parent: { id, keys?: number[], data?: ArrayBuffer, end }
 * (keys on the first message of an id: indexes into workerData.keys). Answers:
 * { id, ack } after each chunk without end, { id, fields } or { id, error }
 * at the end.
 *
 * Untrusted input: the message octets (dkim/sign-core).
 */
import { createPrivateKey } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { MessageSigner, type SigningKey } from './sign-core.js';

interface KeyData {
  domain: string;
  selector: string;
  algorithm: SigningKey['algorithm'];
  pem: string;
}

const keys: SigningKey[] = (workerData as { keys: KeyData[] }).keys.map((k) => ({
  domain: k.domain,
  selector: k.selector,
  algorithm: k.algorithm,
  privateKey: createPrivateKey({ key: k.pem, format: 'pem' }),
}));

const open = new Map<number, MessageSigner>();

parentPort!.on('message', (m: { id: number; keys?: number[]; data?: ArrayBuffer; end: boolean }) => {
  try {
    let signer = open.get(m.id);
    if (!signer) {
      signer = new MessageSigner((m.keys ?? []).map((i) => keys[i]!));
      open.set(m.id, signer);
    }
    if (m.data) signer.update(Buffer.from(m.data));
    if (!m.end) return parentPort!.postMessage({ id: m.id, ack: true });
    open.delete(m.id);
    parentPort!.postMessage({ id: m.id, fields: signer.finish() });
  } catch (e) {
    open.delete(m.id);
    parentPort!.postMessage({ id: m.id, error: (e as Error).message });
  }
});
