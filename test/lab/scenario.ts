// The silent-node-death scenario shared by the lab tests: a client host, a server host, and a
// backup on a switch (a learning bridge) that tracks the server's flows on a port mirror of the
// server's port (Lab.mirrorPort: its mir0) and speaks for the server once its node has died: the
// address taken over, the forged segments sent and the peers' answers heard on its eth0.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, nowMs, type NodeChild, type LabEvent } from '../../src/lab/node-child.js';
import type { RemoteCloseReport } from '../../src/net/close-remote.js';

export const PORT = 7000;
const here = path.dirname(fileURLToPath(import.meta.url));
export const OOB_CLIENT = path.join(here, 'fixtures', 'oob-client.py');

export interface Scenario {
  lab: Lab;
  family: 4 | 6;
  serverAddress: string;
  server: NodeChild;
  survivor: NodeChild;
}

export async function buildScenario(family: 4 | 6, survivorArgs: string[] = []): Promise<Scenario> {
  const lab = await Lab.create({ hosts: ['client', 'server', 'backup'] });
  try {
    const { ifname: mirror } = await lab.mirrorPort('server', 'backup');
    const serverAddress = family === 4 ? lab.host('server').ipv4 : lab.host('server').ipv6;
    const server = lab.spawn('server', fixturePath('server'), ['--port', String(PORT), '--report-data']);
    await server.waitFor('listening');
    const survivor = lab.spawn('backup', fixturePath('survivor'), ['--interface', 'eth0', '--capture', mirror, '--address', serverAddress, '--port', String(PORT), ...survivorArgs]);
    await survivor.waitFor('tracking');
    return { lab, family, serverAddress, server, survivor };
  } catch (err) {
    await lab.destroy();
    throw err;
  }
}

/** A Node client that sent a request the server read (acked), now waiting for a reply. */
export async function idleReader(s: Scenario, request = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'): Promise<NodeChild> {
  const c = s.lab.spawn('client', fixturePath('client'), ['--host', s.serverAddress, '--port', String(PORT), '--request', request]);
  const { localPort } = await c.waitFor('connected');
  await s.server.waitFor('data', 5000, (e) => e.received === Buffer.byteLength(request) && connectionOf(s, e, Number(localPort)));
  return c;
}

function connectionOf(s: Scenario, e: LabEvent, port: number): boolean {
  const acc = s.server.events.find((a) => a.event === 'accepted' && a.id === e.id);
  return acc?.remotePort === port;
}

/** A connected Node client that has sent nothing yet (it writes after the death: unacked data). */
export async function quietClient(s: Scenario): Promise<NodeChild> {
  const c = s.lab.spawn('client', fixturePath('client'), ['--host', s.serverAddress, '--port', String(PORT)]);
  const { localPort } = await c.waitFor('connected');
  await s.server.waitFor('accepted', 5000, (e) => e.remotePort === localPort);
  return c;
}

/**
 * Writes a request the dead server will never acknowledge, once the node is dead. Returns when
 * the write was asked for (ms, the lab's clock): the segment left after it, so its first
 * retransmission cannot leave before this + TCP_RTO_MIN (200 ms).
 */
export async function writeUnacked(c: NodeChild, data = 'GET /late HTTP/1.1\r\nHost: x\r\n\r\n'): Promise<number> {
  const askedAt = nowMs();
  c.send({ cmd: 'write', data });
  await c.waitFor('written');
  return askedAt;
}

export async function closeFromBackup(s: Scenario, command: Record<string, unknown>): Promise<{ decidedAt: number; report: RemoteCloseReport }> {
  s.survivor.send({ cmd: 'close', takeover: true, prefixLength: s.family === 4 ? 24 : 64, ...command });
  const e = await s.survivor.waitFor('closed', 20_000);
  return { decidedAt: Number(e.decidedAt), report: e.report as RemoteCloseReport };
}

/** The first terminal event of a client's read: error, end, or urgent data. */
export function readEnding(c: NodeChild, timeoutMs = 5000): Promise<LabEvent> {
  return Promise.any([c.waitFor('error', timeoutMs), c.waitFor('end', timeoutMs), c.waitFor('urgent', timeoutMs)]).catch(() => {
    throw new Error(`client ${c.pid} still blocked after ${timeoutMs} ms: ${JSON.stringify(c.events)} ${c.stderrText}`);
  });
}
