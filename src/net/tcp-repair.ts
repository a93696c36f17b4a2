// Dump and restore of established TCP connections with TCP_REPAIR, over the addon
// (native/tcp_repair.cc). The state is typed and checked in tcp-repair-state.ts; this file only
// moves it in and out of the kernel. Needs CAP_NET_ADMIN.
//
// A consistent dump needs the connection's traffic stopped first (a drop filter, as CRIU's
// network lock): repair mode itself does not stop the kernel from receiving, and a queue that
// changes while it is read fails the dump (EAGAIN, syscall 'recv').
import { native, type NativeError, type TcpInfoSummary } from '../native.js';
import { checkTcpRepairState, fromNative, toNative, type TcpRepairState } from './tcp-repair-state.js';

export interface DumpOptions {
  /**
   * true: the socket stays in repair mode after the dump; it sends nothing more (no ACK, no
   * retransmission, no window update) and closing it sends neither FIN nor RST: the source
   * of a migration. false: repair mode is left without a window probe; the connection goes on.
   */
  leaveInRepair: boolean;
}

/**
 * Dumps the connection on `fd` (an ESTABLISHED TCP socket). Throws a NativeError: EINVAL for a
 * listening socket and ENOTCONN for any other state (syscall 'getsockopt'), ENOTSOCK /
 * EOPNOTSUPP for what is not a TCP socket, EPERM without CAP_NET_ADMIN, EAGAIN (syscall 'recv')
 * when a queue changed during the dump. On any error the socket is out of repair mode.
 * The connection must be quiet: its peer's segments stopped (its host silenced, or dropped by a
 * firewall rule, as CRIU locks the network) from before the dump until the restored socket is in
 * place; an ACK taken in the middle of a dump makes SND.NXT and the queue disagree, and the
 * restored connection stalls (docs/TCP-REPAIR.md).
 */
export function dumpConnection(fd: number, options: DumpOptions): TcpRepairState {
  return fromNative(native.tcpRepairDump(fd, options.leaveInRepair));
}

export interface RestoreOptions {
  /**
   * The local address need not be on this host yet (IP_TRANSPARENT / IPV6_TRANSPARENT:
   * IP_FREEBIND alone lets bind pass but connect fails with ENETUNREACH). Segments reach the
   * socket once the address is added. Without it such a restore fails with EADDRNOTAVAIL
   * (syscall 'bind').
   */
  transparent?: boolean;
}

/** A restored connection: a new socket fd (non-blocking, close-on-exec), ours to close or adopt. */
export interface RestoredConnection {
  fd: number;
  /**
   * The tail of the send queue the kernel did not take after repair off (its send buffer was
   * full); whoever adopts the socket writes it first. Usually empty.
   */
  pending: Buffer;
  /** Time the restore took in the addon, µs. */
  durationUs: number;
}

function restored(state: TcpRepairState, r: { fd: number; pending: number; durationUs: number }): RestoredConnection {
  const q = state.send.queue;
  return { fd: r.fd, pending: q.subarray(q.length - r.pending), durationUs: r.durationUs };
}

/**
 * Rebuilds one connection on a new socket, on the calling thread (~20 syscalls plus the
 * queues' copy). The state is checked first (TcpRepairStateError, nothing touched). Throws the
 * failing syscall's NativeError (e.g. EADDRNOTAVAIL 'bind', EADDRINUSE 'bind', EINVAL
 * 'setsockopt' with the option in the message); no socket is left behind, and none sent anything.
 * The order of operations follows CRIU's libsoccr; see native/tcp_repair.cc.
 */
export function restoreConnection(state: TcpRepairState, options: RestoreOptions = {}): RestoredConnection {
  checkTcpRepairState(state);
  return restored(state, native.tcpRepairRestore({ ...toNative(state), transparent: options.transparent ?? false }));
}

export type RestoreOutcome = ({ ok: true } & RestoredConnection) | { ok: false; error: NativeError; durationUs: number };

/**
 * Rebuilds many connections one after another on a libuv worker: the event loop stays free
 * however many there are. Every state is checked before any is restored (one bad state rejects
 * the call, nothing touched). One outcome per state, in order; a failed one has no socket.
 */
export async function restoreConnections(states: readonly TcpRepairState[], options: RestoreOptions = {}): Promise<RestoreOutcome[]> {
  states.forEach((s) => checkTcpRepairState(s));
  const transparent = options.transparent ?? false;
  const results = await native.tcpRepairRestoreAsync(states.map((s) => ({ ...toNative(s), transparent })));
  return results.map((r, i) => ('fd' in r ? { ok: true as const, ...restored(states[i]!, r) } : { ok: false as const, error: r.error, durationUs: r.durationUs }));
}

/** TCP_INFO of a socket: state, negotiated options (TCPI_OPT_*), wscale both ways, MSS, RTT. */
export function tcpInfo(fd: number): TcpInfoSummary {
  return native.tcpInfoOf(fd);
}
