// A peer whose receive window is zero: a client that never reads, and a server that filled it
// before its node died silently. Data sent into a zero window is dropped (RFC 9293 3.10.7.4), so
// a goodbye or an urgent byte can never be taken there: the backup falls back and says why.
import { describe, it, type TestContext } from 'vitest';
import type { FlowRecord } from '../../src/native.js';
import { fixturePath, type NodeChild } from '../../src/lab/node-child.js';
import { eventually } from './eventually.js';
import { buildScenario, closeFromBackup, PORT, readEnding, type Scenario } from './scenario.js';

/** A test's own scenario (a lab of its own), removed when that test ends. */
async function scenarioOf(family: 4 | 6, ctx: TestContext): Promise<Scenario> {
  const s = await buildScenario(family);
  ctx.onTestFinished(() => s.lab.destroy());
  return s;
}

/** Far more than the client's receive buffer: the rest stays in the dead server's send buffer. */
const FILL_BYTES = 8 * 1024 * 1024;

/** A client that never reads, and a server that has filled its receive window to zero. */
async function clientWithZeroWindow(sc: Scenario): Promise<{ client: NodeChild; localPort: number }> {
  const client = sc.lab.spawn('client', fixturePath('client'), ['--host', sc.serverAddress, '--port', String(PORT), '--paused']);
  const localPort = Number((await client.waitFor('connected')).localPort);
  const accepted = await sc.server.waitFor('accepted', 5000, (e) => e.remotePort === localPort);
  sc.server.send({ cmd: 'send', id: accepted.id, bytes: FILL_BYTES });
  // The backup's tracker sees the client advertise a zero window.
  await eventually(async () => {
    sc.survivor.send({ cmd: 'flows' });
    const { flows } = (await sc.survivor.waitFor('flows', 5000, (e) => (e.t as number) > Date.now() - 100)) as unknown as { flows: FlowRecord[] };
    const f = flows.find((x) => x.a.port === localPort || x.b.port === localPort);
    const peer = f && (f.a.port === localPort ? f.a : f.b);
    return peer && peer.packets > 0 && peer.window === 0 ? true : undefined;
  }, 10_000, 'the client to advertise a zero window');
  return { client, localPort };
}

// The two families run at the same time (each test has a lab of its own), each family's tests one
// after the other.
describe.concurrent.each([4, 6] as const)('IPv%s: closing for a dead server a peer whose receive window is zero', (family) => {
  it.sequential('goodbye: the tracked zero window sends a FIN instead; the client reads what it had, then EOF', async (ctx) => {
    const { expect } = ctx;
    const s = await scenarioOf(family, ctx);
    const { client } = await clientWithZeroWindow(s);
    await s.lab.killSilently('server', 'nft');
    // assumeBoundary: this server's stream is not a protocol; the window, not the boundary, is the subject.
    const { report } = await closeFromBackup(s, { method: 'goodbye:http', engine: { assumeBoundary: true } });
    expect(report.results).toHaveLength(1);
    expect(report.results[0]).toMatchObject({ ok: true, outcome: 'closed', action: 'fin', verified: true });
    expect(report.results[0]!.fallback).toMatch(/receive window is 0/);
    client.send({ cmd: 'resume' });
    const end = await readEnding(client, 10_000);
    expect(end).toMatchObject({ event: 'end' });
    expect(client.events.some((e) => typeof e.text === 'string' && e.text.includes('503'))).toBe(false);
  });

  it.sequential('goodbye to a connection the tracker never saw: the probe\'s answer shows the zero window, FIN instead', async (ctx) => {
    const { expect } = ctx;
    const s = await scenarioOf(family, ctx);
    const { client, localPort } = await clientWithZeroWindow(s);
    await s.lab.killSilently('server', 'nft');
    const clientAddress = family === 4 ? s.lab.host('client').ipv4 : s.lab.host('client').ipv6;
    const peer = family === 4 ? `${clientAddress}:${localPort}` : `[${clientAddress}]:${localPort}`;
    const { report } = await closeFromBackup(s, { method: 'goodbye:http', untracked: true, peers: [peer], engine: { assumeBoundary: true } });
    expect(report.results[0]).toMatchObject({ ok: true, outcome: 'closed', action: 'fin', seqSource: 'dup-ack' });
    expect(report.results[0]!.fallback).toMatch(/receive window is 0/);
    client.send({ cmd: 'resume' });
    expect(await readEnding(client, 10_000)).toMatchObject({ event: 'end' });
  });

  it.sequential('break: the urgent byte cannot be taken either; a RST ends the connection instead, so the client\'s next write fails', async (ctx) => {
    const { expect } = ctx;
    const s = await scenarioOf(family, ctx);
    const { client } = await clientWithZeroWindow(s);
    await s.lab.killSilently('server', 'nft');
    const { report } = await closeFromBackup(s, { method: 'break' });
    // verified: the client's kernel answered the probe after the RST with a RST of its own.
    expect(report.results[0]).toMatchObject({ ok: true, outcome: 'reset', action: 'rst', verified: true });
    expect(report.results[0]!.fallback).toMatch(/receive window is 0/);
    client.send({ cmd: 'write', data: 'more' });
    expect(await readEnding(client, 10_000)).toMatchObject({ event: 'error', code: expect.stringMatching(/^(ECONNRESET|EPIPE)$/) });
  });
});
