// Continued connections outlive the agent that continued them (config `relayKeeper`), as
// operators run it: `takeover agent` processes on a (the Redis primary) and b (its replica, a
// `continue` takeover of a's service), a learning bridge mirroring a's port to b, counting
// clients on c. a dies silently (nft drop, ARP included); b continues its connections and hands
// each relay, once in its steady state, to the relay keeper it starts (`takeover relay-keeper`).
// Then b's agent is killed with SIGKILL, started again (it finds the keeper and lists what it
// holds), and stopped with SIGTERM (a planned stop): through all of it the clients go on
// counting on the promoted replica with no error, no end, no reconnect.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { exited } from '../../src/lab/exec.js';
import { runCli, startCli } from '../cli-process.js';
import { controlStatus, agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { incrSteps } from './incr-steps.js';
import { startRedisPair } from './redis.js';
import type { CounterReport } from './fixtures/resp-counter-client.js';
import { until } from './replication-cluster.js';
import { niceOf, threadNices } from '../../src/monitor/cpu-priority.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
/** Busy connections (INCR every THINK_MS) and idle ones (one INCR, then one per poke). */
const BUSY = 8;
const IDLE = 92;
const THINK_MS = 5;

type Status = { keeper?: { pid?: number; connections: number; services: Array<{ peer: string; service: string; connections: number }> }; relaying?: unknown };

it('continued connections outlive the backup agent\'s SIGKILL, restart and planned stop (relayKeeper)', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-keeper-');
  const { lab, dir, vip } = m;
  const { master, replica, stop } = await startRedisPair(lab, { maxClients: 300 });
  try {
    const { ifname } = await lab.mirrorPort('a', 'b');
    const continueSection = { protocol: 'resp', mirror: ifname, upstream: { port: replica.port }, promote: ['redis-cli', '-p', String(replica.port), 'REPLICAOF', 'NO', 'ONE'] };
    const { log: logOf, agent } = startContinueAgents(m, master.port, continueSection, {}, undefined, { relayKeeper: {} });
    const bNs = lab.host('b').ns;
    const control = path.join(dir, 'b.sock');
    const status = () => controlStatus<Status>(m, 'b');
    await until('b hears a', async () => (logOf('b').some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    await shadowFollowing(m, 'b');
    expect((await status())?.keeper).toMatchObject({ connections: 0, services: [] });
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: BUSY, idle: IDLE, prefix: 'kept', thinkMs: THINK_MS });
    await new Promise((r) => setTimeout(r, 300));

    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => logOf('b').find((e) => e.msg === 'peer taken over'), 10_000);
    console.log(`continue with a relay keeper: ${JSON.stringify({ continued: taken.continued.connections, reset: taken.continued.reset, captureDrops: taken.continued.captureDrops })}`);
    expect(taken.continueError).toBeUndefined();
    // A mirror that lost frames (a loaded machine) resets exactly the connections that lost a
    // segment (continue-agent.test.ts): those are not this test's; the rest must go on throughout.
    const continued = taken.continued.connections as number;
    const reset = taken.continued.reset as number;
    expect(continued + reset).toBeLessThanOrEqual(BUSY + IDLE);
    expect(continued).toBeGreaterThan((BUSY + IDLE) / 2);
    // The idle connections reset at the takeover fail their first poke; none may fail later.
    const poked = (await clients.request({ cmd: 'poke' })) as { failed: number; wrong: number };
    expect(poked.wrong).toBe(0);
    const idleFailed = poked.failed;
    const pokeAgain = { idle: IDLE, answered: IDLE - idleFailed, failed: idleFailed, wrong: 0 };
    const started = logOf('b').find((e) => String(e.msg).startsWith('relay keeper started'));
    expect(started, 'b started a relay keeper').toBeDefined();
    let keeperPid = started!.pid as number;
    // At the nice the agent was started with (the test's, 0), as its instances: not the agent's -10.
    expect(new Set(threadNices(keeperPid).values())).toEqual(new Set([niceOf()]));
    // Every relay reaches its steady state and goes to the keeper: none is left in the agent.
    const kept = await until('every continued connection with the keeper', async () => {
      const s = await status();
      return s?.keeper?.connections === continued && s.relaying === undefined ? s : undefined;
    }, 10_000);
    expect(kept.keeper).toMatchObject({ pid: keeperPid, services: [{ peer: 'a', service: `${vip}:${master.port}`, connections: continued }] });

    // b's agent dies. Its continued connections go on in the keeper.
    const killedAt = Date.now();
    agent('b').child.kill('SIGKILL');
    await exited(agent('b').child);
    await new Promise((r) => setTimeout(r, 300));
    expect(await clients.request({ cmd: 'poke' })).toMatchObject(pokeAgain);
    const busyAfterKill = (await clients.request({ cmd: 'status' })) as CounterReport[];

    // Started again, as a supervisor does: it finds the keeper and what it holds.
    const b2 = startCli(['agent', '--config', path.join(dir, 'b.json')], { netns: bNs });
    m.agents.push(b2);
    const b2log = () => b2.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const attached = await until('b\'s new life attached to the keeper', async () => b2log().find((e) => String(e.msg).startsWith('relay keeper (pid')), 15_000);
    expect(attached).toMatchObject({ pid: keeperPid, connections: continued });
    const text = await runCli(['status', '--control', control], { netns: bNs });
    expect(text.stdout).toMatch(new RegExp(`KEPT FOR PEER +SERVICE +CONNECTIONS\\na +${vip.replaceAll('.', '\\.')}:${master.port} +${continued}\\n`));
    expect(text.stdout).toContain(`${continued} continued connection(s) are relayed by the relay keeper (pid ${keeperPid}`);

    // The keeper upgraded in place (a new `takeover` installed), as AGENT.md says: --replace on its
    // socket. The connections go on; b's agent follows to the new keeper.
    const next = startCli(['relay-keeper', '--socket', started!.socket as string, '--replace', '--idle-exit-ms', '0'], { netns: bNs });
    m.agents.push(next);
    const followed = await until('b follows the new keeper', async () => b2log().find((e) => String(e.msg).includes('was replaced by pid')), 15_000);
    expect(followed).toMatchObject({ from: keeperPid, pid: next.child.pid, relays: continued });
    const oldKeeper = keeperPid;
    keeperPid = next.child.pid!;
    await until('the old keeper gone', async () => {
      try {
        process.kill(oldKeeper, 0);
        return undefined;
      } catch {
        return true;
      }
    }, 10_000);
    expect((await status())?.keeper).toMatchObject({ pid: keeperPid, connections: continued });
    expect(await clients.request({ cmd: 'poke' })).toMatchObject(pokeAgain);
    const replacedLine = next.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, number>).find((e) => e.handedMs !== undefined)!;
    expect(replacedLine).toMatchObject({ taken: continued, closed: 0 });
    console.log(`relay keeper replaced: ${continued} connections taken over in ${replacedLine.handedMs} ms`);

    // A planned stop: the agent leaves, the connections stay.
    b2.child.kill('SIGTERM');
    expect((await b2.done).code).toBe(0);
    expect(b2log().find((e) => String(e.msg).includes('stay with the relay keeper'))).toMatchObject({ pid: keeperPid, connections: continued });
    await new Promise((r) => setTimeout(r, 300));
    expect(await clients.request({ cmd: 'poke' })).toMatchObject(pokeAgain);

    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    let doubled = 0;
    let lost = 0;
    let busyFailed = 0;
    for (const c of after) {
      const before = busyAfterKill.find((x) => x.key === c.key)!;
      if (before.errors.length > 0 || before.closed) {
        busyFailed++; // reset at the takeover (a mirror loss): not this test's
        continue;
      }
      expect(c, c.key).toMatchObject({ errors: [], ended: false, closed: false });
      // Counting went on after the kill, the restart and the stop.
      expect(c.replies, c.key).toBeGreaterThan(before.replies + 10);
      expect(Number(await replica.cli(['-n', '2', 'GET', c.key])), c.key).toBe(c.values.at(-1));
      const steps = incrSteps(c.values);
      expect(steps.other, c.key).toEqual([]);
      doubled += steps.doubled;
      lost += steps.lost;
    }
    // Without output commit, the INCR in flight at a's death may be applied twice or lost: one per busy connection at most.
    expect(doubled + lost).toBeLessThanOrEqual(BUSY);
    expect(busyFailed + idleFailed).toBeLessThanOrEqual(reset);
    console.log(`continue with a relay keeper: ${after.reduce((n, c) => n + c.replies, 0)} INCRs answered, ${after.reduce((n, c) => n + c.replies, 0) - busyAfterKill.reduce((n, c) => n + c.replies, 0)} of them after b's agent was killed (${Date.now() - killedAt} ms before the end); doubled ${doubled}, lost ${lost}`);
    // The keeper is still there, holding the idle connections (the lab's end kills it).
    expect(() => process.kill(keeperPid, 0)).not.toThrow();
  } finally {
    await stop();
  }
}, 90_000);

// A switchover's moved connections, kept by the keeper, across a restart of b's agent, and then
// the old primary's death. a's kernel still holds the moved sockets (frozen) and its agent's
// replicated table still lists them; b's new life has none of the relays in its own process, so
// only the keeper's list tells it that b serves those clients itself: its takeover of a must not
// reset them (as switchover.test.ts checks for a b that never restarted).
it('a switchover\'s moved connections stay with the keeper across b\'s restart, and b\'s later takeover of a resets none of them', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-keeper-switch-');
  const { lab, dir, vip } = m;
  const { master, replica, stop } = await startRedisPair(lab, { maxClients: 300 });
  try {
    const aAddress = lab.host('a').ipv4;
    const continueSection = { protocol: 'resp', stream: { host: aAddress, port: 7402 }, upstream: { port: replica.port }, promote: ['redis-cli', '-p', String(replica.port), 'REPLICAOF', 'NO', 'ONE'] };
    const { log: logOf, agent } = startContinueAgents(m, master.port, continueSection, { connectionStream: { address: aAddress, port: 7402 } }, { intervalMs: 100, misses: 20 }, { relayKeeper: {} });
    const bNs = lab.host('b').ns;
    const control = path.join(dir, 'b.sock');
    await until('b follows a\'s stream', async () => (logOf('b').some((e) => e.msg === 'a\'s connection stream is up') ? true : undefined), 15_000);
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: BUSY, idle: IDLE, prefix: 'moved', thinkMs: THINK_MS });
    await new Promise((r) => setTimeout(r, 500));

    const run = await runCli(['switchover', `${vip}:${master.port}`, '--to', 'b', '--json', '--control', control], { netns: bNs });
    expect(run.code, `${run.stderr} ${run.stdout}`).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ connections: BUSY + IDLE, moved: BUSY + IDLE, reset: 0 });
    const status = () => controlStatus<Status & { replication?: { peers: Array<{ node: string; connections: number }> }; shadows?: Array<{ unfollowed?: number }> }>(m, 'b');
    await until('the moved connections with the keeper', async () => ((await status())?.keeper?.connections === BUSY + IDLE ? true : undefined), 10_000);

    // b's agent dies and comes back; it hears a again, with a's table listing the moved sockets.
    agent('b').child.kill('SIGKILL');
    await exited(agent('b').child);
    const b2 = startCli(['agent', '--config', path.join(dir, 'b.json')], { netns: bNs });
    m.agents.push(b2);
    const b2log = () => b2.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    await until('b\'s new life attached to the keeper', async () => b2log().find((e) => String(e.msg).startsWith('relay keeper (pid')), 15_000);
    const listed = await until('a\'s table on b lists the moved sockets', async () => {
      const s = await status();
      const a = s?.replication?.peers.find((p) => p.node === 'a');
      return a && a.connections >= BUSY + IDLE && s?.shadows?.[0]?.unfollowed !== undefined ? s : undefined;
    }, 15_000);
    // Not counted as connections a takeover would reset: b relays them (in its keeper).
    expect(listed.shadows![0]!.unfollowed).toBe(0);

    await lab.killSilently('a');
    const taken = await until('b takes a over', async () => b2log().find((e) => e.msg === 'peer taken over') as Record<string, any> | undefined, 15_000);
    console.log(`switchover with a relay keeper, b restarted, then a dies: ${JSON.stringify({ replicated: taken.replicated, continued: taken.continued, closed: taken.closed })}`);
    expect(taken.continued?.reset ?? 0, JSON.stringify(taken)).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(await clients.request({ cmd: 'poke' })).toMatchObject({ idle: IDLE, answered: IDLE, failed: 0, wrong: 0 });
    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    for (const c of after) {
      expect(c, c.key).toMatchObject({ errors: [], ended: false, closed: false });
      expect(incrSteps(c.values), c.key).toMatchObject({ other: [], doubled: 0, lost: 0 });
    }
  } finally {
    await stop();
  }
}, 90_000);
