// A TCP connect() to a local address and a port nobody listens on can connect to itself: when
// the port is in the ephemeral range (ip_local_port_range), the kernel may pick the destination
// port as the source, and the SYN meets itself (a simultaneous open, RFC 793 §3.4). About one in
// 28,000 attempts does; a loop that retries every 100 ms gets there within the hour. Such a
// socket looks connected (a TCP probe says healthy), reads back what it writes (a relay would
// answer a client with its own request), and holds the port the restarting server wants to
// bind. Closed normally it leaves a TIME_WAIT on that port for 60 s, which a server's
// SO_REUSEADDR does not get past (the TIME_WAIT did not set it); reset, it frees the port at
// once. Every connect that can reach a local port with nobody on it checks, on 'connect'.
import type net from 'node:net';

/**
 * True when `socket`, just connected, is connected to itself (same local and remote address and
 * port); it is then reset (RST, no TIME_WAIT) and destroyed: the caller treats the connect as
 * refused. False otherwise (the socket untouched).
 */
export function resetIfSelfConnected(socket: net.Socket): boolean {
  if (socket.localPort === undefined || socket.localPort !== socket.remotePort || socket.localAddress !== socket.remoteAddress) return false;
  socket.resetAndDestroy();
  return true;
}

/**
 * The error for a connect that reached itself: as Node's own for a refused connect (`code`
 * ECONNREFUSED, `syscall` connect), saying why.
 */
export function selfConnectError(host: string, port: number): NodeJS.ErrnoException {
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  return Object.assign(new Error(`connect ECONNREFUSED ${where} (connected to itself: nothing listens there)`), { code: 'ECONNREFUSED', syscall: 'connect' });
}
