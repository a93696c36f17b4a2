// Planned switchover (issue 12) through the agents as processes, as operators run it: a serves
// Redis on the service address and streams its connections (`connectionStream`); b runs the
// replica and follows a's service (`continue.stream`); a learning bridge, no mirror. Clients on c:
// busy connections sending INCR back to back and idle ones (one INCR, another after the
// switchover), 1,000 in all, each on its own key after SELECT 2. On b, `takeover switchover
// VIP:PORT --to b`: a's agent locks, dumps and hands the connections over, b's agent catches the
// replica up, promotes it, takes the address and continues every one. A planned switchover has no
// excuse: 0 errors, no end, no reconnect, every key's value on b its client's last reply, no INCR
// doubled or lost.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { runCli } from '../cli-process.js';
import { agentsLab, startContinueAgents } from './agents-lab.js';
import { incrSteps } from './incr-steps.js';
import { startRedisPair } from './redis.js';
import type { CounterReport } from './fixtures/resp-counter-client.js';
import { until } from './replication-cluster.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
const BUSY = 8;
const IDLE = 992;
const STREAM_PORT = 7402;
// A planned switchover needs no fast detection: 100 ms x 3 misses made b declare a dead on this
// loaded machine (a's agent late with its heartbeats under 1,000 new connections) and take over.
const HEARTBEAT = { intervalMs: 100, misses: 20 };


it('a planned switchover moves 1,000 live Redis connections to the backup: 0 errors, no INCR doubled or lost', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-switchover-');
  const { lab, dir, vip } = m;
  const { master, replica, stop } = await startRedisPair(lab, { maxClients: 1100 });
  try {
    const aAddress = lab.host('a').ipv4;
    const { log: logOf } = startContinueAgents(m, master.port, { protocol: 'resp', stream: { host: aAddress, port: STREAM_PORT }, upstream: { port: replica.port }, promote: ['redis-cli', '-p', String(replica.port), 'REPLICAOF', 'NO', 'ONE'] }, { connectionStream: { address: aAddress, port: STREAM_PORT } }, HEARTBEAT);
    await until('b follows a\'s stream', async () => (logOf('b').some((e) => e.msg === 'a\'s connection stream is up') ? true : undefined), 15_000);
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: BUSY, idle: IDLE, prefix: 'counter' });
    await new Promise((r) => setTimeout(r, 1000));

    // A usage error first: --to must name the node that takes over (this one).
    const wrong = await runCli(['switchover', `${vip}:${master.port}`, '--to', 'a', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/run the switchover on a's agent/);
    const nobody = await runCli(['switchover', `${vip}:${master.port}`, '--to', 'zz', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    expect(nobody.code).toBe(2);
    expect(nobody.stderr).toMatch(/--to zz: no such node \(this is b; its peers: a\)/);

    const startedAt = Date.now();
    const run = await runCli(['switchover', `${vip}:${master.port}`, '--to', 'b', '--json', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    const endedAt = Date.now();
    console.log(`switchover: exit ${run.code}; ${run.stderr.trim()}; report ${run.stdout.trim()}`);
    if (run.code !== 0) for (const n of ['a', 'b'] as const) console.log(`${n}'s log: ${logOf(n).filter((e) => e.msg !== 'published').map((e) => `${e.time ?? ''} ${e.msg}`).join('\n')}`);
    expect(run.code, `${run.stderr} ${run.stdout}`).toBe(0);
    const report = JSON.parse(run.stdout) as { connections: number; moved: number; reset: number; lockHeldMs: number; releasedAfterMs: number; quietMs: number; dumpMs: number; catchUpMs: number; promoteMs: number; totalMs: number; timings: Record<string, number> };
    await new Promise((r) => setTimeout(r, 500));
    const poked = await clients.request({ cmd: 'poke' });
    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    expect(report, JSON.stringify(report)).toMatchObject({ connections: BUSY + IDLE, moved: BUSY + IDLE, reset: 0 });
    expect(poked).toEqual({ idle: IDLE, answered: IDLE, failed: 0, wrong: 0, bad: [] });
    let doubled = 0;
    let lost = 0;
    for (const c of after) {
      expect(c.errors, c.key).toEqual([]);
      expect(c.ended || c.closed, c.key).toBe(false);
      expect(c.replies, c.key).toBe(c.sent);
      expect(Number(await replica.cli(['-n', '2', 'GET', c.key])), c.key).toBe(c.values.at(-1));
      const steps = incrSteps(c.values);
      expect(steps.other, c.key).toEqual([]);
      doubled += steps.doubled;
      lost += steps.lost;
    }
    expect({ doubled, lost }).toEqual({ doubled: 0, lost: 0 });
    const busy = after.filter((c) => c.values.length > 2);
    // The fixture keeps each connection's longest wait and when it ended: the busy clients' longest
    // is the switchover's stall when it ended during it (else the stall was shorter than it).
    const longest = busy.reduce((a, c) => (c.maxWaitMs > a.maxWaitMs ? c : a), busy[0]!);
    const during = longest.maxWaitAt >= startedAt && longest.maxWaitAt <= endedAt + 3000;
    const stall = `${longest.maxWaitMs.toFixed(0)} ms (${during ? 'during the switchover' : 'not during the switchover: its stall was shorter'})`;
    console.log(`switchover: ${report.moved} of ${report.connections} moved; address moved ${report.releasedAfterMs} ms after the lock, lock held ${report.lockHeldMs} ms (quiet ${report.quietMs} ms, dump ${report.dumpMs} ms, catch-up ${report.catchUpMs} ms, promote ${report.promoteMs} ms, continue ${JSON.stringify(report.timings)}); longest wait of a busy client ${stall}; INCRs of the busy clients ${busy.reduce((n, c) => n + c.values.length, 0)}`);
    expect((await replica.replication()).role).toBe('master');
    const gave = logOf('a').find((e) => String(e.msg).startsWith(`gave ${vip}:${master.port} to b (planned switchover): ${BUSY + IDLE} connections handed over`));
    expect(gave).toBeDefined();
    console.log(`switchover: on a: ${JSON.stringify(gave!.switchover)}`);
    expect(logOf('b').some((e) => String(e.msg).startsWith(`switchover of a's ${vip}:${master.port}: ${BUSY + IDLE} of ${BUSY + IDLE} connections moved, 0 reset`))).toBe(true);
    // What an operator sees: both agents' status tell the switchover with its numbers.
    const bStatus = (await runCli(['status', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns })).stdout;
    expect(bStatus).toMatch(new RegExp(`switchover: took a's ${vip.replaceAll('.', '\\.')}:${master.port} at [^:]+:[^ ]+ ${BUSY + IDLE} of ${BUSY + IDLE} connection\\(s\\) moved, 0 reset; address moved \\d+ ms after a's lock, which held \\d+ ms`));
    const aStatus = (await runCli(['status', '--control', path.join(dir, 'a.sock')], { netns: lab.host('a').ns })).stdout;
    expect(aStatus).toMatch(new RegExp(`switchover: gave ${vip.replaceAll('.', '\\.')}:${master.port} to b at \\S+: ${BUSY + IDLE} connection\\(s\\) handed over \\(${BUSY + IDLE} moved there, 0 reset or told goodbye\\), address removed \\d+ ms after the lock, lock held \\d+ ms`));
    // No lock left on a, no RST guard on b (b's service answers as any service now); a new
    // client reaches the promoted replica on b at the service address.
    expect((await lab.exec('a', 'nft', ['list', 'tables'])).stdout).not.toMatch(/takeover_guard_/);
    expect((await lab.exec('b', 'nft', ['list', 'tables'])).stdout).not.toMatch(/takeover_guard_/);
    expect((await lab.exec('c', 'redis-cli', ['-h', vip, '-p', String(master.port), '-n', '2', 'INCR', 'a-new-client'])).stdout.trim()).toBe('1');
    // The address is b's now, a's gone.
    expect((await lab.exec('b', 'ip', ['-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain(`${vip}/24`);
    expect((await lab.exec('a', 'ip', ['-o', 'addr', 'show', 'dev', 'eth0'])).stdout).not.toContain(`${vip}/`);
    // A second switchover: a no longer holds the address, and says so (not a frame error).
    const again = await runCli(['switchover', `${vip}:${master.port}`, '--to', 'b', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(new RegExp(`the primary refused: ${vip.replaceAll('.', '\\.')} is not on a`));
    // Later the old primary dies. Its kernel still holds the moved sockets (frozen) and its
    // agent's table still lists them: b's takeover of a must not reset the clients b serves
    // itself (a new user's trial saw all of them reset).
    await lab.killSilently('a');
    const taken = await until('b takes a over', async () => logOf('b').find((e) => e.msg === 'peer taken over'), 15_000);
    console.log(`switchover, then a dies: ${JSON.stringify({ replicated: taken.replicated, continued: taken.continued, closed: taken.closed })}`);
    expect(taken.continued?.reset ?? 0, JSON.stringify(taken)).toBe(0);
    expect(await clients.request({ cmd: 'poke' })).toMatchObject({ idle: IDLE, answered: IDLE, failed: 0, wrong: 0 });
  } finally {
    await stop();
  }
}, 90_000);

it('a switchover that fails before the address moves undoes everything on the primary: its clients go on there, nothing lost', async () => {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-switchover-abort-');
  const { lab, dir, vip } = m;
  const { master, replica, stop } = await startRedisPair(lab, { maxClients: 400 });
  try {
    const aAddress = lab.host('a').ipv4;
    // The promotion fails (as a replica that cannot be promoted would): after the dump, before the address moves.
    const { log: logOf } = startContinueAgents(m, master.port, { protocol: 'resp', stream: { host: aAddress, port: STREAM_PORT }, upstream: { port: replica.port }, promote: ['sh', '-c', 'echo cannot promote >&2; exit 3'] }, { connectionStream: { address: aAddress, port: STREAM_PORT } }, HEARTBEAT);
    await until('b follows a\'s stream', async () => (logOf('b').some((e) => e.msg === 'a\'s connection stream is up') ? true : undefined), 15_000);
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: BUSY, idle: 92, prefix: 'counter' });
    await new Promise((r) => setTimeout(r, 500));
    const run = await runCli(['switchover', `${vip}:${master.port}`, '--to', 'b', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    console.log(`switchover refused: exit ${run.code}; ${run.stderr.trim()}`);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/aborted, the primary serves on: the local service was not promoted: promote command .* exited with 3: cannot promote/);
    await new Promise((r) => setTimeout(r, 500));
    const poked = await clients.request({ cmd: 'poke' });
    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    expect(poked).toEqual({ idle: 92, answered: 92, failed: 0, wrong: 0, bad: [] });
    for (const c of after) {
      expect(c.errors, c.key).toEqual([]);
      expect(c.ended || c.closed, c.key).toBe(false);
      expect(c.replies, c.key).toBe(c.sent);
      expect(Number(await master.cli(['-n', '2', 'GET', c.key])), c.key).toBe(c.values.at(-1));
    }
    const busy = after.filter((c) => c.values.length > 2);
    console.log(`switchover refused: longest wait of a busy client ${Math.max(...busy.map((c) => c.maxWaitMs)).toFixed(0)} ms; ${busy.reduce((n, c) => n + c.values.length, 0)} INCRs`);
    const aborted = logOf('a').find((e) => String(e.msg).startsWith(`planned switchover of ${vip}:${master.port} to b aborted`));
    expect(aborted?.switchover).toMatchObject({ connections: BUSY + 92, thawFailures: 0 });
    const aStatus = (await runCli(['status', '--control', path.join(dir, 'a.sock')], { netns: lab.host('a').ns })).stdout;
    expect(aStatus).toMatch(/switchover: aborted b's switchover of .* the backup aborted: the local service was not promoted: .* \(100 connection\(s\) thawed, 0 failed; lock held \d+ ms\)/);
    // Nothing moved: the address and the service stay on a, no lock left there.
    expect((await lab.exec('a', 'ip', ['-o', 'addr', 'show', 'dev', 'eth0'])).stdout).toContain(`${vip}/24`);
    expect((await lab.exec('b', 'ip', ['-o', 'addr', 'show', 'dev', 'eth0'])).stdout).not.toContain(`${vip}/`);
    expect((await lab.exec('a', 'nft', ['list', 'tables'])).stdout).not.toMatch(/takeover_guard_/);
    expect((await replica.replication()).role).toBe('slave');
  } finally {
    await stop();
  }
}, 90_000);
