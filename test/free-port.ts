// Ports for tests. freePort: a TCP port on 127.0.0.1 that was free a moment ago, the kernel's
// pick for a listener that is closed at once. For servers a test starts next (and for "nothing listens here"); another
// process may take it meanwhile, which tests accept (the kernel does not hand it out again at
// once: ephemeral ports rotate).
import { readFileSync } from 'node:fs';
import net from 'node:net';

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The first port of the kernel's ephemeral range (ip_local_port_range), where connect() and bind(0) pick theirs. */
const EPHEMERAL_LOW = (() => {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
})();

/**
 * A random port, with the `span` - 1 after it, for a server a test starts and starts again on
 * the same port (an agent's restart): from 20000 up to the ephemeral range, never in it. A port
 * in that range may be taken meanwhile by any connect() on the machine (EADDRINUSE at the
 * restart), or by a client retrying it: one connect() in ~28,000 gets the destination port
 * itself as its source and connects to itself. Tests running at once may pick the same one
 * (unlikely: ~12,000 to pick from).
 */
export function testPort(span = 1): number {
  return 20_000 + Math.floor(Math.random() * (EPHEMERAL_LOW - span - 20_000));
}
