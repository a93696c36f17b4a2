// `takeover agent` as a process, stopped with SIGTERM as systemd stops it: how long the stop
// takes, for instances run by command, watched by pid, and none, and what is left running.
// The bound: an agent whose instances exit on SIGTERM is gone within FAST_MS (measured: 15-95 ms
// on a 2-vCPU host with other work; the bound is ~5x that); instances that ignore SIGTERM cost
// an instance's default stopGraceMs (5 s) once, not once per instance, plus at most FAST_MS.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_STOP_GRACE_MS as STOP_GRACE_MS } from '../../src/agent/config.js';
import { CLI } from '../cli-process.js';
import { testPort } from '../free-port.js';

const FAST_MS = 500;

let dir: string;
const started: ChildProcess[] = [];
const pidsToKill: number[] = [];
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-agent-stop-'));
});
afterEach(() => {
  for (const c of started.splice(0)) c.kill('SIGKILL');
  for (const pid of pidsToKill.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone: what the test wanted
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`${what}: not in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A shell instance that writes its own pid and its child's to files, so the test can find both. */
function wrapper(name: string, ignoreTerm: boolean): string[] {
  const trap = ignoreTerm ? 'trap "" TERM; ' : '';
  return ['sh', '-c', `${trap}echo $$ > ${path.join(dir, `${name}.pid`)}; sleep 600 & echo $! > ${path.join(dir, `${name}.child`)}; wait; wait`];
}

/** Running: it exists and is not a zombie (a killed grandchild waits for init to reap it). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function readPid(file: string): number {
  return Number(readFileSync(path.join(dir, file), 'utf8').trim());
}

async function runAgent(instances: Array<Record<string, unknown>>) {
  const file = path.join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify({
    cluster: 'c', node: 'solo', database: 'd', key: 'a key of sixteen bytes',
    control: path.join(dir, 'solo.sock'),
    heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: testPort() }] },
    notify: { host: '127.0.0.1', port: 0 },
    instances,
    services: instances.length ? [{ name: 's', members: instances.map((i) => i.name) }] : [],
  }));
  const child = spawn(process.execPath, [CLI, 'agent', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  started.push(child);
  const logs: Array<Record<string, unknown>> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => logs.push(JSON.parse(l)));
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await until(`agent started (stderr: ${stderr})`, () => logs.some((l) => l.msg === 'agent started'));
  /** SIGTERM; resolves with the exit code and the ms from the signal to the exit. */
  const stop = async () => {
    const t0 = performance.now();
    child.kill('SIGTERM');
    const code = await exited;
    return { code, ms: performance.now() - t0 };
  };
  return { logs, stop };
}

describe('takeover agent stops on SIGTERM in a bounded time', () => {
  it('without instances: at once', async () => {
    const agent = await runAgent([]);
    const { code, ms } = await agent.stop();
    expect(code).toBe(0);
    expect(ms).toBeLessThan(FAST_MS);
    expect(agent.logs.at(-1)).toMatchObject({ msg: 'agent stopped', ms: expect.any(Number) });
  });

  it('an instance watched by pid: at once, and the process is not the agent\'s to stop', async () => {
    const watched = spawn('sleep', ['600'], { stdio: 'ignore' });
    pidsToKill.push(watched.pid!);
    const agent = await runAgent([{ name: 'w', node: 'solo', pid: watched.pid }]);
    const { code, ms } = await agent.stop();
    expect([code, ms < FAST_MS]).toEqual([0, true]);
    expect(running(watched.pid!)).toBe(true);
  });

  it('instances run by command that exit on SIGTERM: at once, with their children', async () => {
    const names = ['c1', 'c2', 'c3'];
    const agent = await runAgent(names.map((name) => ({ name, node: 'solo', command: wrapper(name, false) })));
    await until('the instances wrote their pids', () => names.every((n) => existsSync(path.join(dir, `${n}.child`))));
    const pids = names.flatMap((n) => [readPid(`${n}.pid`), readPid(`${n}.child`)]);
    pidsToKill.push(...pids);
    const { code, ms } = await agent.stop();
    expect([code, ms < FAST_MS]).toEqual([0, true]);
    expect(pids.filter(running)).toEqual([]);
  });

  it('three instances that ignore SIGTERM: one grace for all (not one each), then SIGKILL to their whole process groups', async () => {
    const names = ['t1', 't2', 't3'];
    const agent = await runAgent(names.map((name) => ({ name, node: 'solo', command: wrapper(name, true) })));
    await until('the instances wrote their pids', () => names.every((n) => existsSync(path.join(dir, `${n}.child`))));
    const pids = names.flatMap((n) => [readPid(`${n}.pid`), readPid(`${n}.child`)]);
    pidsToKill.push(...pids);
    const { code, ms } = await agent.stop();
    expect(code).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(STOP_GRACE_MS);
    expect(ms).toBeLessThan(STOP_GRACE_MS + FAST_MS);
    expect(pids.filter(running)).toEqual([]);
    expect(agent.logs.at(-1)).toMatchObject({ msg: 'agent stopped' });
  });
});
