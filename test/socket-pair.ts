// A connected loopback TCP pair for relay tests: `restored` goes to the relay (as a restored
// client socket would), `app` plays the client application.
import net from 'node:net';

/** `unread`: `restored` reads nothing before the relay starts (as a socket adopted just now). */
export async function socketPair(unread = false): Promise<{ restored: net.Socket; app: net.Socket }> {
  const server = net.createServer(unread ? { pauseOnConnect: true } : {});
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const app = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const restored = await accepted;
  server.close();
  return { restored, app };
}
