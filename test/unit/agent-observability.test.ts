// What an SRE sees of the agent: `GET /metrics` of a real `takeover agent` process (heartbeat
// counts that rise, forged and malformed datagrams counted by reason, callouts by result, a
// peer's death with its detection time, an instance's exit), `takeover status` (text and JSON:
// down since, why, the last DOWN), the log level, and, with Agent objects, a witness's dispute
// and a failed fence in status and metrics. All on loopback.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/agent/config.js';
import { encodeHeartbeat } from '../../src/monitor/heartbeat-packet.js';
import { HeartbeatAgent } from '../../src/monitor/heartbeat-agent.js';
import { kernelExpirySlackMs, LEASE_MARGIN_MS } from '../../src/agent/address-lease.js';
import type { TakeoverWaiting } from '../../src/agent/peer-takeover.js';
import { processAlive } from '../../src/lab/lab.js';
import { CLI, runCli } from '../cli-process.js';
import { parseExposition } from '../metrics-scrape.js';
import { ModelLun } from './pr-model.js';
import { testPort } from '../free-port.js';

const KEY = 'a key of sixteen+ bytes';
let dir: string;
const children: ChildProcess[] = [];
const pids: number[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-observe-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
    }
  }
  for (const pid of pids.splice(0)) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const randomPort = () => testPort(2);

async function until<T>(what: string, cond: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`${what}: not in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

type LogLine = Record<string, any>;

/** `takeover agent --config FILE [args]` as a process; its JSON log lines collected. */
function startAgent(name: string, config: Record<string, unknown>, args: string[] = []) {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, [CLI, 'agent', '--config', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const logs: LogLine[] = [];
  let stderr = '';
  createInterface({ input: child.stdout! }).on('line', (l) => logs.push(JSON.parse(l) as LogLine));
  child.stderr!.on('data', (d) => (stderr += d));
  return { child, file, logs, stderr: () => stderr };
}

async function scrape(port: number, pathname = '/metrics') {
  const res = await fetch(`http://127.0.0.1:${port}${pathname}`);
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

const metrics = async (port: number) => {
  const r = await scrape(port);
  expect(r.status).toBe(200);
  return parseExposition(r.text);
};

const ISO = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \([\d.]+ (?:ms|s|min \d+ s) ago\)`;

describe('the agent as an SRE sees it', () => {
  it('GET /metrics of a running agent: heartbeats rise, rejections by reason, callouts by result, a peer\'s death and an instance\'s exit; status says since when and why', async () => {
    const [pa, pb] = [randomPort(), randomPort() + 1];
    const link = (port: number) => [{ id: 0, address: '127.0.0.1', port }];
    const calloutDir = path.join(dir, 'callouts');
    mkdirSync(calloutDir);
    for (const [file, body] of [['ok.sh', 'exit 0'], ['fail.sh', 'exit 3'], ['slow.sh', 'exec sleep 5']]) {
      writeFileSync(path.join(calloutDir, file!), `#!/bin/sh\n${body}\n`);
      chmodSync(path.join(calloutDir, file!), 0o755);
    }
    const common = { cluster: 'c', database: 'db', key: KEY, notify: { host: '127.0.0.1', port: 0 }, quorum: { twoNode: true } };
    const a = startAgent('a', { ...common, node: 'a', incarnation: 5, control: path.join(dir, 'a.sock'), heartbeat: { intervalMs: 100, misses: 3, links: link(pa) }, peers: [{ node: 'b', links: link(pb) }] });
    const b = startAgent('b', {
      ...common, node: 'b', control: path.join(dir, 'b.sock'),
      heartbeat: { intervalMs: 100, misses: 3, links: link(pb) }, peers: [{ node: 'a', links: link(pa) }],
      instances: [{ name: 'i1', node: 'b', command: ['sleep', '600'] }], services: [{ name: 's1', members: ['i1'] }],
      callouts: { dir: calloutDir, timeoutMs: 300, maxParallel: 8 },
      metrics: { host: '127.0.0.1', port: 0 },
    });
    const started = await until('b started', () => b.logs.find((l) => l.msg === 'agent started'), 20_000);
    const port = started.metricsPort as number;
    expect(port).toBeGreaterThan(0);
    expect(a.logs.find((l) => l.msg === 'agent started')?.metricsPort).toBeUndefined(); // opt-in

    // The endpoint: the exposition format, and nothing but /metrics.
    const first = await scrape(port);
    expect([first.status, first.type]).toEqual([200, 'text/plain; version=0.0.4; charset=utf-8']);
    expect((await scrape(port, '/')).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(405);
    const m0 = parseExposition(first.text);
    expect(m0.type('takeover_heartbeats_received_total')).toBe('counter');
    expect(m0.get('takeover_agent_info', { cluster: 'c', node: 'b', incarnation: m0.samples.find((s) => s.name === 'takeover_agent_info')!.labels.incarnation! })).toBe(1);
    expect(m0.get('nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0); // the process's own metrics
    // Features not configured here have no metrics (rather than a 0 that says nothing).
    for (const name of ['takeover_fenced', 'takeover_disk_pulses_total', 'takeover_disk_sample_failures_total']) expect(m0.get(name), name).toBeUndefined();
    expect(m0.get('takeover_callouts_dropped_total')).toBe(0);

    // Heartbeats both ways, counted per peer and link, and rising.
    const m1 = await until('heartbeats from a', async () => {
      const m = await metrics(port);
      return (m.get('takeover_heartbeats_received_total', { peer: 'a', link: 0 }) ?? 0) > 0 ? m : undefined;
    });
    await new Promise((r) => setTimeout(r, 600));
    const m2 = await metrics(port);
    for (const name of ['takeover_heartbeats_sent_total', 'takeover_heartbeats_received_total']) {
      expect(m2.get(name, { peer: 'a', link: 0 })! - m1.get(name, { peer: 'a', link: 0 })!, name).toBeGreaterThanOrEqual(4); // 600 ms at 100 ms
    }
    expect(m2.get('takeover_peer_up', { peer: 'a' })).toBe(1);
    expect(m2.get('takeover_peer_link_up', { peer: 'a', link: 0 })).toBe(1);
    expect(m2.get('takeover_peer_heartbeat_age_seconds', { peer: 'a', link: 0 })).toBeLessThan(0.3);
    expect(m2.get('takeover_instance_state', { instance: 'i1', state: 'up' })).toBe(1);
    expect(m2.get('takeover_instance_state', { instance: 'i1', state: 'down' })).toBe(0);
    expect(m2.get('takeover_service_members_up', { service: 's1' })).toBe(1);
    expect(m2.get('takeover_events_published_total', { type: 'node', status: 'UP' })).toBe(1);
    expect(m2.get('takeover_heartbeats_rejected_total', { peer: 'a', link: 0, reason: 'hmac' })).toBeUndefined();

    // Datagrams that are not a's heartbeats: counted by reason, under the peer they name.
    const sock = dgram.createSocket('udp4');
    // a's incarnation as it took it (persisted: at least its configured floor, usually the time).
    const incA = BigInt(a.logs.find((l) => l.msg === 'agent started')!.incarnation as number);
    const send = (msg: Buffer) => new Promise<void>((resolve, reject) => sock.send(msg, pb, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    const hb = (over: { node?: string; link?: number; incarnation?: bigint; seq?: bigint }, key = KEY) =>
      encodeHeartbeat({ node: 'a', link: 0, incarnation: incA, seq: 1n, sentAtMs: Date.now(), ...over }, Buffer.from(key));
    await send(hb({ seq: 1n << 40n }, 'not the cluster key at all')); // a wrong key
    await send(hb({ seq: 1n << 40n }, 'not the cluster key at all'));
    await send(hb({ node: 'stranger' }, 'not the cluster key at all'));
    await send(Buffer.from('garbage'));
    await send(hb({ link: 1 })); // signed, but for another link than the one it came in on
    await send(hb({ seq: 1n })); // signed, an old sequence number of a's current life: a replay
    await send(hb({ incarnation: incA - 1n, seq: 1n << 40n })); // signed, from an older life of a
    sock.close();
    const rejected = (peer: string, reason: string) => ({ peer, link: 0, reason });
    const m3 = await until('the datagrams counted', async () => {
      const m = await metrics(port);
      return m.get('takeover_heartbeats_rejected_total', rejected('a', 'stale-incarnation')) === 1 ? m : undefined;
    });
    expect(m3.get('takeover_heartbeats_rejected_total', rejected('a', 'hmac'))).toBe(2);
    expect(m3.get('takeover_heartbeats_rejected_total', rejected('', 'hmac'))).toBe(1); // not a configured peer
    expect(m3.get('takeover_heartbeats_rejected_total', rejected('', 'short'))).toBe(1);
    expect(m3.get('takeover_heartbeats_rejected_total', rejected('a', 'wrong-link'))).toBe(1);
    expect(m3.get('takeover_heartbeats_rejected_total', rejected('a', 'replayed'))).toBe(1);
    // The same counts as `takeover status --json` shows (one source).
    const st = JSON.parse((await runCli(['status', '--json', '--config', b.file])).stdout);
    expect(st.metricsPort).toBe(port);
    expect(st.heartbeat).toMatchObject({ rejected: { hmac: 3, short: 1, 'wrong-link': 1 }, replayed: 1, staleIncarnation: 1 });

    // Callouts: each published event runs the three; one exits 0, one 3, one is killed at 300 ms.
    const m4 = await until('every callout run counted', async () => {
      const m = await metrics(port);
      const events = m.samples.filter((s) => s.name === 'takeover_events_published_total').reduce((n, s) => n + s.value, 0);
      const runs = ['ok', 'failed', 'killed'].map((result) => m.get('takeover_callouts_total', { result }));
      return events > 0 && runs.every((n) => n === events) ? m : undefined;
    });
    expect(m4.get('takeover_callouts_total', { result: 'error' })).toBe(0);
    expect(m4.get('takeover_callouts_dropped_total')).toBe(0);
    // And the log says each run's exit code: 0 at info, the others at warn.
    const calloutLogs = b.logs.filter((l) => l.callout);
    expect(calloutLogs.find((l) => l.callout.file.endsWith('ok.sh'))).toMatchObject({ level: 30, msg: 'callout done', callout: { code: 0, timedOut: false } });
    expect(calloutLogs.find((l) => l.callout.file.endsWith('fail.sh'))).toMatchObject({ level: 40, msg: 'callout failed', callout: { code: 3 } });
    expect(calloutLogs.find((l) => l.callout.file.endsWith('slow.sh'))).toMatchObject({ level: 40, msg: 'callout killed past its timeout', callout: { signal: 'SIGKILL', timedOut: true } });

    // a dies: b declares it dead; the detection time is the silence b saw, and status says why.
    a.child.kill('SIGKILL');
    const down = await until('b declares a dead', () => b.logs.find((l) => l.msg === 'node-down')?.detector as { at: number; lastHeardAt: number } | undefined);
    const m5 = await metrics(port);
    expect(m5.get('takeover_peer_up', { peer: 'a' })).toBe(0);
    expect(m5.get('takeover_peer_down_detection_seconds_count', { peer: 'a' })).toBe(1);
    expect(m5.get('takeover_peer_down_detection_seconds_sum', { peer: 'a' })).toBeCloseTo((down.at - down.lastHeardAt) / 1000, 6);
    expect(m5.get('takeover_events_published_total', { type: 'node', status: 'DOWN' })).toBe(1);
    const silentMs = Math.round(down.at - down.lastHeardAt);
    // The status as JSON and as text: two reads, at once.
    const [jsonOut, textOut] = await Promise.all([runCli(['status', '--json', '--config', b.file]), runCli(['status', '--config', b.file])]);
    const json = JSON.parse(jsonOut.stdout);
    expect(json.peers).toEqual([expect.objectContaining({ node: 'a', up: false, since: down.at, death: { at: down.at, cause: 'silence', lastHeardAt: down.lastHeardAt, silentMs, why: `silent on every link (0) for ${silentMs} ms` } })]);
    const text = textOut.stdout;
    expect(text).toMatch(new RegExp(`\\npeer a: DOWN since ${ISO}: silent on every link \\(0\\) for ${silentMs} ms\\n`));
    expect(text).toContain(`metrics on port ${port} (GET /metrics)`);

    // The instance exits: its state, since when, and its last DOWN.
    const pid = json.instances[0].pid as number;
    pids.push(pid);
    process.kill(pid, 'SIGKILL');
    const m6 = await until('i1 not restarting', async () => {
      const m = await metrics(port);
      return m.get('takeover_instance_state', { instance: 'i1', state: 'not-restarting' }) === 1 ? m : undefined;
    });
    expect(m6.get('takeover_instance_state', { instance: 'i1', state: 'up' })).toBe(0);
    expect(m6.get('takeover_events_published_total', { type: 'instance', status: 'DOWN' })).toBe(1);
    await until('the failure plan counted', async () => (await metrics(port)).get('takeover_failure_plans_total', { instance: 'i1', result: 'ok' }) === 1);
    const [afterOut, afterText] = await Promise.all([runCli(['status', '--json', '--config', b.file]), runCli(['status', '--config', b.file])]);
    const after = JSON.parse(afterOut.stdout);
    // No pid (nothing runs), since when, and how it last ended: killed.
    expect(after.instances[0]).toMatchObject({ name: 'i1', state: 'not-restarting', since: expect.any(Number), lastExit: { pid, signal: 'SIGKILL', at: expect.any(Number) } });
    expect(after.instances[0]).not.toHaveProperty('pid');
    expect(after.instances[0].since).toBeGreaterThanOrEqual(after.instances[0].lastExit.at);
    expect(afterText.stdout).toMatch(/\ni1\s+not-restarting\s+-\s+.*SIGKILL/);

    // The agent held (stopped 400 ms, as a stalled host holds it): counted, in status, and said
    // as a warning (at most once per 10 s: a hold of a loaded host may have been said already).
    const heldBefore = (await metrics(port)).get('takeover_heartbeat_held_total')!;
    b.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 400));
    b.child.kill('SIGCONT');
    await until('the hold counted', async () => ((await metrics(port)).get('takeover_heartbeat_held_total')! > heldBefore ? true : undefined));
    const heldLog = b.logs.find((l) => String(l.msg).startsWith('this agent was held: its heartbeat was '));
    expect(heldLog).toMatchObject({ level: 40, heldMs: expect.any(Number), count: expect.any(Number), timeoutMs: 325 });
    expect(heldLog!.heldMs).toBeGreaterThan(100);
    const heldStatus = JSON.parse((await runCli(['status', '--json', '--config', b.file])).stdout).heartbeat.held;
    expect(heldStatus.count).toBeGreaterThan(heldBefore);
    expect(heldStatus.maxLateMs).toBeGreaterThanOrEqual(250); // 400 ms held, its heartbeat due within 100 ms of the stop

    // Stopping the agent closes the endpoint.
    b.child.kill('SIGTERM');
    await new Promise((r) => b.child.once('exit', r));
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
  }, 120_000);

  it('the log level: the config\'s log.level, --log-level over it, a bad level is a usage error', async () => {
    const calloutDir = path.join(dir, 'callouts');
    mkdirSync(calloutDir);
    writeFileSync(path.join(calloutDir, 'fail.sh'), '#!/bin/sh\nexit 3\n');
    chmodSync(path.join(calloutDir, 'fail.sh'), 0o755);
    const config = (node: string, level?: string) => ({
      cluster: 'c', node, database: 'db', key: KEY, control: path.join(dir, `${node}.sock`),
      heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: randomPort() }] }, notify: { host: '127.0.0.1', port: 0 },
      instances: [{ name: 'i1', node, command: ['sh', '-c', 'exit 7'] }],
      callouts: { dir: calloutDir, timeoutMs: 5000, maxParallel: 8 },
      ...(level ? { log: { level } } : {}),
    });
    // The instance exits at once: events (info) and failing callouts (warn) follow.
    const quiet = startAgent('quiet', config('quiet', 'warn'));
    const loud = startAgent('loud', config('loud', 'warn'), ['--log-level', 'debug']);
    for (const x of [quiet, loud]) {
      // Two events (instance UP, instance DOWN), so two failed callout runs.
      await until('the instance given up and its callouts run', () => x.logs.filter((l) => l.msg === 'callout failed').length === 2, 20_000);
      x.child.kill('SIGTERM');
      expect(await new Promise((r) => x.child.once('exit', r))).toBe(0);
    }
    expect(quiet.logs.length).toBeGreaterThan(0);
    expect(quiet.logs.filter((l) => l.level < 40)).toEqual([]); // warn: no info line at all
    expect(loud.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['agent started', 'published', 'failure plan done', 'callout failed', 'agent stopped']));

    // Three refused starts (usage errors: nothing runs), one process each, at once.
    const file = path.join(dir, 'bad-level.json');
    writeFileSync(file, JSON.stringify(config('bad', 'loud')));
    const noLevel = path.join(dir, 'no-level.json');
    writeFileSync(noLevel, JSON.stringify(config('bad')));
    const [bad, flag, checked] = await Promise.all([
      runCli(['agent', '--config', file]),
      runCli(['agent', '--config', noLevel, '--log-level', 'verbose']),
      runCli(['agent', '--config', noLevel, '--check', '--log-level', 'verbose']),
    ]);
    expect([bad.code, bad.stderr]).toEqual([2, `takeover: ${file}: log.level: Invalid option: expected one of "trace"|"debug"|"info"|"warn"|"error"|"fatal"|"silent"\n`]);
    expect([flag.code, flag.stderr]).toEqual([2, 'takeover: --log-level: must be one of trace, debug, info, warn, error, fatal, silent, got "verbose"\n']);
    expect(checked.code).toBe(2);
  }, 120_000);

  it('a witness disputes a death: status shows the suspicion and who disputes it, then why the peer was declared dead; metrics count the dispute', async () => {
    const [pa, pb] = [randomPort(), randomPort() + 1];
    const node = (self: string, me: number, peer: string, them: number, extra: Record<string, unknown> = {}) =>
      validateConfig({
        cluster: 'unit', node: self, database: 'db', key: KEY, control: path.join(dir, `${self}.sock`),
        heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: me }] },
        peers: [{ node: peer, links: [{ id: 0, address: '127.0.0.1', port: them }] }],
        notify: { host: '127.0.0.1', port: 0 }, ...extra,
      });
    let diskSaysDead = false;
    const b = await Agent.create(node('b', pb, 'a', pa, { metrics: { host: '127.0.0.1', port: 0 } }), { witnesses: [{ name: 'disk', confirmsDown: () => diskSaysDead }] });
    const a = await Agent.create(node('a', pa, 'b', pb));
    try {
      await b.start();
      await a.start();
      await until('a up at b', () => b.status().peers[0]?.up);
      expect(b.status().peers[0]!.since).toBeLessThanOrEqual(Date.now());
      a.heartbeat.stop();
      const suspected = await until('a suspected', () => (b.status().peers[0]?.suspected?.disputedBy ? b.status().peers[0]!.suspected : undefined));
      expect(suspected).toEqual({ since: expect.any(Number), disputedBy: 'disk' });
      // Down by the heartbeats since then, but not declared dead: no death, nothing taken over.
      expect(b.status().peers[0]).toMatchObject({ up: false, since: suspected.since });
      expect(b.status().peers[0]!.death).toBeUndefined();
      expect((await runCli(['status', '--control', path.join(dir, 'b.sock')])).stdout).toMatch(new RegExp(`\\npeer a: DOWN since ${ISO}: silent on every link, not declared dead: witness disk disagrees\\n`));
      const m = parseExposition((await scrape(b.metricsPort!)).text);
      expect(m.get('takeover_peer_down_disputed_total', { peer: 'a', witness: 'disk' })).toBe(1);
      expect(m.get('takeover_peer_up', { peer: 'a' })).toBe(0); // as status: the heartbeats' view
      diskSaysDead = true;
      const death = await until('a declared dead', () => b.status().peers[0]?.death);
      expect(death).toMatchObject({ cause: 'silence', heartbeatsAt: suspected.since, witnesses: ['disk'] });
      expect(death.at).toBeGreaterThan(death.heartbeatsAt!);
      expect(death.why).toBe(`silent on every link (0) for ${death.silentMs} ms; witnesses (disk) agreed ${Math.round(death.at - death.heartbeatsAt!)} ms later`);
      expect(b.status().peers[0]).toMatchObject({ up: false, since: death.heartbeatsAt });
      expect(b.status().peers[0]!.suspected).toBeUndefined();
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('a fence that fails: the takeover does nothing, and status and metrics say so', async () => {
    const [pa, pb] = [randomPort(), randomPort() + 1];
    const lun = new ModelLun();
    const node = (self: string, me: number, peer: string, them: number, extra: Record<string, unknown> = {}) =>
      validateConfig({
        cluster: 'unit', node: self, database: 'db', key: KEY, control: path.join(dir, `${self}.sock`),
        heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: me }] },
        peers: [{ node: peer, links: [{ id: 0, address: '127.0.0.1', port: them }], ...(extra.takeover ? { takeover: extra.takeover } : {}) }],
        notify: { host: '127.0.0.1', port: 0 }, fencing: { devices: ['/dev/shared'], checkMs: 50 },
        ...(extra.metrics ? { metrics: extra.metrics } : {}),
      });
    const open = (self: string) => (p: string) => ({ device: lun.nexus(self, p), close: () => {} });
    const b = await Agent.create(node('b', pb, 'a', pa, { takeover: { address: '198.51.100.77', port: 7000, interface: 'lo', prefixLength: 24 }, metrics: { host: '127.0.0.1', port: 0 } }), { openFenceDevice: open('b') });
    const a = await Agent.create(node('a', pa, 'b', pb), { openFenceDevice: open('a') });
    const failed: string[] = [];
    b.on('takeover-failed', (err) => failed.push(err.message));
    try {
      await b.start();
      await a.start();
      await until('a up at b', () => b.status().peers[0]?.up);
      const before = parseExposition((await scrape(b.metricsPort!)).text);
      expect(['ok', 'incomplete', 'failed'].map((result) => before.get('takeover_peer_takeovers_total', { peer: 'a', result }))).toEqual([0, 0, 0]);
      expect(before.get('takeover_fences_total', { peer: 'a', result: 'failed' })).toBe(0);
      expect(before.get('takeover_fenced')).toBe(0);
      expect(before.get('takeover_callouts_dropped_total')).toBeUndefined(); // no callouts here
      lun.failNext = { nexus: 'b', op: 'preemptAndAbort', error: new Error('CHECK CONDITION: NOT READY') };
      a.heartbeat.stop();
      await until('the takeover failed', () => failed.length === 1);
      const peer = b.status().peers[0]!;
      expect(peer.takenOver).toEqual([{ address: '198.51.100.77', port: 7000, decidedAt: peer.death!.at, at: expect.any(Number), result: 'failed', connections: 0, notClosed: 0, error: failed[0] }]);
      expect(failed[0]).toMatch(/fencing a failed: \/dev\/shared: .*NOT READY/);
      const m = parseExposition((await scrape(b.metricsPort!)).text);
      expect(m.get('takeover_fences_total', { peer: 'a', result: 'failed' })).toBe(1);
      expect(m.get('takeover_peer_takeovers_total', { peer: 'a', result: 'failed' })).toBe(1);
      expect(m.get('takeover_peer_takeovers_total', { peer: 'a', result: 'ok' })).toBe(0);
      expect(m.get('takeover_peer_takeover_seconds_count', { peer: 'a' })).toBeUndefined(); // nothing was done
      // The text status, as the CLI prints it.
      const text = (await runCli(['status', '--control', path.join(dir, 'b.sock')])).stdout;
      expect(text).toContain(`\n  took over 198.51.100.77:7000: FAILED `);
      expect(text).toContain(`after the decision: ${failed[0]}\n`);
    } finally {
      await a.stop();
      await b.stop();
    }
  });

  it('a peer that claims its address under a lease: the takeover waits, and ends with nothing taken over when the peer is heard holding it again; status and metrics say so', async () => {
    const [pa, pb] = [randomPort(), randomPort() + 1];
    const b = await Agent.create(validateConfig({
      cluster: 'unit', node: 'b', database: 'db', key: KEY, control: path.join(dir, 'b.sock'),
      heartbeat: { intervalMs: 50, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: pb }] },
      peers: [{ node: 'a', links: [{ id: 0, address: '127.0.0.1', port: pa }], takeover: { address: '198.51.100.78', port: 7000, interface: 'lo', prefixLength: 24 } }],
      notify: { host: '127.0.0.1', port: 0 }, quorum: { twoNode: true }, metrics: { host: '127.0.0.1', port: 0 },
    }));
    // Node a, as its heartbeats show it: it holds 198.51.100.78 under a 2 s lease (no agent, no address here).
    const peerA = (incarnation: bigint) =>
      new HeartbeatAgent({
        node: 'a', incarnation, key: Buffer.from(KEY), intervalMs: 50, misses: 2,
        links: [{ id: 0, address: '127.0.0.1', port: pa }], peers: [{ node: 'b', links: [{ id: 0, address: '127.0.0.1', port: pb }] }],
        claims: () => [{ address: '198.51.100.78', taken: false, leaseSeconds: 2 }],
      });
    let a = peerA(1n);
    const waiting: TakeoverWaiting[] = [];
    b.on('takeover-waiting', (w) => waiting.push(w));
    try {
      await b.start();
      await a.start();
      await until('a up at b', () => b.status().peers[0]?.up);
      a.stop(); // its agent is killed
      await until('b waits out the lease', () => waiting.length === 1);
      expect(waiting[0]).toMatchObject({ address: '198.51.100.78', seconds: 2 });
      expect(waiting[0]!.until - waiting[0]!.down.at).toBe(2000 + kernelExpirySlackMs(2) + LEASE_MARGIN_MS);
      a = peerA(2n); // restarted within its lease, it claims the address again
      await a.start();
      await until('the takeover abandoned', () => b.status().peers[0]?.takenOver?.length === 1);
      const peer = b.status().peers[0]!;
      expect(peer.takenOver).toEqual([{ address: '198.51.100.78', port: 7000, decidedAt: waiting[0]!.down.at, at: expect.any(Number), result: 'abandoned', connections: 0, notClosed: 0, error: expect.stringMatching(/^a is alive and holds 198\.51\.100\.78: heard claiming it \d+ ms after it was declared dead$/) }]);
      expect(peer.takenOver![0]!.at).toBeLessThan(waiting[0]!.until);
      const m = parseExposition((await scrape(b.metricsPort!)).text);
      expect(m.get('takeover_peer_takeovers_total', { peer: 'a', result: 'abandoned' })).toBe(1);
      expect(m.get('takeover_peer_takeovers_total', { peer: 'a', result: 'ok' })).toBe(0);
      const text = (await runCli(['status', '--control', path.join(dir, 'b.sock')])).stdout;
      expect(text).toMatch(/\n {2}did not take over 198\.51\.100\.78:7000 .* after the decision: a is alive and holds 198\.51\.100\.78/);
      expect(b.status().taken).toEqual([]);
    } finally {
      a.stop();
      await b.stop();
    }
  });

  it('a leased address this node does not have (here: its interface is missing): status and the gauge say it is not held, nothing is added', async () => {
    const a = await Agent.create(validateConfig({
      cluster: 'unit', node: 'a', database: 'db', key: KEY, control: path.join(dir, 'a.sock'),
      heartbeat: { intervalMs: 50, links: [{ id: 0, address: '127.0.0.1', port: randomPort() }] },
      notify: { host: '127.0.0.1', port: 0 }, metrics: { host: '127.0.0.1', port: 0 },
      addressLease: { seconds: 2, addresses: [{ address: '198.51.100.79', interface: 'nosuch9', prefixLength: 24 }] },
    }));
    const leases: unknown[] = [];
    a.on('lease', (e) => leases.push(e));
    try {
      await a.start();
      await new Promise((r) => setTimeout(r, 200));
      expect(a.status().leases).toEqual({ seconds: 2, addresses: [{ address: '198.51.100.79', interface: 'nosuch9', prefixLength: 24, held: false }] });
      const m = parseExposition((await scrape(a.metricsPort!)).text);
      expect(m.get('takeover_address_lease_held', { address: '198.51.100.79' })).toBe(0);
      expect(leases).toEqual([]);
    } finally {
      await a.stop();
    }
  });

  it('config: metrics off unless given, on loopback by default, never on the notification port; a port in use fails the start and leaves nothing', async () => {
    const base = {
      cluster: 'c', node: 'a', database: 'db', key: KEY, control: path.join(dir, 'a.sock'),
      heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: randomPort() }] }, notify: { port: 7500 },
    };
    expect(validateConfig(base).metrics).toBeUndefined();
    expect(validateConfig(base).log).toEqual({ level: 'info' });
    expect(validateConfig({ ...base, metrics: { port: 9464 } }).metrics).toEqual({ host: '127.0.0.1', port: 9464 });
    const bad = (doc: Record<string, unknown>) => () => validateConfig(doc, 'agent.yaml');
    // notify listens on 0.0.0.0: every IPv4 address's port 7500 is taken.
    expect(bad({ ...base, metrics: { port: 7500 } })).toThrow('agent.yaml: metrics.port: 7500 is notify.port too: give the metrics another port');
    expect(bad({ ...base, metrics: { host: '::', port: 7500 }, notify: { host: '127.0.0.1', port: 7500 } })).toThrow(/metrics\.port: 7500 is notify\.port too/);
    expect(validateConfig({ ...base, metrics: { host: '::1', port: 7500 } }).metrics).toEqual({ host: '::1', port: 7500 }); // IPv6 loopback: no clash with 0.0.0.0
    expect(validateConfig({ ...base, metrics: { host: '127.0.0.1', port: 0 }, notify: { host: '127.0.0.1', port: 0 } }).metrics?.port).toBe(0); // two free ports
    expect(bad({ ...base, metrics: { port: 70000 } })).toThrow('agent.yaml: metrics.port: Too big: expected number to be <=65535');
    expect(bad({ ...base, metrics: { host: 'localhost', port: 9464 } })).toThrow('agent.yaml: metrics.host: must be an IPv4 or IPv6 address');
    expect(bad({ ...base, metrics: { port: 9464, path: '/m' } })).toThrow('agent.yaml: metrics.path: unknown field');
    const file = path.join(dir, 'clash.json');
    writeFileSync(file, JSON.stringify({ ...base, metrics: { port: 7500 } }));
    const check = await runCli(['agent', '--check', '--config', file]);
    expect([check.code, check.stderr]).toEqual([2, `takeover: ${file}: metrics.port: 7500 is notify.port too: give the metrics another port\n`]);

    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const taken = (busy.address() as net.AddressInfo).port;
    try {
      const agent = await Agent.create(validateConfig({ ...base, notify: { host: '127.0.0.1', port: 0 }, metrics: { port: taken } }));
      await expect(agent.start()).rejects.toMatchObject({ code: 'EADDRINUSE', message: `metrics: listen EADDRINUSE: address already in use 127.0.0.1:${taken}` });
      expect(existsSync(path.join(dir, 'a.sock'))).toBe(false); // the failed start undid itself
    } finally {
      busy.close();
    }
  });
});
