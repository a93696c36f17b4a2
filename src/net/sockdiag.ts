// TCP sockets as the kernel sees them (sock_diag), and which process fd owns which socket.
// Everything here sees only the caller's network namespace: to look at a process in another
// namespace, run inside that namespace (e.g. `ip netns exec`).
import { readdirSync, readlinkSync } from 'node:fs';
import { native, type DiagSocket, type DiagSocketId } from '../native.js';

export type { DiagSocket, DiagSocketId };

/** TCP states by number, as in the kernel's include/net/tcp_states.h. */
export const TCP_STATE_NAMES: Readonly<Record<number, string>> = Object.freeze({
  1: 'ESTABLISHED',
  2: 'SYN_SENT',
  3: 'SYN_RECV',
  4: 'FIN_WAIT1',
  5: 'FIN_WAIT2',
  6: 'TIME_WAIT',
  7: 'CLOSE',
  8: 'CLOSE_WAIT',
  9: 'LAST_ACK',
  10: 'LISTEN',
  11: 'CLOSING',
  12: 'NEW_SYN_RECV',
});

export const TCP_ESTABLISHED = 1;
export const TCP_LISTEN = 10;

/** 'ESTABLISHED' for 1 and so on; 'UNKNOWN(n)' for a number the table does not know. */
export function tcpStateName(state: number): string {
  return TCP_STATE_NAMES[state] ?? `UNKNOWN(${state})`;
}

export interface ListOptions {
  /** Which address family's sockets; default 'all'. IPv4 peers of a dual-stack (::) socket
   *  are family 6 with ::ffff:a.b.c.d addresses, because that is the socket's family. */
  family?: 4 | 6 | 'all';
}

/** Every TCP socket of this network namespace, in any state. */
export function listTcpSockets(options: ListOptions = {}): DiagSocket[] {
  const family = options.family ?? 'all';
  if (family === 'all') return [...native.tcpSockets(4), ...native.tcpSockets(6)];
  return native.tcpSockets(family);
}

export interface OwnedSocket {
  /** The fd number in the owning process. */
  fd: number;
  socket: DiagSocket;
}

const SOCKET_LINK = /^socket:\[(\d+)\]$/;

/**
 * Socket inodes of a process, by fd number, read from /proc/PID/fd. Fds that close while
 * we read are skipped; a process that is gone (or not visible) throws the fs error.
 */
export function socketInodesOfPid(pid: number): Map<number, number> {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`pid must be a positive integer: ${pid}`);
  const dir = `/proc/${pid}/fd`;
  const inodes = new Map<number, number>();
  for (const name of readdirSync(dir)) {
    let target: string;
    try {
      target = readlinkSync(`${dir}/${name}`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const m = SOCKET_LINK.exec(target);
    if (m) inodes.set(Number(name), Number(m[1]));
  }
  return inodes;
}

/**
 * The TCP sockets a process holds, one entry per fd (a dup'ed socket appears once per fd),
 * sorted by fd. Listeners are included; sockets of other protocols are not.
 */
export function socketsOfPid(pid: number): OwnedSocket[] {
  const fdsByInode = new Map<number, number[]>();
  for (const [fd, inode] of socketInodesOfPid(pid)) {
    const fds = fdsByInode.get(inode);
    if (fds) fds.push(fd);
    else fdsByInode.set(inode, [fd]);
  }
  const owned: OwnedSocket[] = [];
  for (const socket of listTcpSockets()) {
    for (const fd of fdsByInode.get(socket.inode) ?? []) owned.push({ fd, socket });
  }
  return owned.sort((a, b) => a.fd - b.fd);
}

/**
 * Resets one socket (SOCK_DESTROY): the peer gets a RST, the owner ECONNABORTED. Throws a
 * NativeError with code ENOENT when no socket has that 4-tuple and cookie any more.
 */
export function destroySocket(sock: DiagSocketId): void {
  native.destroySocket(sock);
}
