// The mirrored log's primary role on a real 3-member etcd cluster (loopback): a primary holding
// the role is SIGKILLed (its own process: its lease stops being renewed, as in a crash), two
// backups run their takeover hook (roleClaimHook) at the same moment; the role is claimed only
// after the old lease expired (an observer watching the live leases saw it live before the
// claim), and exactly one backup gets it: the other is refused, naming the winner.
import { afterEach, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { EtcdBackend } from '../../src/cluster/etcd-backend.js';
import type { StoreBackend } from '../../src/cluster/store-backend.js';
import { LogPrimaryRole, roleLeaseName, type PrimaryRoleError } from '../../src/log/primary-role.js';
import { roleClaimHook } from '../../src/log/takeover-hooks.js';
import { startRoleHolder } from '../log-role-holder.js';
import { etcdPerFile } from './etcd-per-file.js';

/** The role lease's TTL: 1 s, etcd's minimum at the harness's 500 ms election timeout. */
const LEASE_MS = 1000;
/** etcd's leader looks for expired leases every 500 ms; a loaded 2-core machine adds timer lateness (as cluster-store-etcd.test.ts). */
const EXPIRY_CHECK_MS = 500;
const SLACK_MS = 700;
const POLL_MS = 50;

// Started once for the file; a test fails with the reason if it could not start.
const etcd = etcdPerFile();

describe('log primary role on etcd', () => {
  const open: StoreBackend[] = [];
  const children: ChildProcess[] = [];
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const b of open.splice(0)) await b.close();
  });
  const prefix = `/takeover-test/${process.pid}/logs/`;
  const backend = () => {
    const b = new EtcdBackend({ endpoints: etcd().endpoints, cluster: 'unused', prefix });
    open.push(b);
    return b;
  };

  it('a SIGKILLed primary\'s role is claimed by one of two racing backups, only after its lease expired', async () => {
    const holder = await startRoleHolder({ etcd: etcd().endpoints, prefix, log: 'orders', node: 'a', incarnation: 1n, leaseMs: LEASE_MS }, children);
    const b = new LogPrimaryRole({ backend: backend(), log: 'orders', node: 'b', incarnation: 2n, leaseMs: LEASE_MS });
    const c = new LogPrimaryRole({ backend: backend(), log: 'orders', node: 'c', incarnation: 3n, leaseMs: LEASE_MS });
    // While a's process runs, its lease is renewed: a claim is refused.
    await expect(b.claim()).rejects.toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: 'a' } });

    // An observer of the live leases: when a's was last seen live.
    const observer = backend();
    const aLease = roleLeaseName('orders', 'a');
    let lastLiveAt = 0;
    let goneAt: number | undefined;
    let observing = true;
    const observed = (async () => {
      while (observing) {
        const asked = Date.now();
        const live = await observer.liveNodes().catch(() => undefined);
        if (live?.includes(aLease)) lastLiveAt = asked;
        else if (live && goneAt === undefined) goneAt = asked;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    await holder.kill();
    const killedAt = Date.now();
    const claimedAt: Record<string, number> = {};
    const hook = (role: LogPrimaryRole) => roleClaimHook(role, { timeoutMs: 4 * LEASE_MS, pollMs: POLL_MS });
    const results = await Promise.allSettled([b, c].map((r) => hook(r)().then(() => void (claimedAt[r.node] = Date.now()))));
    observing = false;
    await observed;

    const winners = [b, c].filter((_, i) => results[i]!.status === 'fulfilled');
    expect(winners).toHaveLength(1);
    const winner = winners[0]!;
    const loser = winner === b ? c : b;
    const refusal = (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason as PrimaryRoleError;
    expect(refusal).toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: winner.node } });
    expect(loser.hold).toBeUndefined();
    const at = claimedAt[winner.node]!;
    expect(winner.hold).toMatchObject({ record: { primary: winner.node }, takenFrom: { primary: 'a', incarnation: 1n } });
    // Only after the old lease expired: the observer saw it live before the claim, and gone.
    expect(lastLiveAt).toBeGreaterThanOrEqual(killedAt - 20);
    expect(at).toBeGreaterThan(lastLiveAt);
    expect(goneAt).toBeDefined();
    // Within its TTL after the kill, etcd's expiry check, one poll and the machine's slack.
    expect(at - killedAt).toBeLessThan(LEASE_MS + EXPIRY_CHECK_MS + POLL_MS + SLACK_MS);
    const stored = await new LogPrimaryRole({ backend: observer, log: 'orders', node: 'z', incarnation: 9n, leaseMs: LEASE_MS }).read();
    expect(stored!.record).toEqual(winner.hold!.record);
    console.log(`etcd, role lease ${LEASE_MS} ms: holder SIGKILLed; its lease last seen live ${lastLiveAt - killedAt} ms after the kill, gone at ${goneAt! - killedAt} ms; ${winner.node} claimed at ${at - killedAt} ms, ${loser.node} refused (${refusal.message})`);
    await winner.hold!.release();
  }, 60_000);

  it('two claimants at once on a free role (its holder released it), 20 rounds: exactly one wins each time, the other is refused naming it', async () => {
    const wins: Record<string, number> = { b: 0, c: 0 };
    for (let round = 0; round < 20; round++) {
      const log = `race-${round}`;
      const a = new LogPrimaryRole({ backend: backend(), log, node: 'a', incarnation: 1n, leaseMs: LEASE_MS });
      await (await a.claim()).release();
      const roles = ['b', 'c'].map((node, i) => new LogPrimaryRole({ backend: backend(), log, node, incarnation: BigInt(i + 2), leaseMs: LEASE_MS }));
      const results = await Promise.allSettled(roles.map((r) => r.claim()));
      const won = roles.filter((_, i) => results[i]!.status === 'fulfilled');
      expect(won, `round ${round}`).toHaveLength(1);
      wins[won[0]!.node]!++;
      expect((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason, `round ${round}`).toMatchObject({ code: 'EMIRRORROLEHELD', holder: { primary: won[0]!.node } });
      await won[0]!.hold!.release();
      for (const b of open.splice(0)) await b.close();
    }
    console.log(`etcd: 20 races of two claimants: b won ${wins.b}, c won ${wins.c}`);
  }, 120_000);
});
