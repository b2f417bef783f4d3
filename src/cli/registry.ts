/*
 * cli/registry - the list of `petrel` commands, in the order --help shows them.
 * A new command is a module exporting a CliCommand, added here.
 */
import { auditCommand } from './audit.js';
import { checkConfigCommand } from './check-config.js';
import { clusterCommand } from './cluster.js';
import { dkimCommand } from './dkim.js';
import type { CliCommand } from './command.js';
import { quarantineCommand } from './quarantine.js';
import { reloadCommand } from './reload.js';
import { queueCommand } from './queue.js';
import { sendmailCommand } from './sendmail.js';
import { startCommand } from './start.js';
import { passwdCommand } from './passwd.js';
import { trackCommand } from './track.js';
import { tlsrptCommand } from './tlsrpt.js';

export const COMMANDS: readonly CliCommand[] = [startCommand, checkConfigCommand, queueCommand, quarantineCommand, trackCommand, reloadCommand, clusterCommand, dkimCommand, tlsrptCommand, auditCommand, sendmailCommand, passwdCommand];
