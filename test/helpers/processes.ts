/*
 * test/helpers/processes - which processes a test's Petrel is made of, from
 * /proc (Linux): the children of a process, and the process that holds one
 * end of a TCP connection on loopback (which inbound worker took it).
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/** childPids - the live children of `ppid` (zombies excluded). */
export function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      // Fields after the command name (which may hold spaces) in parentheses: state, ppid, ...
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === ppid && rest[0] !== 'Z') out.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return out.sort((a, b) => a - b);
}

/** alive - the process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const hexEndpoint = (port: number): string => `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;

/** socketInode - the inode of the loopback TCP socket local:port <-> remote (remote "00000000:0000" and state 0A for a listener). */
function socketInode(local: string, remote: string): string {
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[2] === remote && f[9] && f[9] !== '0') return f[9];
  }
  return '';
}

/** holds - whether process `pid` has the socket with this inode open. */
function holds(pid: number, inode: string): boolean {
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  for (const fd of fds) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return true;
    } catch {
      // Closed meanwhile.
    }
  }
  return false;
}

/** listensOn - process `pid` holds the socket listening on 127.0.0.1:port (an inbound worker that has started listening). */
export function listensOn(pid: number, port: number): boolean {
  const inode = socketInode(hexEndpoint(port), '00000000:0000');
  return inode !== '' && holds(pid, inode);
}

/**
 * holderOf - which of `pids` holds the server end of the loopback connection
 * from client port `clientPort` to server port `serverPort`; null if none.
 */
export function holderOf(serverPort: number, clientPort: number, pids: readonly number[]): number | null {
  const inode = socketInode(hexEndpoint(serverPort), hexEndpoint(clientPort));
  if (!inode) return null;
  return pids.find((pid) => holds(pid, inode)) ?? null;
}

/** clientOf - which of `pids` holds the client end of the loopback connection from `clientPort` to server port `serverPort`; null if none. */
export function clientOf(serverPort: number, clientPort: number, pids: readonly number[]): number | null {
  const inode = socketInode(hexEndpoint(clientPort), hexEndpoint(serverPort));
  if (!inode) return null;
  return pids.find((pid) => holds(pid, inode)) ?? null;
}
