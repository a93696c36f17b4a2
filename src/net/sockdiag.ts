// TCP sockets as the kernel sees them (sock_diag), and which process fd owns which socket.
// Everything here sees only the caller's network namespace: to look at a process in another
// namespace, run inside that namespace (e.g. `ip netns exec`). The *Async forms do the work on
// libuv workers: the agent uses them, because its event loop also sends heartbeats.
import { readdirSync, readlinkSync } from 'node:fs';
import util from 'node:util';
import { Slices } from '../event-loop.js';
import { native, type DiagSocket, type DiagSocketId, type NativeError, type RawSockets } from '../native.js';

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
export const TCP_CLOSE_WAIT = 8;
export const TCP_LISTEN = 10;

/** The states of a connection whose peer may still be waiting on it: established, or half-closed by the peer. */
export const CONNECTED_STATES = [TCP_ESTABLISHED, TCP_CLOSE_WAIT] as const;

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

export interface AsyncListOptions extends ListOptions {
  /** Only sockets in these states (numbers as in TCP_STATE_NAMES); default: every state. */
  states?: readonly number[];
  /** Only sockets with one of these local ports. */
  localPorts?: readonly number[];
}

/** listTcpSockets on a libuv worker, filtered by state in the kernel and by local port before JS sees it. */
export async function listTcpSocketsAsync(options: AsyncListOptions = {}): Promise<DiagSocket[]> {
  const family = options.family ?? 'all';
  const filter = {
    ...(options.states ? { states: options.states.reduce((m, s) => m | (1 << s), 0) } : {}),
    ...(options.localPorts ? { localPorts: [...options.localPorts] } : {}),
  };
  if (options.localPorts?.length === 0) return [];
  const families: Array<4 | 6> = family === 'all' ? [4, 6] : [family];
  const out: DiagSocket[] = [];
  for (const raw of await Promise.all(families.map((f) => native.tcpSocketsAsync(f, filter)))) out.push(...(await decodeSockets(raw)));
  return out;
}

const SOCKET_FIELDS = 11;

/**
 * DiagSocket objects from the addon's flat dump (built here, far cheaper than through
 * Node-API), in slices: ten thousand sockets would hold the event loop ~10 ms.
 */
async function decodeSockets(raw: RawSockets): Promise<DiagSocket[]> {
  const out: DiagSocket[] = new Array(raw.count);
  const n = raw.numbers;
  const slices = new Slices();
  for (let i = 0; i < raw.count; i++) {
    if ((i & 255) === 0 && slices.due) await slices.next();
    const o = i * SOCKET_FIELDS;
    out[i] = {
      family: n[o] as 4 | 6,
      state: n[o + 1]!,
      src: raw.addresses[2 * i]!,
      sport: n[o + 2]!,
      dst: raw.addresses[2 * i + 1]!,
      dport: n[o + 3]!,
      ifindex: n[o + 4]!,
      inode: n[o + 5]!,
      uid: n[o + 6]!,
      // The kernel's 64-bit cookie, low word first (as tcpSockets reports it: decimal text).
      cookie: n[o + 8] === 0 ? String(n[o + 7]) : (BigInt(n[o + 7]!) | (BigInt(n[o + 8]!) << 32n)).toString(),
      rqueue: n[o + 9]!,
      wqueue: n[o + 10]!,
    };
  }
  return out;
}

/** Sockets per SOCK_DESTROY batch: arguments are converted on the event loop, so keep each call short. */
const DESTROY_BATCH = 256;

/**
 * SOCK_DESTROY of each socket on a libuv worker; per socket, in order, undefined (reset) or the
 * error (code ENOENT: gone already). A transport failure rejects for the whole batch.
 */
export async function destroySockets(sockets: readonly DiagSocketId[]): Promise<Array<NativeError | undefined>> {
  const out: Array<NativeError | undefined> = [];
  for (let i = 0; i < sockets.length; i += DESTROY_BATCH) {
    const errnos = await native.destroySocketsAsync(sockets.slice(i, i + DESTROY_BATCH));
    for (const e of errnos) out.push(e === 0 ? undefined : errnoError(e, 'sock_destroy'));
  }
  return out;
}

/** One process fd that holds the socket. */
export interface SocketHolder {
  pid: number;
  fd: number;
}

/**
 * Socket inode -> one process fd holding it, read from /proc on a libuv worker: over every
 * process, or only `pid` (rejects with code ENOENT when it is gone); only `inodes` when given.
 */
export async function socketOwners(options: { inodes?: readonly number[]; pid?: number } = {}): Promise<Map<number, SocketHolder>> {
  const triples = await native.socketOwnersAsync(options.inodes ? [...options.inodes] : undefined, options.pid);
  const owners = new Map<number, SocketHolder>();
  for (let i = 0; i + 2 < triples.length; i += 3) owners.set(triples[i]!, { pid: triples[i + 1]!, fd: triples[i + 2]! });
  return owners;
}

/** A NativeError, shaped as the addon's own, for an errno the addon returned as a number. */
function errnoError(errno: number, syscall: string): NativeError {
  const [code, description] = util.getSystemErrorMap().get(-errno) ?? [`E${errno}`, 'unknown error'];
  return Object.assign(new Error(`${code}: ${description}, ${syscall}`), { code, errno: -errno, syscall });
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
