/*
 * test/helpers/dkimpy - DKIM signatures checked by an independent verifier:
 * Python's dkimpy (Debian python3-dkim; Ed25519 needs python3-nacl), run with
 * /usr/bin/python3. The public keys come from the test (dnsfunc), not DNS.
 * Also signs a message as "someone else" would (dkim.sign), for the tests of
 * a message that arrives already signed.
 */
import { spawnSync } from 'node:child_process';

const VERIFY = `
import sys, json, dkim
records = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    return records.get(n.rstrip('.'), '').encode()
d = dkim.DKIM(msg)
out = []
sigs = [v for (k, v) in d.headers if k.lower() == b'dkim-signature']
for i, v in enumerate(sigs):
    tags = dkim.util.parse_tag_value(v)
    try:
        ok = bool(d.verify(idx=i, dnsfunc=dnsfunc))
        err = ''
    except Exception as e:
        ok = False
        err = str(e)
    out.append({'d': tags.get(b'd', b'').decode(), 's': tags.get(b's', b'').decode(), 'a': tags.get(b'a', b'').decode(), 'h': tags.get(b'h', b'').decode(), 'ok': ok, 'err': err})
print(json.dumps(out))
`;

const SIGN = `
import sys, dkim
domain, selector, keyfile = sys.argv[1], sys.argv[2], sys.argv[3]
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, selector.encode(), domain.encode(), open(keyfile, 'rb').read(), canonicalize=(b'relaxed', b'relaxed'), include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
sys.stdout.buffer.write(sig + msg)
`;

export interface Verdict {
  d: string;
  s: string;
  a: string;
  h: string;
  ok: boolean;
  err: string;
}

/** dkimVerify - every DKIM-Signature of `message`, verified; `records` maps "sel._domainkey.dom" to its TXT text. */
export function dkimVerify(message: Buffer, records: Record<string, string>): Verdict[] {
  const r = spawnSync('/usr/bin/python3', ['-c', VERIFY, JSON.stringify(records)], { input: message, encoding: 'buffer', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`dkimpy failed (is python3-dkim installed?): ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as Verdict[];
}

/** dkimpySign - `message` signed by dkimpy (relaxed/relaxed) with the key in `keyFile` (PEM). */
export function dkimpySign(message: Buffer, domain: string, selector: string, keyFile: string): Buffer {
  const r = spawnSync('/usr/bin/python3', ['-c', SIGN, domain, selector, keyFile], { input: message, encoding: 'buffer', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`dkimpy sign failed: ${r.stderr.toString()}`);
  return r.stdout;
}
