/*
 * cli/sendmail-args - the command line of `petrel sendmail`, read the way the
 * sendmail(8) interface that applications call defines it (as Sendmail and
 * Postfix accept it): getopt-style options first, then recipients.
 *
 * Options that mean something: -t, -i / -oi, -f / -r SENDER, -F NAME,
 * -C FILE (= --config), -v, -bm (the default), -bi / -I (newaliases: nothing
 * to do, aliases are re-read when the file changes).
 * Accepted and ignored (harmless, common in scripts): -odX (delivery mode),
 * -oeX (error mode), -om, -oo and any other -oX, -B TYPE, -N DSN, -R RET,
 * -V ENVID, -L LABEL, -A X, -U, -m, -n, -x, -G, -c, -e X, -p PROTO.
 * Anything else, another -b mode, a missing option argument or an option
 * after the first recipient is a usage error (EX_USAGE).
 *
 * Untrusted input: argv (pure parsing; addresses are checked by the caller).
 */

export interface SendmailArgs {
  /** -t: recipients from To, Cc and Bcc (added to those given as arguments). */
  extract: boolean;
  /** -i / -oi: a line with a single "." does not end the message. */
  ignoreDots: boolean;
  /** -f / -r: the envelope sender as given ("" or "<>" for the null sender). */
  sender: string | null;
  /** -F: the full name for a From: header Petrel adds. */
  fullName: string | null;
  /** -C: the configuration file. */
  config: string | null;
  verbose: boolean;
  /** -bi / -I: rebuild aliases (nothing to do). */
  newAliases: boolean;
  recipients: string[];
  /** Options that were accepted and ignored (for -v). */
  ignored: string[];
}

/** Options that take an argument (attached, "-fme@x", or as the next word). */
const WITH_ARG = new Set(['A', 'B', 'C', 'F', 'L', 'N', 'O', 'R', 'V', 'X', 'b', 'e', 'f', 'h', 'o', 'p', 'q', 'r']);
/** Single-letter flags: meaningful or ignored. */
const FLAGS = new Set(['G', 'I', 'U', 'c', 'i', 'm', 'n', 't', 'v', 'x']);
const IGNORED_WITH_ARG = new Set(['A', 'B', 'L', 'N', 'R', 'V', 'e', 'p']);

export function parseSendmailArgs(argv: readonly string[]): SendmailArgs | { error: string } {
  const a: SendmailArgs = { extract: false, ignoreDots: false, sender: null, fullName: null, config: null, verbose: false, newAliases: false, recipients: [], ignored: [] };
  let i = 0;
  let dashdash = false;
  for (; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') {
      i++;
      dashdash = true;
      break;
    }
    if (!word.startsWith('-') || word === '-') break;
    // getopt: a cluster of flags ("-ti"), ending with at most one option that takes an argument.
    for (let j = 1; j < word.length; j++) {
      const c = word[j]!;
      if (FLAGS.has(c)) {
        if (c === 't') a.extract = true;
        else if (c === 'i') a.ignoreDots = true;
        else if (c === 'v') a.verbose = true;
        else if (c === 'I') a.newAliases = true;
        else a.ignored.push(`-${c}`);
        continue;
      }
      if (!WITH_ARG.has(c)) return { error: `unknown option -${c}` };
      let value = word.slice(j + 1);
      if (value === '') {
        if (i + 1 >= argv.length) return { error: `option -${c} needs a value` };
        value = argv[++i]!;
      }
      const r = option(a, c, value);
      if (r) return { error: r };
      break;
    }
  }
  for (; i < argv.length; i++) {
    const word = argv[i]!;
    if (!dashdash && word.startsWith('-') && word !== '-') return { error: `option ${word} after the recipients (options come first)` };
    a.recipients.push(word);
  }
  return a;
}

function option(a: SendmailArgs, c: string, value: string): string | null {
  switch (c) {
    case 'f':
    case 'r':
      a.sender = value;
      return null;
    case 'F':
      a.fullName = value;
      return null;
    case 'C':
      a.config = value;
      return null;
    case 'o':
      if (value === 'i') a.ignoreDots = true;
      else a.ignored.push(`-o${value}`);
      return null;
    case 'b':
      if (value === 'm') return null;
      if (value === 'i') {
        a.newAliases = true;
        return null;
      }
      return `-b${value} is not supported (only -bm, the default, and -bi)`;
    default:
      if (IGNORED_WITH_ARG.has(c)) {
        a.ignored.push(`-${c} ${value}`);
        return null;
      }
      return `-${c} is not supported`;
  }
}
