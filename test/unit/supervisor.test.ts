import { describe, expect, it } from 'vitest';
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
