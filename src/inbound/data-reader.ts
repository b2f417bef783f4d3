/*
 * inbound/data-reader - the DATA phase: finds the end of the message,
 * removes dot-stuffing and normalises line ends (RFC 5321 §4.1.1.4, §4.5.2).
 *
 * Whole lines of content ended by CR LF whose next line does not start with
 * "." pass unchanged, found with memchr (indexOf) a line at a time; a chunk
 * made only of such lines (and the end) is handed on as it is, without a
 * copy. Everything else goes through a byte-by-byte state machine. A
 * differential test holds the reader to the same reader with the fast path
 * off (`{ fastPath: false }`: the plain state machine) for any input cut any
 * way.
 *
 * Invariants (the SMTP smuggling defence, tested in test/unit/data-reader):
 * - the message ends only at CR LF "." CR LF (or "." CR LF as the very first
 *   line). <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF>, <CR>.<CR> and every other
 *   bare-CR or bare-LF variant are content, never an end;
 * - every bare CR and bare LF is stored as CR LF, so what Petrel stores (and
 *   relays) has only CR LF line ends and cannot be re-interpreted downstream;
 * - a leading "." is removed only at the start of a line begun by CR LF;
 * - memory is bounded: output is produced per input chunk: the chunk itself,
 *   or a buffer the size of the chunk (grown only as bare line ends need, at
 *   most twice).
 *
 * Untrusted input: everything after the 354 reply.
 */

const CR = 13;
const LF = 10;
const DOT = 46;

/** Room kept beyond the input left: one step writes at most 3 octets. */
const SLACK = 4;

const EMPTY = Buffer.alloc(0);

/** grow - a larger output buffer holding the first `used` octets of `out`. */
function grow(out: Buffer, used: number, more: number): Buffer {
  const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, used + more));
  out.copy(bigger, 0, 0, used);
  return bigger;
}

export interface DataChunkResult {
  /** Normalised message octets from this input chunk (may be empty). */
  data: Buffer;
  /** True when the end-of-data sequence was seen. */
  done: boolean;
  /** Input octets after the end of data (pipelined commands), when done. */
  rest: Buffer;
}

export class DataReader {
  /** At the start of a line (after CR LF, or at the start of the data). */
  private lineStart = true;
  /** The previous octet was a CR not yet written. */
  private sawCR = false;
  /** 0: none; 1: a line-start "." is pending; 2: line-start "." then CR pending. */
  private dot = 0;
  /** Octets of message produced so far. */
  size = 0;
  /** false: every octet through the state machine (the reference the fast path is tested against). */
  private readonly fastPath: boolean;

  constructor(options: { fastPath?: boolean } = {}) {
    this.fastPath = options.fastPath ?? true;
  }

  /** push - consume one chunk of input. */
  push(input: Buffer): DataChunkResult {
    const n = input.length;
    // The output is made only when it must differ from the input: until then
    // it is input[0, pass) and is handed on without a copy (most chunks).
    let out: Buffer | null = null;
    let pass = 0;
    let o = 0;
    let i = 0;
    // Where the next CR and LF are (memchr, kept until passed).
    let nextCR = -2;
    let nextLF = -2;
    while (i < n) {
      if (this.fastPath && this.dot === 0 && !this.sawCR) {
        // Fast path: whole lines of content ended by CR LF pass unchanged.
        let j = i;
        for (;;) {
          if (this.lineStart) {
            if (j >= n || input[j] === DOT) break; // a line-start dot: an end or stuffing, decided below
            this.lineStart = false;
          }
          if (nextCR !== -1 && nextCR < j) nextCR = input.indexOf(CR, j);
          if (nextLF !== -1 && nextLF < j) nextLF = input.indexOf(LF, j);
          if (nextCR < 0 || nextLF !== nextCR + 1) {
            // No clean line end ahead: content up to the next CR or LF (or the end) passes; the rest is for the steps below.
            j = Math.min(nextCR < 0 ? n : nextCR, nextLF < 0 ? n : nextLF);
            break;
          }
          j = nextLF + 1;
          this.lineStart = true;
        }
        if (j > i) {
          // Until a step below changed something (it makes `out`), the output is input[0, j).
          if (out === null) pass = j;
          else {
            // Room for the whole rest of the input is kept by every step below.
            input.copy(out, o, i, j);
            o += j - i;
          }
          i = j;
          continue;
        }
        // CR LF "." CR LF (or "." CR LF first): the end, seen whole in this chunk.
        if (this.lineStart && i + 2 < n && input[i] === DOT && input[i + 1] === CR && input[i + 2] === LF) {
          const data = out === null ? input.subarray(0, pass) : out.subarray(0, o);
          this.size += data.length;
          return { data, done: true, rest: input.subarray(i + 3) };
        }
      }
      // One step below writes at most 3 octets: keep room for them and for the rest of the input.
      if (out === null) ({ out, o } = this.materialize(input, pass, n - i));
      if (out.length - o < n - i + SLACK) out = grow(out, o, n - i + SLACK);
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
    const data = out === null ? input.subarray(0, pass) : out.subarray(0, o);
    this.size += data.length;
    return { data, done: false, rest: EMPTY };
  }

  /** materialize - an output buffer holding the passed-through input[0, pass), with room for `more`. */
  private materialize(input: Buffer, pass: number, more: number): { out: Buffer; o: number } {
    const out = Buffer.allocUnsafe(pass + more + SLACK);
    input.copy(out, 0, 0, pass);
    return { out, o: pass };
  }
}
