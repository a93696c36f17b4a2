import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ProcessExitWatch } from '../../src/monitor/process-exit.js';
import { Supervisor, type SupervisorEvent } from '../../src/monitor/supervisor.js';

function collect(s: Supervisor): SupervisorEvent[] {
  const events: SupervisorEvent[] = [];
  s.on('event', (e) => events.push(e));
  return events;
}

function until(s: Supervisor, kind: SupervisorEvent['kind'], timeoutMs = 5000): Promise<SupervisorEvent> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${kind}`)), timeoutMs);
    const on = (e: SupervisorEvent) => {
      if (e.kind !== kind) return;
      clearTimeout(t);
      s.off('event', on);
      resolve(e);
    };
    s.on('event', on);
  });
}

describe('Supervisor restart policy', () => {
  it('a crash loop is restarted up to the threshold, then NOT_RESTARTING and nothing more', async () => {
    const s = new Supervisor({ command: 'sh', args: ['-c', 'exit 3'], restart: { maxFailures: 2, windowMs: 10_000, backoffMs: 10 } });
    const events = collect(s);
    s.start();
    const nr = await until(s, 'not-restarting');
    await new Promise((r) => setTimeout(r, 100));
    expect(nr).toMatchObject({ failures: 3 });
    expect(events.filter((e) => e.kind === 'started')).toHaveLength(3);
    expect(events.filter((e) => e.kind === 'exited').every((e) => e.kind === 'exited' && e.code === 3)).toBe(true);
    expect(events.at(-1)!.kind).toBe('not-restarting');
  });

  it('failures outside the window do not add up; a killed process is restarted; stop() ends it all', async () => {
    const s = new Supervisor({ command: 'sleep', args: ['30'], restart: { maxFailures: 1, windowMs: 50, backoffMs: 0 } });
    const events = collect(s);
    s.start();
    const first = await until(s, 'started');
    process.kill((first as Extract<SupervisorEvent, { kind: 'started' }>).pid, 'SIGKILL');
    const second = await until(s, 'started');
    await new Promise((r) => setTimeout(r, 100)); // older than the window
    process.kill((second as Extract<SupervisorEvent, { kind: 'started' }>).pid, 'SIGKILL');
    await until(s, 'started');
    expect(events.some((e) => e.kind === 'not-restarting')).toBe(false);
    await s.stop();
    await new Promise((r) => setTimeout(r, 50));
    expect(events.at(-1)).toMatchObject({ kind: 'exited', signal: 'SIGTERM' });
    expect(events.filter((e) => e.kind === 'started')).toHaveLength(3);
  });

  it('a command that cannot start counts as a failure too', async () => {
    const s = new Supervisor({ command: '/nonexistent/takeover-test', restart: { maxFailures: 1, windowMs: 10_000, backoffMs: 0 } });
    const events = collect(s);
    s.start();
    await until(s, 'not-restarting');
    expect(events.filter((e) => e.kind === 'exited')).toHaveLength(2);
  });

  it('refuses a nonsense policy', () => {
    expect(() => new Supervisor({ command: 'true', restart: { maxFailures: -1, windowMs: 1, backoffMs: 0 } })).toThrow(RangeError);
  });
});

/** The pids of a process group, from /proc (zombies included: they are gone but not reaped). */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('Supervisor: process groups, adoption, stderr', () => {
  it('stop() reaches the workers the command forked (its process group), and SIGKILLs what ignores SIGTERM after the grace time', async () => {
    const s = new Supervisor({ command: 'sh', args: ['-c', 'sleep 600 & sleep 600 & wait'], restart: { maxFailures: 0, windowMs: 1, backoffMs: 0 } });
    s.start();
    const started = (await until(s, 'started')) as Extract<SupervisorEvent, { kind: 'started' }>;
    await new Promise((r) => setTimeout(r, 100));
    expect(groupMembers(started.pid)).toHaveLength(3); // sh and its two workers, in a group of their own
    expect(groupMembers(process.pid)).not.toContain(started.pid);
    expect(await s.stop(2000)).toMatchObject({ pid: started.pid, signal: 'SIGTERM' });
    expect(groupMembers(started.pid)).toEqual([]);

    const stubborn = new Supervisor({ command: 'sh', args: ['-c', 'trap "" TERM; sleep 600 & wait'], restart: { maxFailures: 0, windowMs: 1, backoffMs: 0 } });
    stubborn.start();
    const st = (await until(stubborn, 'started')) as Extract<SupervisorEvent, { kind: 'started' }>;
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    expect(await stubborn.stop(300)).toMatchObject({ signal: 'SIGKILL' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(groupMembers(st.pid)).toEqual([]);
  });

  it('adopts a running process (watched by pidfd, exit status unknown), restarts the command when it exits, and stops it as its own', async () => {
    const orphan = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    await new Promise((r) => orphan.once('spawn', r));
    const s = new Supervisor({ command: 'sleep', args: ['600'], restart: { maxFailures: 1, windowMs: 10_000, backoffMs: 0 } });
    const events = collect(s);
    s.adopt(new ProcessExitWatch(orphan.pid!), true);
    expect(events).toEqual([{ kind: 'started', pid: orphan.pid, attempt: 1, at: expect.any(Number), adopted: true }]);
    expect(s.pid).toBe(orphan.pid);
    orphan.kill('SIGKILL');
    const exited = await until(s, 'exited');
    expect(exited).toMatchObject({ pid: orphan.pid, code: null, signal: null, planned: false });
    const second = (await until(s, 'started')) as Extract<SupervisorEvent, { kind: 'started' }>;
    expect(second.adopted).toBe(false);
    expect(s.failures).toBe(1);
    s.resetFailures();
    expect(s.failures).toBe(0);
    await s.stop();
    expect(() => process.kill(second.pid, 0)).toThrow();

    // And an adopted process is stopped like a child.
    const other = spawn('sleep', ['600'], { detached: true, stdio: 'ignore' });
    await new Promise((r) => other.once('spawn', r));
    const s2 = new Supervisor({ command: 'sleep', args: ['600'], restart: { maxFailures: 0, windowMs: 1, backoffMs: 0 } });
    s2.adopt(new ProcessExitWatch(other.pid!), true);
    expect(await s2.stop(1000)).toMatchObject({ pid: other.pid, code: null, signal: null });
    await new Promise((r) => setTimeout(r, 20));
    expect(other.signalCode).toBe('SIGTERM');
  });

  it('stderr goes where the hook says, asked for at each launch; a hook that fails is a failed start', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tko-sup-'));
    try {
      const file = path.join(dir, 'err');
      let launches = 0;
      const s = new Supervisor({
        command: 'sh', args: ['-c', 'echo "run $$ failed" >&2; exit 1'], restart: { maxFailures: 1, windowMs: 10_000, backoffMs: 0 },
        stderr: async () => (launches++, openSync(file, 'a')),
      });
      s.start();
      await until(s, 'not-restarting');
      expect(launches).toBe(2);
      expect(readFileSync(file, 'utf8')).toMatch(/^run \d+ failed\nrun \d+ failed\n$/);
      const broken = new Supervisor({ command: 'true', restart: { maxFailures: 0, windowMs: 1, backoffMs: 0 }, stderr: () => { throw new Error('EACCES: state dir'); } });
      const events = collect(broken);
      broken.start();
      await until(broken, 'not-restarting');
      expect(events[0]).toMatchObject({ kind: 'exited', pid: -1, error: 'stderr: EACCES: state dir' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
