// The cluster manager when a step cannot succeed (found by trying it as an operator would): an
// application registered with an interface this node lacks must not crash the agent and is
// handed on as a missing resource; a step that keeps failing is retried after pauses that grow,
// not on every pass. One manager (node b), the embedded store, real processes.
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AppManager, type AppActivity, type AppManagerOptions } from '../../src/cluster/app-manager.js';
import type { AppObjectInput } from '../../src/cluster/app-object.js';
import { ClusterStore } from '../../src/cluster/cluster-store.js';
import { FileBackend } from '../../src/cluster/file-backend.js';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import { eventually } from '../lab/eventually.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-app-faults-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** b hears nobody: a, the HOST, is not alive in its view. */
class Alone extends EventEmitter<{ event: [DetectorEvent] }> {
  readonly detector = { status: () => [] as never };
}

/** a was HOST (up); b, its backup, runs a manager that sees it dead. */
async function backupOf(name: string, app: Partial<AppObjectInput>, extra: Partial<AppManagerOptions> = {}) {
  const file = path.join(dir, `${name}.json`);
  const setup = new ClusterStore(new FileBackend(file));
  await setup.create({ tag: name, type: 'cluster-capable', primary: 'a', backups: ['b'], host: 'a', state: 'up', since: Date.now(), command: { load: ['sleep', '60'], stopGraceMs: 500 }, ...app }, { by: 'test', why: 'a is HOST' });
  await setup.close();
  const store = new ClusterStore(new FileBackend(file));
  const stateDir = path.join(dir, `${name}-state`);
  mkdirSync(stateDir);
  const activity: AppActivity[] = [];
  const m = new AppManager({
    node: 'b', database: 'db', store, nodeEvents: new Alone(), peers: () => [],
    startGraceMs: 0, hearsMajority: () => true, leaseTtlMs: 1000, stateDir,
    publish: () => {}, stamp: (reason) => ({ incarnation: 1, timestamp: new Date().toISOString(), reason }),
    passMs: 50,
    ...extra,
  });
  m.on('activity', (a) => activity.push(a));
  await m.start();
  return { m, store, activity, close: async () => {
    await m.stop();
    await store.close();
  } };
}

describe('AppManager faults', () => {
  it('an address on an interface this node lacks: no crash; it is a missing resource, named in the history', async () => {
    const b = await backupOf('badif', { address: { address: '198.51.100.7', prefixLength: 32, interface: 'nosuch0' } });
    try {
      const failed = await eventually(async () => {
        const s = await b.store.get('badif');
        return s?.app.state === 'failed' ? s : undefined;
      }, 5000);
      expect(failed.app.host).toBeNull();
      expect(failed.history.at(-1)?.why).toBe('b lacks its resources (interface nosuch0 (for the service address 198.51.100.7) is not on this node), and no other server is alive to take it');
      expect(b.m.views()[0]?.local).toBe('stopped');
    } finally {
      await b.close();
    }
  });

  it('a step that keeps failing (the dead HOST cannot be fenced) is tried again after pauses that double, not on every pass', async () => {
    let fences = 0;
    const b = await backupOf('nofence', {}, {
      fence: async () => {
        fences++;
        throw new Error('the fencing device does not answer');
      },
    });
    try {
      // Passes run every 50 ms; the step is tried at once, then after 500 ms and 1000 ms more.
      await new Promise((r) => setTimeout(r, 2200));
      const failed = b.activity.filter((a) => a.kind === 'failed');
      expect(fences).toBeGreaterThanOrEqual(2);
      expect(fences).toBeLessThanOrEqual(4);
      expect(failed).toHaveLength(fences);
      expect(b.m.views()[0]?.note).toMatch(/^start failed: the fencing device does not answer \(tried again in \d+ ms\)$/);
      expect(b.m.views()[0]?.local).toBe('stopped'); // never started without its fence
    } finally {
      await b.close();
    }
  });
});
