/*
 * log/trace - structured debug traces per subsystem (pino, JSON to stderr),
 * separate from the mail event log: these are for developers and for
 * diagnosing Petrel itself; the event log is the operator's record of mail.
 * Every line carries its subsystem (`sub`) and, where known, the session id
 * (`sid`) or queue id (`qid`).
 */
import { pino, destination, type Logger } from 'pino';

export type Trace = Logger;

let root: Logger | null = null;

export function initTrace(level: string): Logger {
  root = pino({ level, base: { pid: process.pid } }, destination({ dest: 2, sync: false }));
  return root;
}

/** trace - the logger for one subsystem ("inbound", "scheduler", "smtp", ...). */
export function trace(sub: string): Logger {
  if (!root) root = pino({ level: process.env.PETREL_TRACE ?? 'silent' }, destination({ dest: 2, sync: false }));
  return root.child({ sub });
}

export function flushTrace(): void {
  root?.flush();
}
