// The RST guard against a real kernel and nftables, in a lab host's namespace: what it lets
// through (a new client's refusal), and that no guard outlives the process that installed it.
import { afterEach, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/lab/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, type LabEvent, type NodeChild } from '../../src/lab/node-child.js';
import { guardTableName, selfIdentity } from '../../src/net/guard-owner.js';

const GUARD_OPS = fileURLToPath(new URL('fixtures/guard-ops.ts', import.meta.url));

let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

let nextReq = 1;
async function op(child: NodeChild, cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
  const reqId = nextReq++;
  child.send({ ...cmd, reqId });
  const r: LabEvent = await child.waitFor('result', 10_000, (e) => e.reqId === reqId);
  if (!r.ok) throw new Error(String(r.message));
  return (r.value ?? {}) as Record<string, unknown>;
}

async function guardOps(l: Lab, host: string): Promise<NodeChild> {
  const child = l.spawn(host, GUARD_OPS);
  await child.waitFor('ready');
  return child;
}

async function tables(l: Lab, host: string): Promise<string[]> {
  const { stdout } = await l.exec(host, 'nft', ['list', 'tables', 'inet']);
  return stdout.split('\n').map((t) => t.replace(/^table inet /, '').trim()).filter(Boolean).sort();
}

/** What a client of `host` gets when it connects to address:port (nothing listens there). */
async function connectOutcome(l: Lab, host: string, address: string): Promise<LabEvent> {
  const client = l.spawn(host, fixturePath('client'), ['--host', address, '--port', '7999']);
  // A refusal arrives in a round trip; a dropped RST+ACK would leave the SYN retransmitting
  // (first retry after 1 s, connect failing only after about two minutes).
  return client.waitFor('error', 2500);
}

describe('RstGuard', () => {
  it("drops the host's bare RSTs from the address, yet never turns a new client's ECONNREFUSED into a timeout (IPv4 and IPv6)", async () => {
    lab = await Lab.create({ hosts: ['a', 'b'] });
    const [a, b] = [lab.host('a'), lab.host('b')];
    const ops = await guardOps(lab, 'a');
    const peer = await guardOps(lab, 'b');
    const pairs = [[b.ipv4, a.ipv4], [b.ipv6, a.ipv6]] as const;
    // Without a guard, a segment of no connection draws a RST from a's kernel.
    for (const [src, dst] of pairs) expect(await op(peer, { cmd: 'probe', src, dst, dport: 7999 })).toEqual({ rst: true });
    const { table } = await op(ops, { cmd: 'install', addresses: [a.ipv4, a.ipv6] });
    expect(await tables(lab, 'a')).toEqual([table]);
    for (const [src, dst] of pairs) {
      expect(await op(peer, { cmd: 'probe', src, dst, dport: 7999 })).toEqual({ rst: false });
      expect(await connectOutcome(lab, 'b', dst)).toMatchObject({ code: 'ECONNREFUSED' });
    }
    await op(ops, { cmd: 'remove' });
    expect(await tables(lab, 'a')).toEqual([]);
  });

  it('a sweep removes the guards of owners that are gone, and only those', async () => {
    lab = await Lab.create({ hosts: ['a'] });
    const me = await selfIdentity();
    const sleeper = await run('sh', ['-c', 'sleep 0 & echo $!']);
    const deadPid = Number(sleeper.stdout.trim());
    const live = await guardOps(lab, 'a');
    const { table: liveTable } = await op(live, { cmd: 'install', addresses: [lab.host('a').ipv4] });
    const stale = [
      guardTableName({ ...me, pid: deadPid, startTicks: '1' }, '01'), // the owner is gone
      guardTableName({ ...me, pid: live.pid, startTicks: '1' }, '02'), // its pid now names another process
      'takeover_guard_0badc0de', // an older version's, no owner recorded
    ];
    const foreign = guardTableName({ ...me, pidNamespace: '1', pid: deadPid }, '03');
    const unrelated = 'takeover_lab_other';
    for (const t of [...stale, foreign, unrelated]) await lab.exec('a', 'nft', ['add', 'table', 'inet', t]);

    const sweeper = await guardOps(lab, 'a');
    const sweep = await op(sweeper, { cmd: 'sweep' });
    expect((sweep.removed as string[]).sort()).toEqual([...stale].sort());
    expect(sweep.foreign).toEqual([foreign]);
    expect(await tables(lab, 'a')).toEqual([liveTable, foreign, unrelated].sort());
    // A second sweep finds nothing more.
    expect(await op(sweeper, { cmd: 'sweep' })).toEqual({ removed: [], foreign: [foreign] });
  });

  it('a process killed with SIGKILL leaves its guard; the next install removes it and says so', async () => {
    lab = await Lab.create({ hosts: ['a'] });
    const address = lab.host('a').ipv4;
    const first = await guardOps(lab, 'a');
    const { table: old } = await op(first, { cmd: 'install', addresses: [address] });
    first.process.kill('SIGKILL');
    await first.kill(); // waits for the exit
    expect(await tables(lab, 'a')).toEqual([old]);

    const second = await guardOps(lab, 'a');
    const { table, swept } = await op(second, { cmd: 'install', addresses: [address] });
    expect(swept).toEqual({ removed: [old], foreign: [] });
    expect(await tables(lab, 'a')).toEqual([table]);
    await op(second, { cmd: 'remove' });
    expect(await tables(lab, 'a')).toEqual([]);
  });
});
