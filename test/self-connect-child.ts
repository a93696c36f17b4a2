// Run by test/lab/self-connect.test.ts inside a network namespace whose ephemeral range is
// PORT..PORT+1 (PORT even: connect() prefers even source ports): a connect() to 127.0.0.1:PORT,
// where nobody listens, then connects to itself every time. Prints one JSON line of what each
// client of a local port did there.
import net from 'node:net';
import { NotificationServer } from '../src/events/notification-server.js';
import { subscribe, type AgentConnection } from '../src/events/subscribe.js';
import { requestProbe, tcpConnectProbe } from '../src/monitor/health-probe.js';
import { relayConnection } from '../src/net/shadow/connection-relay.js';
import { respContinue } from '../src/net/shadow/resp-continue.js';
import { greetingProbe } from '../src/reliable/greeting-probe.js';

const host = '127.0.0.1';
const port = Number(process.argv[2]);

/** Whether a server can listen on the port now (what a restarting server does). */
const canListen = () =>
  new Promise<string>((resolve) => {
    const s = net.createServer();
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.listen(port, host, () => s.close(() => resolve('listening')));
  });

const out: Record<string, unknown> = {};

// The hazard itself, with a plain connect: connected, to itself.
out.plain = await new Promise((resolve) => {
  const s = net.connect({ host, port });
  s.once('connect', () => {
    resolve(s.localPort === port && s.remotePort === port ? 'connected to itself' : `connected from ${s.localPort}`);
    s.resetAndDestroy();
  });
  s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code));
});

const signal = new AbortController().signal;
out.tcpProbe = await tcpConnectProbe(host, port)(signal).then(() => 'healthy', (e: Error) => e.message);
out.tcpProbeThenListen = await canListen();
out.requestProbe = await requestProbe(host, port, Buffer.from('PING\r\n'), (r) => r.length > 0)(signal).then(() => 'healthy', (e: Error) => e.message);
out.greetingProbe = await greetingProbe({ host, port, timeoutMs: 500 })();

// A relay to an upstream that is down: the client (a pair on fixed ports outside the range) must
// not get its own request back as the reply.
{
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(port + 10, host, () => r()));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const app = net.connect({ host, port: port + 10, localPort: port + 11 });
  const restored = await accepted;
  server.close();
  const got: Buffer[] = [];
  app.on('data', (d: Buffer) => got.push(d));
  app.on('error', () => {});
  const relay = relayConnection({ client: restored, upstream: { host, port }, preamble: { bytes: Buffer.alloc(0), replies: 0 }, replay: new Uint8Array(), replyCounter: respContinue.createReplyCounter() });
  app.write('*1\r\n$4\r\nPING\r\n');
  const end = await relay.done;
  await new Promise((r) => setTimeout(r, 50));
  out.relay = { reason: end.reason, clientGot: Buffer.concat(got).toString() };
  app.destroy();
}
out.relayThenListen = await canListen();

// A subscriber retrying an agent that is down, then the agent coming back on its port.
{
  const changes: AgentConnection[] = [];
  const ac = new AbortController();
  const reading = (async () => {
    for await (const _ of subscribe({ agents: [{ host, port }], signal: ac.signal, retryMs: 20, onAgent: (c) => changes.push(c) }));
  })();
  await new Promise((r) => setTimeout(r, 300));
  // The agent's notification listener, as the agent starts it: the subscriber's attempt holds
  // the port from its connect() until its 'connect' callback resets it (here the same event
  // loop), and the listener tries again then (LISTEN_BUSY_MS); a TIME_WAIT left by a close would
  // hold it for 60 s.
  const server = new NotificationServer({ host, port });
  out.agentRestart = await server.listen().then(() => 'listening', (e: NodeJS.ErrnoException) => e.code ?? e.message);
  const deadline = Date.now() + 3000;
  while (!changes.some((c) => c.state === 'connected') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  out.subscriber = changes.map((c) => (c.state === 'connected' ? c.state : `${c.state}: ${c.reason}`));
  ac.abort();
  await reading;
  await server.close();
}

process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
