// test/helpers/reference-data-reader - the DATA reader as it was before its
// fast path (a line-end state machine with per-line copies), kept as the
// reference a differential test compares inbound/data-reader against: same
// output, same end, same rest, for any input cut any way.
import type { DataChunkResult } from '../../src/inbound/data-reader.js';

const CR = 13;
const LF = 10;
const DOT = 46;

export class ReferenceDataReader {
  /** At the start of a line (after CR LF, or at the start of the data). */
  private lineStart = true;
  /** The previous octet was a CR not yet written. */
  private sawCR = false;
  /** 0: none; 1: a line-start "." is pending; 2: line-start "." then CR pending. */
  private dot = 0;
  /** Octets of message produced so far. */
  size = 0;

  /** push - consume one chunk of input. */
  push(input: Buffer): DataChunkResult {
    const n = input.length;
    const out: Buffer = Buffer.allocUnsafe(2 * n + 4);
    let o = 0;
    let i = 0;
    // Where the next CR and LF are (memchr, kept until passed): the octets
    // between are copied in one go instead of one at a time.
    let nextCR = -2;
    let nextLF = -2;
    while (i < n) {
      if (this.dot === 0 && !this.sawCR && !this.lineStart) {
        if (nextCR !== -1 && nextCR < i) nextCR = input.indexOf(CR, i);
        if (nextLF !== -1 && nextLF < i) nextLF = input.indexOf(LF, i);
        const stop = Math.min(nextCR < 0 ? n : nextCR, nextLF < 0 ? n : nextLF);
        if (stop > i) {
          input.copy(out, o, i, stop);
          o += stop - i;
          i = stop;
          continue;
        }
      }
      const b = input[i]!;
      if (this.dot === 1) {
        if (b === CR) {
          this.dot = 2;
          i++;
          continue;
        }
        this.dot = 0;
        if (b === LF) {
          // "." then a bare LF: a line holding one dot, not an end; and like
          // every bare LF it does not begin a line where "." may end the data
          // (else CR LF "." LF "." CR LF would end it).
          out[o++] = DOT;
          out[o++] = CR;
          out[o++] = LF;
          this.lineStart = false;
          i++;
          continue;
        }
        // The stuffed dot is dropped; b is the line's first octet (handled below).
        this.lineStart = false;
      } else if (this.dot === 2) {
        this.dot = 0;
        if (b === LF) {
          // CR LF "." CR LF: the end.
          i++;
          this.size += o;
          return { data: out.subarray(0, o), done: true, rest: input.subarray(i) };
        }
        // "." then a bare CR: a line holding one dot, ended by the (normalised) CR.
        out[o++] = DOT;
        out[o++] = CR;
        out[o++] = LF;
        this.lineStart = false; // a bare CR does not begin a line where "." may end the data
        continue; // reprocess b
      } else if (this.sawCR) {
        this.sawCR = false;
        out[o++] = CR;
        out[o++] = LF;
        if (b === LF) {
          this.lineStart = true;
          i++;
          continue;
        }
        // Bare CR: stored as CR LF, but it does not start a line for dot purposes.
        this.lineStart = false;
        continue; // reprocess b
      }
      if (b === CR) {
        this.sawCR = true;
      } else if (b === LF) {
        // Bare LF: stored as CR LF; not a line start for dot purposes.
        out[o++] = CR;
        out[o++] = LF;
        this.lineStart = false;
      } else if (b === DOT && this.lineStart) {
        this.dot = 1;
      } else {
        out[o++] = b;
        this.lineStart = false;
      }
      i++;
    }
    this.size += o;
    return { data: out.subarray(0, o), done: false, rest: Buffer.alloc(0) };
  }
}
