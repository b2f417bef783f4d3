/*
 * cli/passwd - `petrel passwd USER`: adds or changes a submission user in
 * `[smtp] users_file` (scrypt hash; the file is rewritten atomically). The
 * password is read from the terminal without echo, or as the first line of
 * standard input when that is not a terminal (scripts). A running server
 * picks the change up on its next start or reload.
 */
import { createInterface } from 'node:readline';
import { setUser } from '../inbound/submission-users.js';
import { configFrom, type CliCommand } from './command.js';

/** readPassword - from a TTY without echo, else the first line of stdin. */
async function readPassword(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    const rl = createInterface({ input: stdin });
    for await (const line of rl) {
      rl.close();
      return line;
    }
    return '';
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  let pw = '';
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer): void => {
      for (const ch of d.toString('utf8')) {
        if (ch === '\r' || ch === '\n') {
          stdin.setRawMode(false);
          stdin.off('data', onData);
          stdin.pause();
          process.stderr.write('\n');
          return resolve(pw);
        }
        if (ch === '\u0003') {
          stdin.setRawMode(false);
          return reject(new Error('interrupted'));
        }
        if (ch === '\u007f') pw = pw.slice(0, -1);
        else pw += ch;
      }
    };
    stdin.on('data', onData);
    stdin.resume();
  });
}

export const passwdCommand: CliCommand = {
  name: 'passwd',
  summary: 'add or change a submission user (in [smtp] users_file)',
  help: `Usage: petrel passwd USER [--config FILE]

Adds USER to [smtp] users_file, or changes their password. The password is
asked for on the terminal (not echoed), or read as the first line of standard
input:   echo 's3cret' | petrel passwd alice --config petrel.toml
Passwords are stored as scrypt hashes, never in clear.
`,
  async run(args, out, err) {
    const user = args.positional[0];
    if (!user) {
      err('Usage: petrel passwd USER [--config FILE]');
      return 64;
    }
    const config = configFrom(args, err);
    if (!config) return 78;
    if (!config.smtp.users_file) {
      err('petrel passwd: [smtp] users_file is not set in the configuration');
      return 78;
    }
    const password = await readPassword(`Password for ${user}: `);
    if (password.length < 8) {
      err('petrel passwd: the password must be at least 8 characters');
      return 65;
    }
    try {
      const what = await setUser(config.smtp.users_file, user, password);
      out(`${user} ${what} in ${config.smtp.users_file}`);
      return 0;
    } catch (e) {
      err(`petrel passwd: ${(e as Error).message}`);
      return 73;
    }
  },
};
