// A TCP port on 127.0.0.1 that was free a moment ago: the kernel's pick for a listener that is
// closed at once. For servers a test starts next (and for "nothing listens here"); another
// process may take it meanwhile, which tests accept (the kernel does not hand it out again at
// once: ephemeral ports rotate).
import net from 'node:net';

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
