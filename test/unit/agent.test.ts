// The agent on loopback, with instances it starts itself: events published from the process
// monitor (crash loop up to NOT_RESTARTING), planned service stop/start through the real CLI and
// the control socket, status, FAN lines on the endpoint, and nothing left running after stop().
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { CLI, runCli } from '../cli-process.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/agent/config.js';
import { readUptimeLog, summarizeUptime } from '../../src/agent/uptime-log.js';
import { parseFan } from '../../src/events/fan-line.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import { subscribe } from '../../src/events/subscribe.js';
import { PR_TYPE } from '../../src/fence/fencer.js';
import { ModelLun, ReservationConflict } from './pr-model.js';
import { processAlive as alive } from '../../src/lab/lab.js';
import { testPort } from '../free-port.js';



const cli = (args: string[]) => runCli(args).then((r) => ({ ...r, stderr: r.stderr.trim() }));

let dir: string;
let agent: Agent | undefined;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-agent-'));
});
afterEach(async () => {
  await agent?.stop();
  agent = undefined;
  rmSync(dir, { recursive: true, force: true });
});

function config(instance: Record<string, unknown>) {
  return validateConfig({
    cluster: 'unit',
    node: 'a',
    database: 'db',
    key: 'a key of sixteen+ bytes',
    control: path.join(dir, 'a.sock'),
    heartbeat: { intervalMs: 100, links: [{ id: 0, address: '127.0.0.1', port: testPort(2) }] },
    notify: { host: '127.0.0.1', port: 0 },
    instances: [{ name: 'i1', node: 'a', ...instance }],
    services: [{ name: 'sales', members: ['i1'] }, { name: 'hr', members: ['i1'] }],
    uptimeLog: path.join(dir, 'uptime.jsonl'),
  });
}

async function started(c: ReturnType<typeof config>) {
  agent = await Agent.create(c);
  const published: ServiceEvent[] = [];
  agent.on('published', (e) => published.push(e));
  await agent.start();
  return { agent, published };
}

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const brief = (e: ServiceEvent) => `${e.type} ${e.status} ${e.reason}${e.service && e.type !== 'instance' ? ` ${e.service}` : ''}`;

describe('agent', () => {
  it('a crash loop: DOWN (with the exit code) and UP per restart, service UP after each service DOWN, then NOT_RESTARTING; status says so; cleanup is the way out', async () => {
    const mark = path.join(dir, 'fixed');
    const cmd = ['sh', '-c', `echo "web: cannot bind: port in use" >&2; sleep 0.1; test -f ${mark} || exit 3; exec sleep 600`];
    const { agent, published } = await started(config({ command: cmd, restart: { maxFailures: 2, windowMs: 10_000, backoffMs: 50 } }));
    const ac = new AbortController();
    const seen: ServiceEvent[] = [];
    const sub = (async () => {
      for await (const e of subscribe({ agents: [{ host: '127.0.0.1', port: agent.notifyPort }], signal: ac.signal })) seen.push(e);
    })();
    await until(() => published.some((e) => e.status === 'NOT_RESTARTING') && seen.some((e) => e.status === 'NOT_RESTARTING'));
    ac.abort();
    await sub;
    // Every DOWN gets its UP: a service starts DOWN (a snapshot before its first member shows
    // it so), and the service DOWN of each failure is followed by a service UP.
    const boot = ['instance UP boot', 'service_member UP boot sales', 'service UP boot sales', 'service_member UP boot hr', 'service UP boot hr'];
    const again = boot;
    const down = ['instance DOWN failure', 'service_member DOWN failure sales', 'service DOWN failure sales', 'service_member DOWN failure hr', 'service DOWN failure hr'];
    expect(published.map(brief)).toEqual([...boot, ...down, ...again, ...down, ...again, ...down, 'service_member NOT_RESTARTING failure sales', 'service_member NOT_RESTARTING failure hr']);
    expect(published.filter((e) => e.type === 'instance' && e.status === 'DOWN').map((e) => [e.exitCode, e.signal])).toEqual([[3, undefined], [3, undefined], [3, undefined]]);
    // Incarnations increase, so a subscriber keeps every one of them.
    expect(seen.filter((e) => e.status === 'NOT_RESTARTING')).toHaveLength(2);
    // The truth: no pid (nothing runs), how it last ended and what it said.
    await until(() => agent.status().instances[0]!.lastExit?.stderr.length === 1);
    const status = agent.status().instances[0]!;
    expect(status).not.toHaveProperty('pid');
    expect(status).toMatchObject({ name: 'i1', state: 'not-restarting', since: expect.any(Number), failures: 3, lastExit: { pid: expect.any(Number), code: 3, signal: null, at: expect.any(Number), planned: false, stderr: ['web: cannot bind: port in use'] } });

    const sock = path.join(dir, 'a.sock');
    const refused = await cli(['service', 'start', 'sales', '--control', sock]);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    expect(refused.stderr).toBe('takeover: instance i1 is not-restarting (more than 2 failures within 10000 ms; last exit code 3: web: cannot bind: port in use): `takeover instance cleanup i1` resets its failure count and starts it');
    expect(published.at(-1)!.status).toBe('NOT_RESTARTING'); // refused: nothing published
    writeFileSync(mark, '');
    const n = published.length;
    const cleanup = await cli(['instance', 'cleanup', 'i1', '--control', sock]);
    expect(cleanup.code).toBe(0);
    const upAgain = ['instance UP user', 'service_member UP user sales', 'service UP user sales', 'service_member UP user hr', 'service UP user hr'];
    expect(cleanup.stdout.trim().split('\n').map((l) => brief(parseFan(l)))).toEqual(upAgain);
    expect(published.slice(n).map(brief)).toEqual(upAgain);
    expect(cleanup.stderr).toMatch(/^instance i1: i1: failure count reset; started \(pid \d+\)$/);
    expect(agent.status().instances[0]).toMatchObject({ state: 'up', pid: expect.any(Number), failures: 0 });
    // Two refused commands (they change nothing): one CLI process each, at once.
    const [unknown, reset] = await Promise.all([cli(['instance', 'cleanup', 'i9', '--control', sock]), cli(['instance', 'reset', 'i1', '--control', sock])]);
    expect([unknown.code, unknown.stderr]).toEqual([2, 'takeover: unknown instance i9']);
    expect(reset.stderr).toBe('takeover: instance: the action must be cleanup, got "reset"');
  });

  it('service stop|start through the CLI: an instance still offering another service keeps running; its last service stopped stops it (instance DOWN), start starts it (instance UP, service UP); status and events through the control socket', async () => {
    const { agent, published } = await started(config({ command: ['sleep', '600'] }));
    await until(() => published.length === 5);
    const pid = agent.status().instances[0]!.pid!;
    const sock = path.join(dir, 'a.sock');
    const stop = await cli(['service', 'stop', 'sales', '--control', sock]);
    expect(stop.code).toBe(0);
    expect(stop.stdout.trim().split('\n').map((l) => brief(parseFan(l)))).toEqual(['service_member GOING_DOWN user sales', 'service_member DOWN user sales', 'service DOWN user sales']);
    expect(stop.stderr).toBe('service sales: i1: still offers hr here: not drained, kept running');
    expect(alive(pid)).toBe(true);
    const again = await cli(['service', 'stop', 'sales', '--control', sock]);
    expect([again.code, again.stdout, again.stderr]).toEqual([0, '', 'service sales: i1: already stopped here']);

    const stopHr = await cli(['service', 'stop', 'hr', '--control', sock]);
    expect(stopHr.code).toBe(0);
    const stopped = stopHr.stdout.trim().split('\n').map((l) => parseFan(l));
    expect(stopped.map(brief)).toEqual(['service_member GOING_DOWN user hr', 'instance DOWN user', 'service_member DOWN user hr', 'service DOWN user hr']);
    expect(stopped[1]).toMatchObject({ signal: 'SIGTERM', cardinality: 0 });
    expect(stopHr.stderr).toBe('service hr: i1: not drained (no ports configured: nothing to count); stopped (killed by SIGTERM)');
    expect(alive(pid)).toBe(false);
    const down = JSON.parse((await cli(['status', '--json', '--control', sock])).stdout);
    expect(down.instances).toEqual([{ name: 'i1', state: 'stopped', since: expect.any(Number), failures: 0, lastExit: expect.objectContaining({ pid, signal: 'SIGTERM', planned: true }) }]);

    const start = await cli(['service', 'start', 'sales', '--control', sock, '--json']);
    expect(start.code).toBe(0);
    const report = JSON.parse(start.stdout) as { events: ServiceEvent[]; instances: Array<{ instance: string; note: string; state: string }>; ok: boolean };
    expect(report.events.map(brief)).toEqual(['service_member COMING_UP user sales', 'instance UP user', 'service_member UP user sales', 'service UP user sales']);
    expect(report).toMatchObject({ ok: true, instances: [{ instance: 'i1', note: expect.stringMatching(/^started \(pid \d+\)$/), state: 'up' }] });
    const startHr = await cli(['service', 'start', 'hr', '--control', sock]);
    expect(startHr.stdout.trim().split('\n').map((l) => brief(parseFan(l)))).toEqual(['service_member COMING_UP user hr', 'service_member UP user hr', 'service UP user hr']);
    expect(published.at(-2)).toMatchObject({ type: 'service_member', cardinality: 1 });
    expect((await cli(['service', 'start', 'hr', '--control', sock])).stderr).toBe('service hr: i1: already started here');

    // Queries and refused commands from here on: none changes the agent, so their CLI processes
    // (one per command) run at once.
    const [statusJson, statusText, events, bad, pause, drainOnStart, drainSoon, badFilter, gone] = await Promise.all([
      cli(['status', '--json', '--control', sock]),
      cli(['status', '--control', sock]),
      cli(['events', '--control', sock, '--format', 'fan', '--filter', 'service=sales']),
      cli(['service', 'stop', 'payroll', '--control', sock]),
      cli(['service', 'pause', 'sales', '--control', sock]),
      cli(['service', 'start', 'sales', '--drain-ms', '5', '--control', sock]),
      cli(['service', 'stop', 'sales', '--drain-ms', 'soon', '--control', sock]),
      cli(['events', '--control', sock, '--filter', 'colour=red']),
      cli(['status', '--control', path.join(dir, 'none.sock')]),
    ]);
    const status = JSON.parse(statusJson.stdout);
    expect(status).toMatchObject({ node: 'a', instances: [{ name: 'i1', state: 'up' }], services: [{ name: 'sales', members: [{ instance: 'i1', up: true }] }, { name: 'hr' }] });
    expect(status.instances[0].pid).not.toBe(pid);
    expect(statusText.stdout).toMatch(/INSTANCE\s+STATE\s+PID\s+SINCE\s+FAILURES\s+LAST EXIT\ni1\s+up\s+\d+\s+\S+Z\s+0\s+killed by SIGTERM \(stopped by the agent\) at /);
    // The instance event names the database's default service (db), so the filter leaves it out.
    expect(events.stdout.trim().split('\n').map((l) => brief(parseFan(l)))).toEqual([
      'service_member UP boot sales', 'service UP boot sales', 'service_member GOING_DOWN user sales', 'service_member DOWN user sales', 'service DOWN user sales', 'service_member COMING_UP user sales', 'service_member UP user sales', 'service UP user sales',
    ]);

    expect([bad.code, bad.stderr]).toEqual([2, 'takeover: unknown service payroll']);
    expect(pause.stderr).toBe('takeover: service: the action must be stop or start, got "pause"');
    expect(drainOnStart.stderr).toBe('takeover: --drain-ms: only for service stop');
    expect(drainSoon.stderr).toBe('takeover: --drain-ms must be an integer from 0 to 86400000, got "soon"');
    expect(badFilter.code).toBe(2);
    expect([gone.code, gone.stderr]).toEqual([1, expect.stringContaining('is `takeover agent` running?')]);
    // The uptime log keeps the planned downtime apart.
    await until(() => existsSync(path.join(dir, 'uptime.jsonl')));
    const records = await readUptimeLog(path.join(dir, 'uptime.jsonl'));
    expect(records.filter((r) => r.planned).map((r) => `${r.type} ${r.status}`)).toEqual([
      'service_member GOING_DOWN', 'service_member DOWN', 'service DOWN', 'service_member GOING_DOWN', 'instance DOWN', 'service_member DOWN', 'service DOWN',
      'service_member COMING_UP', 'instance UP', 'service_member UP', 'service UP', 'service_member COMING_UP', 'service_member UP', 'service UP',
    ]);
    const sales = summarizeUptime(records).get('service_member:sales/i1@a')!;
    expect(sales.unplannedMs).toBe(0);
    expect(sales.plannedMs).toBeGreaterThan(0);
  });

  it('an instance watched by pid: service stop drains it and takes it out but does not kill it; its exit afterwards is the planned DOWN; start and cleanup cannot bring a gone pid back', async () => {
    const server = spawn('sleep', ['600'], { stdio: 'ignore' });
    await new Promise((r) => server.once('spawn', r));
    try {
      const { agent, published } = await started(config({ pid: server.pid }));
      await until(() => published.length === 5);
      const sock = path.join(dir, 'a.sock');
      await agent.serviceChange('sales', 'stop');
      const stop = await cli(['service', 'stop', 'hr', '--control', sock]);
      expect(stop.code).toBe(0);
      expect(stop.stdout.trim().split('\n').map((l) => brief(parseFan(l)))).toEqual(['service_member GOING_DOWN user hr', 'service_member DOWN user hr', 'service DOWN user hr']);
      expect(stop.stderr).toBe(`service hr: i1: not drained (no ports configured: nothing to count); watched by pid ${server.pid}: not stopped (the agent stops only the processes it runs): stop it yourself`);
      expect(alive(server.pid!)).toBe(true);
      const n = published.length;
      server.kill('SIGTERM'); // the operator stops it after the drain
      await until(() => published.length > n);
      await new Promise((r) => setTimeout(r, 100));
      expect(published.slice(n).map(brief)).toEqual(['instance DOWN user']); // planned: no member DOWN again, no failure
      const start = await cli(['service', 'start', 'sales', '--control', sock]);
      const gone = `takeover: instance i1 is down: its process (pid ${server.pid}) is gone, and the agent does not start it (a pid is not found again: give the new one and restart the agent, or use pidFile)`;
      expect([start.code, start.stderr]).toEqual([2, gone]);
      expect((await cli(['instance', 'cleanup', 'i1', '--control', sock])).stderr).toBe(gone);
      expect(published).toHaveLength(n + 1); // refused: nothing published
    } finally {
      server.kill('SIGKILL');
    }
  });

  it('a drain waits for the clients on the instance\'s ports; the agent stopping cuts it short', async () => {
    const server = net.createServer((c) => c.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const client = net.connect(port, '127.0.0.1');
    try {
      await new Promise((r) => client.once('connect', r));
      const { agent: a, published } = await started(config({ command: ['sleep', '600'], ports: [port] }));
      await until(() => published.length === 5);
      await a.serviceChange('sales', 'stop');
      const stopping = a.serviceChange('hr', 'stop');
      const failed = stopping.then(() => 'done', (err: Error) => err.message);
      await until(() => published.some((e) => e.status === 'GOING_DOWN' && e.service === 'hr'));
      await new Promise((r) => setTimeout(r, 300));
      expect(published.some((e) => e.status === 'DOWN' && e.service === 'hr')).toBe(false); // still draining
      const t0 = performance.now();
      await a.stop();
      agent = undefined;
      expect(await failed).toBe('the agent is stopping: the drain of i1 was cut short with 1 connection(s) left');
      expect(performance.now() - t0).toBeLessThan(3000); // not the 30 s drain time
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('a subscriber that asks for FAN gets FAN lines; stop() leaves no process, socket or port behind', async () => {
    const { agent: a, published } = await started(config({ command: ['sleep', '600'] }));
    await until(() => published.length === 5);
    const pid = a.status().instances[0]!.pid!;
    const s = net.connect({ host: '127.0.0.1', port: a.notifyPort });
    const lines: string[] = [];
    createInterface({ input: s }).on('line', (l) => lines.push(l));
    await new Promise((r) => s.once('connect', r));
    s.write('{"format":"fan"}\n');
    await new Promise((r) => setTimeout(r, 50));
    await a.serviceChange('hr', 'stop');
    // After the state (JSON, then again in FAN once asked: see agent-snapshot.test.ts), the live events.
    const live = () => lines.filter((l) => !l.startsWith('{') && !l.endsWith(' snapshot=true'));
    await until(() => live().length === 3);
    expect(live().map((l) => brief(parseFan(l)))).toEqual(['service_member GOING_DOWN user hr', 'service_member DOWN user hr', 'service DOWN user hr']);
    s.destroy();
    const port = a.notifyPort;
    await a.stop();
    agent = undefined;
    expect(() => process.kill(pid, 0)).toThrow(); // the instance it started is stopped
    expect(existsSync(path.join(dir, 'a.sock'))).toBe(false);
    await new Promise<void>((resolve, reject) => {
      const probe = net.connect({ host: '127.0.0.1', port });
      probe.once('connect', () => reject(new Error('the notification port is still open')));
      probe.once('error', () => resolve());
    });
  });

  it('with a witness, a peer whose heartbeats stop is dead only once the witness agrees', async () => {
    const port = () => testPort(2);
    const [pa, pb] = [port(), port() + 1];
    const node = (self: string, me: number, peer: string, them: number) =>
      validateConfig({
        cluster: 'unit', node: self, database: 'db', key: 'a key of sixteen+ bytes', control: path.join(dir, `${self}.sock`),
        heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: me }] },
        peers: [{ node: peer, links: [{ id: 0, address: '127.0.0.1', port: them }] }],
        notify: { host: '127.0.0.1', port: 0 },
      });
    let diskSaysDead = false;
    const b = await Agent.create(node('b', pb, 'a', pa), { witnesses: [{ name: 'disk', confirmsDown: () => diskSaysDead }] });
    const a = await Agent.create(node('a', pa, 'b', pb));
    const published: ServiceEvent[] = [];
    const disputed: string[] = [];
    b.on('published', (e) => published.push(e));
    b.on('disputed', (d) => disputed.push(`${d.node}:${d.witness}`));
    try {
      await b.start();
      await a.start();
      await until(() => published.some((e) => e.type === 'node' && e.status === 'UP'));
      a.heartbeat.stop(); // a falls silent without a goodbye (a stop() would be a planned departure)
      await until(() => disputed.length === 1);
      await new Promise((r) => setTimeout(r, 300));
      expect(published.filter((e) => e.status === 'DOWN')).toEqual([]);
      diskSaysDead = true;
      await until(() => published.some((e) => e.type === 'node' && e.status === 'DOWN'));
      expect(disputed).toEqual(['a:disk']);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('fencing: a peer that only looks dead is fenced off the shared disk; it notices, stops the instance it runs, and publishes its DOWN', async () => {
    const port = () => testPort(2);
    const [pa, pb] = [port(), port() + 1];
    const lun = new ModelLun();
    const node = (self: string, me: number, peer: string, them: number, extra: Record<string, unknown> = {}) =>
      validateConfig({
        cluster: 'unit', node: self, database: 'db', key: 'a key of sixteen+ bytes', control: path.join(dir, `${self}.sock`),
        heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: me }] },
        peers: [{ node: peer, links: [{ id: 0, address: '127.0.0.1', port: them }] }],
        notify: { host: '127.0.0.1', port: 0 },
        fencing: { devices: ['/dev/shared'], checkMs: 50 },
        ...extra,
      });
    const opened: string[] = [];
    const open = (self: string) => (p: string) => (opened.push(`${self}:${p}`), { device: lun.nexus(self, `${p} via ${self}`), close: () => opened.push(`${self}:closed`) });
    const a = await Agent.create(node('a', pa, 'b', pb, { instances: [{ name: 'db-a', node: 'a', command: ['sleep', '1000'] }], services: [{ name: 'sales', members: ['db-a'] }] }), { openFenceDevice: open('a') });
    const b = await Agent.create(node('b', pb, 'a', pa), { openFenceDevice: open('b') });
    const fences: Array<{ node: string; ok: boolean; outcome?: string }> = [];
    const fencedA: string[] = [];
    const publishedA: ServiceEvent[] = [];
    b.on('fence', (f) => fences.push({ node: f.node, ok: f.ok, outcome: f.devices[0]?.outcome }));
    a.on('fenced', (f) => fencedA.push(f.device));
    a.on('published', (e) => publishedA.push(e));
    try {
      await b.start();
      await a.start();
      expect([...lun.registrations.keys()].sort()).toEqual(['a', 'b']);
      expect(lun.reservation?.type).toBe(PR_TYPE.writeExclusiveRegistrantsOnly);
      await until(() => a.status().instances[0]?.state === 'up' && b.status().peers[0]?.up === true);
      const pid = a.status().instances[0]!.pid!;
      a.heartbeat.stop(); // a goes silent on the LAN but goes on running: it only looks dead
      await until(() => fences.length === 1);
      expect(fences).toEqual([{ node: 'a', ok: true, outcome: 'fenced' }]);
      expect([...lun.registrations.keys()]).toEqual(['b']);
      expect(() => lun.nexus('a').write()).toThrow(ReservationConflict);
      await until(() => fencedA.length === 1 && publishedA.some((e) => e.type === 'instance' && e.status === 'DOWN'));
      expect(fencedA).toEqual(['/dev/shared via a']);
      await until(() => !alive(pid));
      expect(a.status().fencing).toMatchObject({ devices: ['/dev/shared'], fencedAt: expect.any(Number) });
      expect(b.status().fencing?.lastFence).toMatchObject({ node: 'a', ok: true });
    } finally {
      await a.stop();
      await b.stop();
    }
    expect(opened.sort()).toEqual(['a:/dev/shared', 'a:closed', 'b:/dev/shared', 'b:closed']);
  });

  it('fencing: a node that cannot join a device does not start; a config cannot use the disk heartbeat LUN for fencing', async () => {
    const c = validateConfig({
      cluster: 'unit', node: 'a', database: 'db', key: 'a key of sixteen+ bytes', control: path.join(dir, 'a.sock'),
      heartbeat: { intervalMs: 50, links: [{ id: 0, address: '127.0.0.1', port: testPort(2) }] },
      notify: { host: '127.0.0.1', port: 0 }, fencing: { devices: ['/dev/x', '/dev/y'] },
    });
    const lun = new ModelLun();
    lun.failNext = { nexus: 'a', op: 'registerAndIgnore', error: new Error('CHECK CONDITION: NOT READY') };
    let closed = 0;
    const a = await Agent.create(c, { openFenceDevice: (p) => ({ device: p === '/dev/y' ? lun.nexus('a', p) : new ModelLun().nexus('a', p), close: () => closed++ }) });
    await expect(a.start()).rejects.toThrow(/fencing: cannot join \/dev\/y \(CHECK CONDITION: NOT READY\)/);
    expect(closed).toBe(2);
    expect(() => validateConfig({ ...c, control: undefined, fencing: { devices: ['/dev/sdb'] }, disk: { device: '/dev/sdb', pulse: true } })).toThrow(/fencing\.devices\[0\]: \/dev\/sdb is the disk heartbeat's device/);
  });

  it('takeover agent --config runs until SIGTERM, logs JSON lines, and stops what it started', async () => {
    const file = path.join(dir, 'agent.yaml');
    const hb = testPort(2);
    writeFileSync(file, [
      'cluster: c', 'node: solo', 'database: d', 'key: 0123456789abcdef',
      `control: ${path.join(dir, 'solo.sock')}`,
      `heartbeat: { links: [{ id: 0, address: 127.0.0.1, port: ${hb} }] }`,
      'notify: { host: 127.0.0.1, port: 0 }',
      'instances: [{ name: i1, node: solo, command: [sleep, "600"] }]',
      'services: [{ name: s1, members: [i1] }]',
    ].join('\n'));
    const child = spawn(process.execPath, [CLI, 'agent', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: Array<Record<string, any>> = [];
    createInterface({ input: child.stdout }).on('line', (l) => logs.push(JSON.parse(l)));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      await until(() => logs.some((l) => l.msg === 'published' && l.event.type === 'service_member'), 15_000);
      expect(logs.find((l) => l.msg === 'agent started')).toMatchObject({ node: 'solo', notifyPort: expect.any(Number) });
      const status = JSON.parse((await cli(['status', '--json', '--config', file])).stdout);
      const pid = status.instances[0].pid as number;
      expect(() => process.kill(pid, 0)).not.toThrow();
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(logs.at(-1)!.msg).toBe('agent stopped');
      expect(() => process.kill(pid, 0)).toThrow();
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('takeover agent with a bad config: exit 2 and the field named; a pid that does not exist fails the start', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'cluster: c\nnode: a\ndatabase: d\nkey: 0123456789abcdef\nheartbeat: { links: [{ id: 0, address: 127.0.0.1, port: 7400 }] }\nnotify: { port: 99999 }\n');
    const r = await cli(['agent', '--config', file]);
    expect([r.code, r.stderr]).toEqual([2, `takeover: ${file}: notify.port: Too big: expected number to be <=65535`]);
    expect((await cli(['agent', '--check', '--config', file])).code).toBe(2);
    writeFileSync(file, readFileSync(file, 'utf8').replace('99999', '7500'));
    const ok = await cli(['agent', '--check', '--config', file]);
    expect(ok.code).toBe(0);
    expect(ok.stdout.split('\n').slice(0, 3)).toEqual([
      `${file}: valid: node a of cluster c, 0 peer(s), instances here: none, 0 service(s)`,
      `${file}: host-specific, checked on this host only:`,
      '  heartbeat.links[0].address: 127.0.0.1 is an address of this host',
    ]);
    const a = await Agent.create(config({ pid: 2 ** 22 + 7 }));
    await expect(a.start()).rejects.toMatchObject({ code: 'ESRCH' });
    expect(existsSync(path.join(dir, 'a.sock'))).toBe(false); // a failed start undoes itself
  });
});
