// A restored connection handed to Node: a net.Socket over the fd, for a Node server that
// continues the conversation itself (issue 12's adopt()).
import net from 'node:net';
import type { RestoredConnection } from './tcp-repair.js';

/**
 * Wraps a restored connection's fd in a net.Socket (libuv's TCP handle; the socket owns the
 * fd from here on: destroy() closes it) and writes the send queue's pending tail first, so the
 * byte stream stays whole. Throws what `new net.Socket({ fd })` throws (e.g. EBADF).
 */
export function adoptSocket(conn: RestoredConnection): net.Socket {
  const socket = new net.Socket({ fd: conn.fd, readable: true, writable: true });
  if (conn.pending.length > 0) socket.write(conn.pending);
  return socket;
}
