/*
 * core/crlf - line-end normalisation for messages that arrive as files or on
 * standard input (pickup, sendmail): bare LF and bare CR become CR LF, the
 * form the Enqueuer stores (CONTRACT.md: "Bare CR and bare LF are stored as
 * CRLF"). Streaming: a CR at the end of one chunk is held until the next
 * chunk shows whether an LF follows.
 */

export class CrlfNormalizer {
  private pendingCR = false;

  /** push - the normalised octets for this chunk (a trailing CR is held back). */
  push(chunk: Buffer): Buffer {
    const out = Buffer.allocUnsafe(chunk.length * 2 + 2);
    let o = 0;
    let i = 0;
    if (this.pendingCR) {
      this.pendingCR = false;
      out[o++] = 13;
      out[o++] = 10;
      if (chunk[0] === 10) i = 1;
    }
    for (; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (b === 13) {
        if (i + 1 === chunk.length) {
          this.pendingCR = true;
          break;
        }
        out[o++] = 13;
        out[o++] = 10;
        if (chunk[i + 1] === 10) i++;
      } else if (b === 10) {
        out[o++] = 13;
        out[o++] = 10;
      } else out[o++] = b;
    }
    return out.subarray(0, o);
  }

  /** end - what is still held (a final bare CR becomes CR LF). */
  end(): Buffer {
    if (!this.pendingCR) return Buffer.alloc(0);
    this.pendingCR = false;
    return Buffer.from('\r\n');
  }
}

/** toCrlf - normalise a whole buffer at once. */
export function toCrlf(data: Buffer): Buffer {
  const n = new CrlfNormalizer();
  return Buffer.concat([n.push(data), n.end()]);
}
