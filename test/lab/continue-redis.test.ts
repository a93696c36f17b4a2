// Issue 12 (seed 003): the backup continues a dead Redis primary's client connections. Three
// hosts on a learning bridge: clients c, primary p (Redis master, the service address on its
// eth0), backup b (a Redis replica of p). The switch mirrors p's port to b (a SPAN port, seed 003
// FIG. 1): b shadows every connection to the service from its SYN. Mid-load p dies silently
// (nft drop, ARP included: a panicked node); b promotes its replica and continues every
// connection (TCP_REPAIR restore, address takeover, relay with the session's SELECT replayed
// first and the unanswered INCR replayed once). The clients' sockets see no error, no end, no
// reconnect, and their counters go on.
//
// Without output commit (the docs' window: an INCR P applied whose replication had not reached
// b is lost; one whose reply never left P but whose replication did is applied twice) each
// connection's counter may skip back or jump by one at the takeover; the test counts both and
// bounds them to the one request in flight per connection.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import type { LabEvent, NodeChild } from '../../src/lab/node-child.js';
import { startRedis, type RedisServer } from './redis.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
const backupFixture = fileURLToPath(new URL('fixtures/continue-ops.ts', import.meta.url));
const CONNECTIONS = 8;

let lab: Lab;
const servers: RedisServer[] = [];
let nextReq = 1;

beforeAll(async () => {
  lab = await Lab.create({ hosts: ['c', 'p', 'b'] });
});
afterAll(async () => {
  for (const s of servers) await s.stop();
  await lab?.destroy();
});

async function op(child: NodeChild, cmd: Record<string, unknown>, timeoutMs = 15_000): Promise<any> {
  const reqId = nextReq++;
  child.send({ ...cmd, reqId });
  const r: LabEvent = await child.waitFor('result', timeoutMs, (e) => e.reqId === reqId);
  if (!r.ok) throw new Error(`${String(cmd.cmd)}: ${String(r.code ?? '')} ${String(r.message)}`);
  return r.value;
}

interface ConnReport { key: string; sent: number; replies: number; values: number[]; maxWaitMs: number; errors: string[]; ended: boolean; closed: boolean }

it('continues every client connection of a silently dead Redis primary on its replica', async () => {
  const service = `198.18.${lab.subnet}.100`;
  await lab.exec('p', 'ip', ['addr', 'add', `${service}/24`, 'dev', 'eth0']);
  const master = await startRedis(lab, 'p');
  servers.push(master);
  const replica = await startRedis(lab, 'b', { replicaOf: { host: lab.host('p').ipv4, port: master.port } });
  servers.push(replica);
  await replica.waitReplicaUp();
  const { ifname } = await lab.mirrorPort('p', 'b');

  const backup = lab.spawn('b', backupFixture);
  const clients = lab.spawn('c', clientFixture);
  await Promise.all([backup.waitFor('ready'), clients.waitFor('ready')]);
  await op(backup, { cmd: 'shadow', interface: ifname, address: service, port: master.port });
  await op(clients, { cmd: 'start', address: service, port: master.port, connections: CONNECTIONS, prefix: 'counter' });
  await new Promise((r) => setTimeout(r, 500));

  const before = (await op(clients, { cmd: 'status' })) as ConnReport[];
  const preview = await op(backup, { cmd: 'plans', address: service });
  await lab.killSilently('p');
  const diedAt = Date.now();
  // The agent's detection is not part of this test: the takeover starts 200 ms after the death
  // (b's capture has long drained its ring by then).
  await new Promise((r) => setTimeout(r, 200));
  const takeover = await op(backup, { cmd: 'takeover', interface: 'eth0', address: service, prefixLength: 24, upstreamPort: replica.port });
  console.log(`continue: promote ${takeover.promoteMs.toFixed(1)} ms; guard + plans ${takeover.timings.plannedMs} ms, restored ${takeover.timings.restoredMs} ms, address ${takeover.timings.addressMs} ms, relaying ${takeover.timings.relayingMs} ms, done ${takeover.timings.doneMs} ms; restore per connection (µs): ${takeover.continued.map((x: { restoreUs: number }) => x.restoreUs).join(' ')}`);
  if (takeover.reset.length > 0) console.log('reset:', JSON.stringify(takeover.reset));
  expect(preview.plans.filter((p: { kind: string }) => p.kind === 'restore')).toHaveLength(CONNECTIONS);
  expect(takeover.reset).toEqual([]);
  expect(takeover.continued).toHaveLength(CONNECTIONS);

  // Load goes on through b for half a second, then stops.
  const atTakeover = (await op(clients, { cmd: 'status' })) as ConnReport[];
  await new Promise((r) => setTimeout(r, 500));
  const after = (await op(clients, { cmd: 'stop' })) as ConnReport[];
  const relays = await op(backup, { cmd: 'relays' });

  let doubled = 0;
  let lost = 0;
  for (const [i, c] of after.entries()) {
    expect(c.errors, c.key).toEqual([]);
    expect(c.ended || c.closed, c.key).toBe(false);
    // Replies kept coming after the takeover: many more than at the death.
    expect(c.replies, c.key).toBeGreaterThan(atTakeover[i]!.replies + 10);
    expect(c.replies, c.key).toBeGreaterThan(before[i]!.replies);
    // Every INCR got one reply, in order; the counter steps by one, except at the takeover.
    for (let k = 1; k < c.values.length; k++) {
      const step = c.values[k]! - c.values[k - 1]!;
      if (step === 2) doubled++;
      else if (step === 0) lost++;
      else expect(step, `${c.key} reply ${k}`).toBe(1);
    }
    // The key's value on b equals the last reply the client got (it is on b, in database 2).
    expect(Number(await replica.cli(['-n', '2', 'GET', c.key]))).toBe(c.values.at(-1));
  }
  expect(doubled + lost).toBeLessThanOrEqual(CONNECTIONS);
  const stall = Math.max(...after.map((c) => c.maxWaitMs));
  console.log(`continue: ${CONNECTIONS} connections, 0 errors; replies before death ${before.reduce((s, c) => s + c.replies, 0)}, after ${after.reduce((s, c) => s + c.replies, 0)}; counter doubled ${doubled}, lost ${lost}; longest client wait ${stall.toFixed(0)} ms (death to takeover start: 200 ms); died at ${diedAt}`);
  console.log('relays:', JSON.stringify(relays));
}, 60_000);
