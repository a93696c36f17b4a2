// A clustered application's readiness probe (the object's `ready`): the field's validation (errors
// name it, in the store and in the agent's config), the probe itself on loopback (tcp, command),
// and one AppManager on the embedded store with real processes: an application whose port opens
// late is `up` only then; one that never answers is stopped at `timeoutMs` as a failed start,
// restarted by its policy, and then NOT_RESTARTING, the history saying why. No namespaces.
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, validateConfig } from '../../src/agent/config.js';
import { InstanceMonitor } from '../../src/agent/instance-monitor.js';
import { AppManager, type AppActivity } from '../../src/cluster/app-manager.js';
import { type AppObjectInput, validateApp } from '../../src/cluster/app-object.js';
import { describeProbe, ReadinessWatch } from '../../src/cluster/app-readiness.js';
import { ClusterStore } from '../../src/cluster/cluster-store.js';
import { FileBackend } from '../../src/cluster/file-backend.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import type { DetectorEvent } from '../../src/monitor/failure-detector.js';
import { runCli } from '../cli-process.js';
import { eventually } from '../lab/eventually.js';
import { freePort } from '../free-port.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-ready-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = { tag: 'web', type: 'cluster-capable', command: { load: ['/bin/true'] }, host: 'a', primary: 'a', backups: ['b'], state: 'loading', since: 1 } as const;
const fieldOf = (ready: unknown, over: Partial<AppObjectInput> = {}) => {
  try {
    validateApp({ ...base, ...over, ready });
  } catch (err) {
    return `${(err as { field: string }).field}: ${(err as Error).message}`;
  }
  return 'accepted';
};

describe('the `ready` field', () => {
  it('one probe, tcp or command, with bounds; defaults 60 s and 250 ms; errors name the field', () => {
    expect(validateApp({ ...base, ready: { tcp: 5432 } }).ready).toEqual({ tcp: 5432, timeoutMs: 60_000, intervalMs: 250 });
    expect(validateApp({ ...base, ready: { command: ['pg_isready', '-q'], timeoutMs: 5000, intervalMs: 100 } }).ready).toEqual({ command: ['pg_isready', '-q'], timeoutMs: 5000, intervalMs: 100 });
    expect(validateApp({ ...base }).ready).toBeUndefined(); // default: up once the process runs
    expect(fieldOf({})).toBe('ready: application web: ready: names one probe: tcp (a port) or command (a program and its arguments)');
    expect(fieldOf({ tcp: 1, command: ['x'] })).toMatch(/^ready: .*names one probe/);
    expect(fieldOf({ tcp: 70000 })).toMatch(/^ready\.tcp: /);
    expect(fieldOf({ command: [] })).toMatch(/^ready\.command: /);
    expect(fieldOf({ command: [''] })).toMatch(/^ready\.command: .*program/);
    expect(fieldOf({ tcp: 1, timeoutMs: 10 })).toMatch(/^ready\.timeoutMs: /);
    expect(fieldOf({ tcp: 1, timeoutMs: 1000, intervalMs: 2000 })).toBe('ready.intervalMs: application web: ready.intervalMs: must not exceed timeoutMs (1000)');
    expect(fieldOf({ tcp: 1, port: 2 })).toBe('ready.port: application web: ready.port: unknown field');
    expect(fieldOf('5432')).toMatch(/^ready: /);
    // A cluster-aware application without a COMMAND says itself when it is up (ClusterApp.ready()).
    expect(fieldOf({ tcp: 1 }, { type: 'cluster-aware', command: undefined })).toMatch(/^ready: .*with a COMMAND/);
  });

  it('the agent\'s config `apps` takes it (the same schema as `takeover app register`), errors under apps[i]', () => {
    const config = (ready: unknown) => ({
      cluster: 'c1', node: 'a', database: 'db', key: '0123456789abcdef',
      heartbeat: { links: [{ id: 0, address: '10.0.0.1', port: 7400 }] },
      peers: [{ node: 'b', links: [{ id: 0, address: '10.0.0.2', port: 7400 }] }],
      notify: { port: 7500 },
      store: { file: '/tmp/x.json' },
      apps: [{ tag: 'web', type: 'cluster-capable', primary: 'a', backups: ['b'], command: { load: ['/bin/true'] }, ready }],
    });
    expect(validateConfig(config({ tcp: 80, timeoutMs: 3000 })).apps[0]!.ready).toEqual({ tcp: 80, timeoutMs: 3000, intervalMs: 250 });
    for (const [ready, field] of [[{}, 'apps[0].ready'], [{ tcp: 'x' }, 'apps[0].ready.tcp'], [{ tcp: 80, intervalMs: 5 }, 'apps[0].ready.intervalMs']] as const) {
      let err: unknown;
      try {
        validateConfig(config(ready));
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(ready)).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).field).toBe(field);
    }
  });

  it('`takeover app register` takes it from the spec file; a bad one is refused naming the field (exit 2), nothing registered', async () => {
    const config = path.join(dir, 'register.yaml');
    writeFileSync(config, [
      'cluster: c1', 'node: a', 'database: db', "key: '0123456789abcdef'",
      'heartbeat: { links: [{ id: 0, address: 10.0.0.1, port: 7400 }] }',
      'peers: [{ node: b, links: [{ id: 0, address: 10.0.0.2, port: 7400 }] }]',
      'notify: { port: 7500 }', `store: { file: ${path.join(dir, 'register-store.json')} }`, '',
    ].join('\n'));
    const spec = (ready: string) => {
      const f = path.join(dir, 'spec.yaml');
      writeFileSync(f, `tag: web\ntype: cluster-capable\nprimary: a\nbackups: [b]\ncommand: { load: [/bin/sleep, '60'] }\nready: ${ready}\n`);
      return f;
    };
    const bad = await runCli(['app', 'register', spec('{ tcp: 80, command: [pg_isready] }'), '--config', config]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/application web: ready: names one probe: tcp \(a port\) or command/);
    const good = await runCli(['app', 'register', spec('{ command: [pg_isready, -q], timeoutMs: 120000 }'), '--config', config]);
    expect(good.code, good.stderr).toBe(0);
    const store = new ClusterStore(new FileBackend(path.join(dir, 'register-store.json')));
    try {
      expect((await store.list()).map((x) => x.app.ready)).toEqual([{ command: ['pg_isready', '-q'], timeoutMs: 120_000, intervalMs: 250 }]);
    } finally {
      await store.close();
    }
  });

  it('says what it probes: the service address (127.0.0.1 without one) and port, or the command', () => {
    expect(describeProbe({ ready: { tcp: 80, timeoutMs: 1000, intervalMs: 100 } })).toBe('tcp 127.0.0.1:80');
    expect(describeProbe({ ready: { tcp: 80, timeoutMs: 1000, intervalMs: 100 }, address: { address: '2001:db8::1', prefixLength: 64, interface: 'eth0' } })).toBe('tcp [2001:db8::1]:80');
    expect(describeProbe({ ready: { command: ['pg_isready', '-q'], timeoutMs: 1000, intervalMs: 100 } })).toBe('command pg_isready -q');
  });
});

describe('ReadinessWatch', () => {
  it('tcp: fails while nothing listens (its error kept), passes once the port is open, then stops probing', async () => {
    const port = await freePort();
    const w = ReadinessWatch.of({ ready: { tcp: port, timeoutMs: 5000, intervalMs: 20 } }, 1, Date.now());
    try {
      await eventually(async () => w.lastError, 2000);
      expect(w.lastError).toMatch(/ECONNREFUSED/);
      expect(w.passed).toBe(false);
      let accepted = 0;
      const server = net.createServer((s) => {
        accepted++;
        s.destroy();
      });
      await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
      const ready = new Promise((r) => w.once('ready', () => r(undefined)));
      await ready;
      expect(w.passed).toBe(true);
      expect(w.lastError).toBeUndefined();
      await new Promise((r) => setTimeout(r, 150));
      expect(accepted).toBe(1); // readiness, not liveness: one pass and it is done
      await new Promise((r) => server.close(r));
    } finally {
      w.stop();
    }
  });

  it('command: passes when the program exits 0', async () => {
    const flag = path.join(dir, 'ready-flag');
    const w = ReadinessWatch.of({ ready: { command: ['sh', '-c', `test -e ${flag}`], timeoutMs: 5000, intervalMs: 20 } }, 1, Date.now());
    try {
      await eventually(async () => w.lastError, 2000);
      expect(w.passed).toBe(false);
      mkdirSync(flag);
      await eventually(async () => (w.passed ? true : undefined), 2000);
    } finally {
      w.stop();
    }
  });
});

describe('InstanceMonitor.kill: a failed start, counted by the restart policy', () => {
  it('restarts the command after backoffMs, then NOT_RESTARTING past maxFailures', async () => {
    const stateDir = path.join(dir, 'kill-state');
    mkdirSync(stateDir);
    const m = new InstanceMonitor({ name: 'k@a', node: 'a', command: ['sleep', '30'], restart: { maxFailures: 1, windowMs: 10_000, backoffMs: 50 }, stopGraceMs: 1000, drainMs: 0, ports: [], method: 'rst' }, { stateDir });
    const kinds: string[] = [];
    m.on('event', (e) => kinds.push(e.kind));
    try {
      await m.start();
      await eventually(async () => (m.state === 'up' ? true : undefined), 3000);
      const first = m.pid;
      await m.kill();
      await eventually(async () => (m.state === 'up' && m.pid !== first ? true : undefined), 3000);
      await m.kill();
      await eventually(async () => (m.state === 'not-restarting' ? true : undefined), 3000);
      expect(m.failures).toBe(2);
      expect(kinds.filter((k) => k === 'started')).toHaveLength(2);
    } finally {
      await m.stop();
    }
  });
});

/** A node alone: no peers, nobody to announce. */
class Alone extends EventEmitter<{ event: [DetectorEvent] }> {
  readonly detector = { status: () => [] as never };
}

async function manager(name: string, app: AppObjectInput) {
  const file = path.join(dir, `${name}.json`);
  const setup = new ClusterStore(new FileBackend(file));
  await setup.create(app, { by: 'test', why: 'registered' });
  await setup.close();
  const store = new ClusterStore(new FileBackend(file));
  const stateDir = path.join(dir, `${name}-state`);
  mkdirSync(stateDir);
  const activity: AppActivity[] = [];
  const published: ServiceEvent[] = [];
  const m = new AppManager({
    node: 'a', database: 'db', store, nodeEvents: new Alone(), peers: () => [],
    startGraceMs: 0, hearsMajority: () => true, leaseTtlMs: 1000, stateDir,
    publish: (events) => published.push(...events), stamp: (reason) => ({ incarnation: 1, timestamp: new Date().toISOString(), reason }),
    passMs: 50,
  });
  m.on('activity', (a) => activity.push(a));
  await m.start();
  return { m, store, activity, published, close: async () => {
    await m.stop();
    await store.close();
  } };
}

describe('AppManager with `ready` (one node, the embedded store)', () => {
  it('an application whose port opens 800 ms after its start stays loading until then, then is up (one UP event)', async () => {
    const port = await freePort();
    const t = await manager('late', {
      tag: 'late', type: 'cluster-capable', primary: 'a', host: 'a', state: 'loading', since: Date.now(),
      command: { load: [process.execPath, '-e', `setTimeout(() => require('net').createServer(() => {}).listen(${port}, '127.0.0.1'), 800)`], stopGraceMs: 1000 },
      ready: { tcp: port, timeoutMs: 10_000, intervalMs: 50 },
    });
    try {
      const started = await eventually(async () => {
        for (const a of t.activity) if (a.kind === 'instance' && a.event.kind === 'started') return a.event;
        return undefined;
      }, 5000);
      const startedAt = started.at;
      await new Promise((r) => setTimeout(r, 400));
      expect((await t.store.get('late'))!.app.state).toBe('loading');
      expect(t.m.views()[0]).toMatchObject({ local: 'starting', note: expect.stringMatching(new RegExp(`^not ready yet, \\d+ of 10000 ms after its start \\(tcp 127\\.0\\.0\\.1:${port}: connect ECONNREFUSED`)) });
      expect(t.published.filter((e) => e.status === 'UP')).toEqual([]);
      const up = await eventually(async () => {
        const s = await t.store.get('late');
        return s?.app.state === 'up' ? s : undefined;
      }, 10_000);
      const upAt = up.history.at(-1)!.at;
      await eventually(async () => (t.published.some((e) => e.status === 'UP') ? true : undefined), 2000); // published just after the write
      expect(upAt - startedAt).toBeGreaterThanOrEqual(800);
      expect(up.history.at(-1)!.why).toMatch(new RegExp(`^loaded and ready: tcp 127\\.0\\.0\\.1:${port} passed \\d+ ms after its start$`));
      expect(t.published.filter((e) => e.status === 'UP')).toHaveLength(1);
      expect(t.m.views()[0]).toMatchObject({ local: 'running' });
      console.info(`ready later: up ${Math.round(upAt - startedAt)} ms after the process started (its port opens after 800 ms)`);
    } finally {
      await t.close();
    }
  }, 30_000);

  it('an application that never answers: a failed start at timeoutMs, restarted once (maxFailures 1), then NOT_RESTARTING and failed, the history saying why', async () => {
    const port = await freePort();
    const t = await manager('never', {
      tag: 'never', type: 'cluster-capable', primary: 'a', host: 'a', state: 'loading', since: Date.now(),
      command: { load: ['sleep', '60'], stopGraceMs: 1000 },
      restart: { maxFailures: 1, windowMs: 30_000, backoffMs: 100 },
      ready: { tcp: port, timeoutMs: 600, intervalMs: 50 },
    });
    try {
      const failed = await eventually(async () => {
        const s = await t.store.get('never');
        return s?.app.state === 'failed' ? s : undefined;
      }, 15_000);
      const steps = t.activity.filter((a) => a.kind === 'step').map((a) => (a as Extract<AppActivity, { kind: 'step' }>).step);
      expect(steps.filter((s) => s.kind === 'fail-start')).toHaveLength(2);
      expect(steps.find((s) => s.kind === 'fail-start')).toMatchObject({ why: expect.stringMatching(new RegExp(`^not ready 600 ms after its start \\(tcp 127\\.0\\.0\\.1:${port}: connect ECONNREFUSED`)) });
      expect(t.activity.filter((a) => a.kind === 'instance' && a.event.kind === 'started')).toHaveLength(2);
      expect(failed.history.some((h) => h.to.state === 'up')).toBe(false);
      expect(failed.history.at(-1)!.why).toMatch(/^it could not be kept running on a \(not ready 600 ms after its start \(tcp 127\.0\.0\.1:\d+: connect ECONNREFUSED .*\)\), and no other server is alive to take it$/);
      await eventually(async () => (t.published.length >= 2 ? true : undefined), 2000); // published just after the write
      expect(t.published.map((e) => e.status)).toEqual(['COMING_UP', 'NOT_RESTARTING']);
    } finally {
      await t.close();
    }
  }, 30_000);
});
