// Issue 12 through the agent, as operators run it: `takeover agent --config FILE` on the primary a
// and the backup b (a learning bridge; the switch mirrors a's port to b). a serves Redis on the
// service address; b runs a Redis replica, and its config's takeover of a has a `continue`
// section (RESP, the mirror interface, the replica as upstream, `redis-cli REPLICAOF NO ONE` to
// promote it). Clients on c keep counting with INCR. a dies silently (nft drop, ARP included):
// b's agent declares it dead from the heartbeats, promotes the replica and continues all 1,000
// client connections at once; the clients see no error, no end, no reconnect, and each key's
// value on b is the last reply its client got. Without output commit one INCR in flight per busy
// connection may be applied twice or lost (docs/CONTINUE.md): counted, bounded by one each.
// On a loaded machine the mirror's capture can lose frames (the agent starved of CPU): then the
// connections that lost a segment are reset exactly with the reason, the rest still continued
// exactly; the run prints the losses and checks that only connections not continued failed.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { runCli } from '../cli-process.js';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { incrSteps } from './incr-steps.js';
import { startRedisPair } from './redis.js';
import type { CounterReport } from './fixtures/resp-counter-client.js';
import { softnetDrops } from '../../src/net/softnet-drops.js';
import { until } from './replication-cluster.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
const bulkFixture = fileURLToPath(new URL('fixtures/resp-bulk-reader.ts', import.meta.url));
const userTimeoutClient = fileURLToPath(new URL('fixtures/resp-user-timeout-client.py', import.meta.url));
/** TCP_USER_TIMEOUT of two more clients (ms): one shorter than detection, one longer than the whole stall. */
const USER_TIMEOUTS = [250, 2000];
/** The bulk reader's value: its GET replies are in flight most of the time, so the death lands mid-reply. */
const BULK_BYTES = 1 << 20;
/** Busy connections (INCR back to back) and idle ones (one INCR, then one after the takeover): 1,000 in all. */
const CONNECTIONS = 8;
const IDLE = 992;



it('the backup\'s agent continues a silently dead Redis primary\'s connections on its promoted replica', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-agent-');
  const { lab, dir, vip } = m;
  // Room for the 1,000 clients, the replica's link and the promote command (Redis' default is 10,000; the harness's 1,000).
  const { master, replica, stop } = await startRedisPair(lab, { maxClients: 1100 });
  try {
    const { ifname } = await lab.mirrorPort('a', 'b');
    const { log: logOf } = startContinueAgents(m, master.port, { protocol: 'resp', mirror: ifname, upstream: { port: replica.port }, promote: ['redis-cli', '-p', String(replica.port), 'REPLICAOF', 'NO', 'ONE'] });
    const log = () => logOf('b');
    await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    // Connections opened once b's shadow captures are the ones it can continue.
    await shadowFollowing(m, 'b');
    const backlogDropsBefore = (await softnetDrops()) ?? 0;
    const clients = lab.spawn('c', clientFixture);
    const bulk = lab.spawn('c', bulkFixture);
    await Promise.all([clients.waitFor('ready'), bulk.waitFor('ready')]);
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: CONNECTIONS, idle: IDLE - 1, prefix: 'counter' });
    await bulk.request({ cmd: 'start', address: vip, port: master.port, key: 'big', bytes: BULK_BYTES });
    const bounded = USER_TIMEOUTS.map((ms) => lab.spawnCommand('c', 'python3', [userTimeoutClient, vip, String(master.port), `bounded:${ms}`, String(ms), '4']));
    await Promise.all(bounded.map((b) => b.waitFor('connected')));
    await new Promise((r) => setTimeout(r, 500));

    const killedAt = Date.now();
    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
    await new Promise((r) => setTimeout(r, 500));
    const poked = (await clients.request({ cmd: 'poke' })) as { idle: number; answered: number; failed: number; wrong: number; bad: unknown[] };
    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    const boundedDone = (await Promise.all(bounded.map((b) => b.waitFor('done', 10_000)))) as unknown as Array<{ replies: number; error: string | null; longestWaitMs: number }>;
    const read = (await bulk.request({ cmd: 'stop' })) as { replies: number; mismatches: number; errors: string[]; ended: boolean; closed: boolean; samples: Array<[number, number]> };
    const down = log().find((e) => e.msg === 'node-down')?.detector as { at: number; lastHeardAt: number } | undefined;
    // The mirror may lose frames on this machine: the capture ring's drops (captureDrops: the
    // agent starved of CPU by the rest of the lab) and the host's input backlog (which the ring
    // never sees). Then, as docs/CONTINUE.md says, the connections that lost a segment are not
    // continued: reset exactly, each with its reason (a SYN lost: not shadowed, and left to the
    // client's own timeout or RST). Whatever happens, a continued connection is exact: no error,
    // every INCR counted. Without a loss, every connection is continued.
    const backlogDrops = ((await softnetDrops()) ?? 0) - backlogDropsBefore;
    const lossy = taken.continued.captureDrops > 0 || backlogDrops > 0;
    console.log(`continue via the agent: mirror losses: capture ring ${taken.continued.captureDrops} frames, host backlog ${backlogDrops} (since the clients started, host-wide)${lossy ? `: ${taken.continued.reset} connection(s) reset for it` : ''}`);
    if (lossy) console.log(`continue via the agent: closed ${JSON.stringify(taken.closed)}; poke ${JSON.stringify(poked)}`);
    console.log(`continue via the agent: ${JSON.stringify(taken.continued)}; detection ${down ? Math.round(down.at - down.lastHeardAt) : '?'} ms; takeover ${taken.ms} ms; longest client wait ${Math.max(...after.map((c) => c.maxWaitMs)).toFixed(0)} ms`);
    expect(taken.continueError).toBeUndefined();
    /** Busy, bounded and bulk clients that saw an error or an end (the idle ones are counted by the poke). */
    const clientErrors: string[] = [];
    // TCP_USER_TIMEOUT: the 2 s client waits the stall out; the 250 ms one may give up during
    // detection (its kernel then resets the dead server's connection: nothing left to continue).
    console.log(`continue via the agent: TCP_USER_TIMEOUT ${USER_TIMEOUTS.map((ms, i) => `${ms} ms: ${boundedDone[i]!.error ?? `no error (longest wait ${boundedDone[i]!.longestWaitMs} ms)`}`).join('; ')}`);
    const [short, long] = boundedDone as [(typeof boundedDone)[number], (typeof boundedDone)[number]];
    if (!lossy) expect(long.error, 'the 2 s client').toBeNull();
    if (short.error !== null && !/Timeout/.test(short.error)) clientErrors.push(`bounded:${USER_TIMEOUTS[0]} ${short.error}`);
    if (long.error !== null) clientErrors.push(`bounded:${USER_TIMEOUTS[1]} ${long.error}`);
    // The bulk reader's and both bounded clients included. A 250 ms client that timed out may
    // have left nothing to continue (its kernel's RST reached the mirror) or not (it went quietly).
    const total = CONNECTIONS + IDLE + 2;
    const shortGone = short.error !== null && /Timeout/.test(short.error) ? 1 : 0;
    const notContinued = total - taken.continued.connections;
    expect(taken.continued.connections + taken.continued.reset).toBeLessThanOrEqual(total);
    if (lossy) {
      for (const reason of Object.keys(taken.continued.resetBy)) expect(reason).toMatch(/hole|did not see|copy lacks|capture lost|not shadowed/);
    } else {
      expect(taken.continued.reset).toBe(0);
      expect(taken.continued.connections).toBeGreaterThanOrEqual(total - shortGone);
    }
    if (poked.wrong > 0) {
      const k = (poked.bad[0] as { key: string }).key;
      console.log(`continue via the agent: a wrong idle reply, ${k} on the promoted replica: db2=${await replica.cli(['-n', '2', 'GET', k])} db0=${await replica.cli(['-n', '0', 'GET', k])} dbsize2=${await replica.cli(['-n', '2', 'DBSIZE'])} dbsize0=${await replica.cli(['-n', '0', 'DBSIZE'])}; b's log: ${log().filter((e) => /replic|promot|shadow|continu/i.test(String(e.msg))).map((e) => String(e.msg)).join(' | ')}`);
    }
    // Idle connections: each answered its poke with the right value, or (lost frames) failed.
    expect(poked).toMatchObject({ idle: IDLE - 1, wrong: 0 });
    expect(poked.answered + poked.failed).toBe(IDLE - 1);

    // The large replies: every one byte-exact across the takeover, and the rate before and after.
    expect(read.mismatches).toBe(0);
    if (read.errors.length > 0 || read.ended) clientErrors.push(`bulk ${read.errors.join(', ') || 'ended'}`);
    const rate = (from: number, to: number) => {
      const s = read.samples.filter(([t]) => t > from && t <= to);
      return s.length < 2 ? NaN : s.reduce((n, [, b]) => n + b, 0) / ((s.at(-1)![0] - s[0]![0] + 100) / 1000) / 1e6;
    };
    const doneAt = (taken.time as number) ?? Date.now();
    const before = rate(killedAt - 500, killedAt);
    const afterRate = rate(doneAt + 100, doneAt + 600);
    console.log(`continue via the agent: ${BULK_BYTES} B GET replies ${read.replies}, 0 mismatches; rate before ${before.toFixed(0)} MB/s, after ${afterRate.toFixed(0)} MB/s (ratio ${(afterRate / before).toFixed(2)})`);
    if (read.errors.length === 0) expect(read.samples.filter(([t]) => t > doneAt).length).toBeGreaterThan(0);
    let doubled = 0;
    let lost = 0;
    for (const c of after) {
      if (c.errors.length > 0 || c.ended || c.closed) {
        clientErrors.push(`${c.key} ${c.errors.join(', ') || 'ended'}`);
        continue;
      }
      expect(Number(await replica.cli(['-n', '2', 'GET', c.key])), c.key).toBe(c.values.at(-1));
      const steps = incrSteps(c.values);
      expect(steps.other, c.key).toEqual([]);
      doubled += steps.doubled;
      lost += steps.lost;
    }
    expect(doubled + lost).toBeLessThanOrEqual(CONNECTIONS);
    // Only connections that were not continued failed, and only when the mirror lost frames.
    expect(clientErrors.length + poked.failed, `${clientErrors.join('; ')}; idle: ${JSON.stringify(poked.bad)}`).toBeLessThanOrEqual(lossy ? notContinued : 0);
    console.log(`continue via the agent: INCR doubled ${doubled}, lost ${lost} (no output commit)`);
    expect((await replica.replication()).role).toBe('master');
    // What an operator sees: the shadow named at start, the continued connections in status.
    expect(log().some((e) => String(e.msg).startsWith(`shadowing a's connections to ${vip}:${master.port} from its mirror ${ifname}`))).toBe(true);
    // A fresh shadow follows a again (it may come back and serve): the mirror's, empty for now,
    // opened 1 s after the continue (SHADOW_REOPEN_DELAY_MS).
    const freshShadow = new RegExp(`SHADOW OF PEER[^\\n]*\\na +${vip.replaceAll('.', '\\.')}:${master.port} +mirror +0 +0`);
    const status = await until('a fresh shadow in b\'s status', async () => {
      const out = await runCli(['status', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
      return freshShadow.test(out.stdout) ? out : undefined;
    }, 5_000);
    expect(status.stdout).toMatch(new RegExp(`took over ${vip.replaceAll('.', '\\.')}:${master.port} .*: ok, ${taken.continued.connections} connection\\(s\\) continued here, ${taken.continued.reset} connection\\(s\\) closed, address added here`));
  } finally {
    await stop();
  }
}, 60_000);
