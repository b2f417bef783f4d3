/*
 * cli/main - the `petrel` command: parses the command line and runs one
 * command. Every command takes `--config FILE` anywhere after its name and
 * `--help`; commands that print data take `--json`.
 *
 * Exit codes follow sysexits where they exist: 0 ok, 1 a check failed (bad
 * configuration, audit exceptions), 64 usage error, 69 unavailable, 70
 * internal error, 75 temporary failure (sendmail), 78 configuration error at
 * start-up, 141 output cut short (see below).
 *
 * Output cut short: a reader that stops early (`petrel queue list | head -1`,
 * `less` quit) closes the pipe and the next write fails with EPIPE. Unix tools
 * end quietly then (killed by SIGPIPE, status 128 + 13); so does every petrel
 * command: exit 141 at once, nothing on stderr. Two commands instead drop the
 * rest of their output and carry on, because what they do must not depend on
 * whether anyone reads what they print: `start` (the server keeps serving) and
 * `sendmail` (the message is still queued, and its exit code still says so).
 * This is handled once, here, for both standard output and standard error.
 */
import { COMMANDS } from './registry.js';
import { parseArgs, version, type CliCommand } from './command.js';

export function helpText(commands: readonly CliCommand[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return `petrel ${version()} - a mail transfer agent that never loses, strands or wrongly bounces mail

Usage: petrel <command> [--config FILE] [options]

Commands:
${commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`).join('\n')}

Options for every command:
  --config FILE   configuration file (TOML); without it every default applies
  --help, -h      help for the command (also: petrel help <command>)
  --version       print the version

With no configuration Petrel listens for SMTP on 127.0.0.1:2525, keeps its
queue in ./var, delivers mail for "localhost" to Maildir under ./var/mail and
sends other mail to the domains' MX hosts. See README.md and docs/.
`;
}

/** Commands whose work must go on when nobody reads their output any more (see the header). */
const OUTPUT_MAY_CLOSE = new Set(['start', 'sendmail']);

/** EPIPE exit status: what a shell reports for a process killed by SIGPIPE (128 + 13). */
export const EXIT_OUTPUT_CLOSED = 141;

/**
 * onClosedOutput - what to do when the reader of stdout or stderr goes away:
 * 'exit' ends the process quietly with status 141; 'drop' discards the rest of
 * that stream's output (a destroyed stream ignores later writes). Any other
 * write error stays an error (rethrown: an uncaught exception, as before).
 */
export function onClosedOutput(streams: readonly NodeJS.WriteStream[], action: 'exit' | 'drop'): void {
  for (const stream of streams) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
      if (action === 'exit') process.exit(EXIT_OUTPUT_CLOSED);
      stream.destroy();
    });
  }
}

/** run - run one command line; resolves with the exit code. */
export async function run(argv: string[], out = (s: string) => process.stdout.write(s + '\n'), err = (s: string) => process.stderr.write(s + '\n')): Promise<number> {
  const args = parseArgs(argv);
  onClosedOutput([process.stdout, process.stderr], OUTPUT_MAY_CLOSE.has(args.command) ? 'drop' : 'exit');
  if (args.flags.has('version') && !args.command) {
    out(version());
    return 0;
  }
  const find = (name: string | undefined): CliCommand | undefined => COMMANDS.find((c) => c.name === name);
  if (!args.command || args.command === 'help') {
    const topic = find(args.positional[0]);
    out(topic ? topic.help : helpText(COMMANDS));
    if (args.command || args.flags.has('help')) return 0;
    err('petrel: a command is needed (see above)');
    return 64;
  }
  const cmd = find(args.command);
  if (!cmd) {
    err(`petrel: unknown command "${args.command}"; see petrel --help`);
    return 64;
  }
  if (args.flags.has('help')) {
    out(cmd.help);
    return 0;
  }
  try {
    return await cmd.run(args, out, err);
  } catch (e) {
    err(`petrel ${args.command}: ${(e as Error).stack ?? String(e)}`);
    return 70;
  }
}
