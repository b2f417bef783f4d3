/*
 * cli/check-config - `petrel check-config FILE`: validates a configuration
 * file and prints every problem as FILE:LINE: KEY: message (exit 1), or a
 * short summary of what the file configures (exit 0).
 */
import { ConfigError, formatProblem, loadConfig } from '../config/load.js';
import type { CliCommand } from './command.js';

export const checkConfigCommand: CliCommand = {
  name: 'check-config',
  summary: 'check a configuration file; print every error with its key and line',
  help: `Usage: petrel check-config FILE   (or: petrel check-config --config FILE)

Checks FILE and prints every problem as FILE:LINE: KEY: what is wrong.
Exit 0 when the file is valid, 1 when it is not.
`,
  run(args, out, err) {
    const file = args.positional[0] ?? args.flags.get('config');
    if (typeof file !== 'string') {
      err('Usage: petrel check-config FILE');
      return 64;
    }
    try {
      const c = loadConfig(file);
      out(`${file}: OK`);
      out(`  hostname ${c.hostname}; data_dir ${c.data_dir}`);
      out(`  smtp listen ${c.smtp.listen.map((e) => `${e.host}:${e.port}`).join(', ') || '(none)'}`);
      out(`  local domains ${c.local.domains.join(', ') || '(none)'} -> ${c.local.maildir}`);
      out(`  ${c.routes.length} route(s); smarthost ${c.delivery.smarthost ? `${c.delivery.smarthost.host}:${c.delivery.smarthost.port}` : '(none: MX)'}`);
      return 0;
    } catch (e) {
      if (e instanceof ConfigError) {
        for (const p of e.problems) err(formatProblem(e.file, p));
        err(`${e.problems.length} problem(s) in ${e.file}`);
        return 1;
      }
      throw e;
    }
  },
};
