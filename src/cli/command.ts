/*
 * cli/command - what every `petrel` command shares: the parsed command line
 * (Args, parseArgs), the CliCommand shape each command module exports, the
 * version, and loading the --config file. Commands import this module, never
 * cli/main (which imports every command through cli/registry): the import
 * graph of the CLI has no cycle.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';

export interface Args {
  command: string;
  positional: string[];
  flags: Map<string, string | true>;
}

/** Flags that take a value (everything else given as --flag is boolean). */
const VALUE_FLAGS = new Set(['config', 'queue-id', 'before', 'destination', 'state', 'sender', 'recipient', 'older-than', 'message-id', 'since', 'to', 'reason', 'limit', 'after', 'f', 'F', 'domain', 'selector', 'out']);

export function parseArgs(argv: string[]): Args {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  let command = '';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (eq > 0) flags.set(name, a.slice(eq + 1));
      else if (VALUE_FLAGS.has(name) && i + 1 < argv.length) flags.set(name, argv[++i]!);
      else flags.set(name, true);
    } else if (a === '-h') {
      flags.set('help', true);
    } else if (!command) {
      command = a;
    } else positional.push(a);
  }
  return { command, positional, flags };
}

export function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return 'unknown';
  }
}

/** A command of the `petrel` tool; each lives in its own module and is listed in cli/registry. */
export interface CliCommand {
  name: string;
  /** One line for the command list in --help. */
  summary: string;
  /** The command's own --help text. */
  help: string;
  run(args: Args, out: (s: string) => void, err: (s: string) => void): Promise<number> | number;
}

/** configFrom - load the --config file (or defaults); prints problems and returns null on error. */
export function configFrom(args: Args, err: (s: string) => void): Config | null {
  const file = args.flags.get('config');
  if (file === true) {
    err('petrel: --config needs a file name');
    return null;
  }
  try {
    return loadConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      err(e.message);
      err(`petrel: ${e.problems.length} problem(s) in ${e.file}`);
      return null;
    }
    throw e;
  }
}
