// Issue 12's HTTP/1.1 case through the agent: an unmodified Node `http` server on a (the service
// address), another on b, b's agent continuing a's connections (`protocol: http`, the mirror of
// a's port on a learning bridge; HTTP/1.1 has no session, nothing to promote). Clients on c hold
// keep-alive connections (node http.Agent, one socket each), a raw connection pipelining GETs, a
// POST a never answers, a GET a answers late, and a GET that a answers and closes (Connection:
// close) while the switch has stopped delivering a's frames to c (the mirror still copies them
// to b). a dies silently: the idle connections go on against b (same socket, no error: GET,
// HEAD, chunked with a trailer, PUT), the pipelined one too, the late GET is replayed to b and
// answered by it; the closed one gets a's whole response from b's restored socket, then a's FIN
// (a clean end, no error); the POST, which a may have applied, is reset exactly (ECONNRESET)
// with the reason in b's log.
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { until } from './replication-cluster.js';

const fixture = (name: string) => fileURLToPath(new URL(`fixtures/${name}`, import.meta.url));
const PORT = 8080;
const UPSTREAM = 8081;
const KEEP_ALIVE = 20;
/** How long a takes to answer the late GET (ms): it dies first, b answers the replay. */
const LATE_MS = 2500;
/**
 * The closing GET: its body (bytes), and how long a waits before it answers and closes (ms). The
 * body fits a's initial congestion window (10 segments): a's FIN leaves right after it although
 * c acknowledges nothing (a larger body's FIN would still wait in a's kernel behind unsent bytes).
 */
const CLOSING_BYTES = 8000;
const CLOSING_MS = 600;

it('the backup\'s agent continues a silently dead HTTP server\'s keep-alive connections and finishes a closed one; a POST in flight is reset with the reason', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-http-');
  const { lab, vip } = m;
  const primary = lab.spawn('a', fixture('http-server.ts'), ['--port', String(PORT), '--name', 'a']);
  const backup = lab.spawn('b', fixture('http-server.ts'), ['--port', String(UPSTREAM), '--name', 'b', '--host', '127.0.0.1']);
  await Promise.all([primary.waitFor('ready'), backup.waitFor('ready')]);
  const { ifname } = await lab.mirrorPort('a', 'b');
  const { log: logOf } = startContinueAgents(m, PORT, { protocol: 'http', mirror: ifname, upstream: { port: UPSTREAM } });
  const log = () => logOf('b');
  await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
  // Connections opened once b's shadow captures are the ones it can continue.
  await shadowFollowing(m, 'b');
  const clients = lab.spawn('c', fixture('http-clients.ts'));
  await clients.waitFor('ready');
  const opened = await clients.request({ cmd: 'open', address: vip, port: PORT, count: KEEP_ALIVE, delayMs: LATE_MS });
  expect(opened.first).toEqual(Array.from({ length: KEEP_ALIVE }, (_, i) => `200 item ${i + 1} from a`));
  expect(opened.rawFirst).toMatch(/item 100 from a[^]*item 101 from a$/);

  // a answers the closing GET and closes while its frames no longer reach c: b's mirror sees
  // the whole response and a's FIN, c none of it (a's last moments, seen by the switch only).
  const closing = await clients.request({ cmd: 'closing', bytes: CLOSING_BYTES, delayMs: CLOSING_MS });
  await lab.cutBetween('a', 'c');
  await new Promise((r) => setTimeout(r, CLOSING_MS + 300));

  await lab.killSilently('a');
  const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
  console.log(`continue http: ${JSON.stringify(taken.continued)}`);
  expect(taken.continueError).toBeUndefined();
  expect(taken.continued).toMatchObject({ connections: KEEP_ALIVE + 3, goodbyes: 1, reset: 1 });
  expect(JSON.stringify(taken.continued.firstReset)).toMatch(/a POST request not answered: not idempotent/);
  const closed = log().find((e) => e.msg === 'continued connection' && String(e.client).endsWith(`:${closing.port}`));
  expect(closed?.goodbye).toMatch(/the server had closed its side \(FIN\)/);

  const after = await clients.request({ cmd: 'after' }, 20_000);
  after.seen.forEach((s: any, i: number) => {
    expect(s, `client ${i + 1}`).toEqual({
      lines: [`200 item ${i + 1} from b`, '200 ', `200 chunked ${i + 1} from b trailer ${i + 1}`, '204 ', `200 item ${i + 1} from b`],
      reused: true,
      ports: [opened.keepAlive[i]],
      errors: [],
    });
  });
  expect(after.raw).toMatchObject({ errors: [], closed: false });
  expect(after.raw.after).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*item 200 from b[^]*HTTP\/1\.1 200 OK\r\n[^]*item 201 from b$/);
  expect(after.lateGet).toBe('200 item 0 from b');
  expect(after.post).toBe('error ECONNRESET');
  // a's response, every byte, from b's restored socket; then a's FIN: the client's clean end.
  expect(after.closing).toEqual({ status: 200, bytes: CLOSING_BYTES, from: 'a', whole: true, ended: true });
}, 60_000);
