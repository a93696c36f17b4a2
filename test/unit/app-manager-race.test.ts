// Two backups racing to become HOST (issue 11, seed 002 FIG. 7A): the dead HOST's two BACKUP
// servers each believe they come first (b and c cannot hear each other, say) and both claim the
// application from the same revision. Two real AppManagers, each with its own store client on one
// store, each running the COMMAND as a real process: exactly one wins the compare-and-swap and
// runs it; the other gets ESTORECONFLICT, reads the winner as HOST with a live lease in the
// store, and stands down (runs nothing, writes nothing). On the embedded store and on a real
// 3-member etcd cluster on loopback.
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AppManager, type AppActivity } from '../../src/cluster/app-manager.js';
import { ClusterStore } from '../../src/cluster/cluster-store.js';
import { EtcdBackend } from '../../src/cluster/etcd-backend.js';
import { FileBackend } from '../../src/cluster/file-backend.js';
import type { StoreBackend } from '../../src/cluster/store-backend.js';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import { startEtcdCluster } from '../lab/etcd-cluster.js';
import { eventually } from '../lab/eventually.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-race-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What one node's agent knows of the LAN: every other node was announced dead (a, the HOST, really is). */
class CutOffView extends EventEmitter<{ event: [DetectorEvent] }> {
  constructor(private readonly others: string[]) {
    super();
  }
  readonly detector = { status: () => this.others.map((node) => ({ node, up: false })) as never };
  announce(): void {
    const at = Date.now();
    for (const node of this.others) this.emit('event', { kind: 'node-down', node, at, lastHeardAt: at - 300 } as DetectorEvent);
  }
}

async function race(round: string, backend: () => StoreBackend): Promise<{ winner: string; conflicts: number }> {
  const setup = new ClusterStore(backend());
  // The COMMAND says it started, then stays (stopped by its manager at the end).
  const ran = path.join(dir, `${round}-ran`);
  await setup.create(
    { tag: 'web', type: 'cluster-capable', primary: 'a', backups: ['b', 'c'], host: 'a', state: 'up', since: Date.now(), command: { load: ['sh', '-c', `echo started >> ${ran}; exec sleep 60`], stopGraceMs: 1000 }, restart: { maxFailures: 0, windowMs: 10_000, backoffMs: 100 } },
    { by: 'test', why: 'a is HOST and dies' },
  );
  await setup.close();
  const nodes = ['b', 'c'] as const;
  const activity: Record<string, AppActivity[]> = { b: [], c: [] };
  const published: ServiceEvent[] = [];
  const stores = nodes.map(() => new ClusterStore(backend()));
  const views = nodes.map((n) => new CutOffView(['a', 'b', 'c'].filter((x) => x !== n)));
  const managers = nodes.map((n, i) => {
    const stateDir = path.join(dir, `${round}-state-${n}`);
    mkdirSync(stateDir); // the agent makes it before its manager starts
    const m = new AppManager({
      node: n, database: 'db', store: stores[i]!, nodeEvents: views[i]!, peers: () => [],
      startGraceMs: 0, hearsMajority: () => true, leaseTtlMs: 1000, stateDir,
      publish: (events) => published.push(...events), stamp: (reason) => ({ incarnation: 1, timestamp: new Date().toISOString(), reason }),
      // No periodic pass: both act on the deaths announced to both at once, on the same revision.
      passMs: 60_000,
    });
    m.on('activity', (a) => activity[n]!.push(a));
    return m;
  });
  try {
    await Promise.all(managers.map((m) => m.start()));
    for (const v of views) v.announce();
    const reader = new ClusterStore(backend());
    try {
      const up = await eventually(async () => {
        const s = await reader.get('web');
        return s?.app.state === 'up' && s.app.host !== 'a' ? s.app : undefined;
      }, 10_000).catch((e: Error) => {
        throw new Error(`${e.message}: ${JSON.stringify({ activity, views: managers.map((m) => m.views()) }, null, 1)}`);
      });
      await new Promise((r) => setTimeout(r, 500)); // time for a loser that did not stand down to start too
      const lines = existsSync(ran) ? readFileSync(ran, 'utf8').split('\n').filter(Boolean) : [];
      const history = (await reader.get('web'))!.history.filter((h) => h.from?.host === 'a' && h.to.host !== 'a');
      const loser = nodes.find((n) => n !== up.host)!;
      const conflicts = activity[loser]!.filter((a) => a.kind === 'failed' && /changed meanwhile \(revision \d+, expected \d+\)/.test(a.error)).length;
      const detail = JSON.stringify({ lines, history, activity }, null, 1);
      // One process ran, the winner's; one failover in the history; the loser started nothing.
      expect(lines, detail).toEqual(['started']);
      expect(managers.map((m) => m.views()[0]?.local), detail).toEqual(nodes.map((n) => (n === up.host ? 'running' : 'stopped')));
      expect(history, detail).toHaveLength(1);
      expect(activity[loser]!.some((a) => a.kind === 'step' && a.step.kind === 'start'), detail).toBe(false);
      expect(published.filter((e) => e.status === 'DOWN' && e.instance === 'web@a'), detail).toHaveLength(1);
      // The loser now waits on the winner's lease: it thinks the winner dead, the store says no.
      expect(managers[nodes.indexOf(loser)]!.views()[0]?.note, detail).toMatch(new RegExp(`^${up.host} is silent on the LAN but its lease in the store is live`));
      return { winner: up.host!, conflicts };
    } finally {
      await reader.close();
    }
  } finally {
    for (const m of managers) await m.stop();
    for (const s of stores) await s.close();
  }
}

/**
 * Races until the compare-and-swap decided one (the loser got ESTORECONFLICT) at least once; in
 * the others the loser read the winner's write before it acted. At least 3, at most 12 races.
 */
async function races(what: string, backend: (i: number) => StoreBackend): Promise<void> {
  const outcomes: Array<{ winner: string; conflicts: number }> = [];
  for (let i = 0; i < 12 && (i < 3 || !outcomes.some((o) => o.conflicts > 0)); i++) outcomes.push(await race(`${what.replace(/\W/g, '')}${i}`, () => backend(i)));
  console.info(`${what}, ${outcomes.length} races: winners ${outcomes.map((o) => o.winner).join(' ')}, conflicts the loser met ${outcomes.map((o) => o.conflicts).join(' ')}`);
  expect(outcomes.some((o) => o.conflicts > 0)).toBe(true);
}

describe('two backups racing to become HOST: one wins, the other stands down', () => {
  it('on the embedded store', async () => {
    await races('file store', (i) => new FileBackend(path.join(dir, `file${i}`, 'store.json')));
  }, 60_000);

  it('on a 3-member etcd cluster', async () => {
    const etcd = await startEtcdCluster();
    try {
      await races('etcd', (i) => new EtcdBackend({ endpoints: etcd.endpoints, callTimeoutMs: 2000, cluster: `race${i}` }));
    } finally {
      await etcd.destroy();
    }
  }, 90_000);
});
