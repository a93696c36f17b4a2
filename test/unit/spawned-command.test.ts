// runSpawned (native Spawned: posix_spawnp + a pidfd): exit codes, signals, a command that
// cannot start, an abort that kills the whole group, the child reaped every time, and no fork of
// this process (its cost does not grow with this process's size, unlike child_process).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runSpawned } from '../../src/monitor/spawned-command.js';

/** This process's children that are zombies (exited, not reaped). */
function zombies(): number[] {
  const out: number[] = [];
  const children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim();
  for (const pid of children ? children.split(' ').map(Number) : []) {
    const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
    if (stat.replace(/^.*\) /s, '')[0] === 'Z') out.push(pid);
  }
  return out;
}

describe('runSpawned', () => {
  it('resolves on exit 0; names the exit code or the signal otherwise; reaps each child', async () => {
    await runSpawned('true', []);
    await expect(runSpawned('sh', ['-c', 'exit 3'])).rejects.toThrow('sh -c exit 3 exited with code 3');
    await expect(runSpawned('sh', ['-c', 'kill -TERM $$'])).rejects.toThrow(/was killed by SIGTERM/);
    expect(zombies()).toEqual([]);
  });

  it('a command that cannot start rejects with the spawn error (code, syscall), nothing left running', async () => {
    await expect(runSpawned('/nonexistent/probe', [])).rejects.toMatchObject({ code: 'ENOENT', syscall: 'posix_spawnp' });
    const plain = path.join(mkdtempSync(path.join(tmpdir(), 'tko-spawned-')), 'not-executable');
    writeFileSync(plain, '#!/bin/sh\n', { mode: 0o644 });
    await expect(runSpawned(plain, [])).rejects.toMatchObject({ code: 'EACCES', syscall: 'posix_spawnp' });
    rmSync(path.dirname(plain), { recursive: true });
    await expect(runSpawned('tr\0ue', [])).rejects.toThrow(/NUL/);
  });

  it('its stdio is /dev/null, SIGPIPE is back to default, and it leads its own process group', async () => {
    // stdout on /dev/null; pgid == pid; SIGPIPE (bit 12 of SigIgn in /proc/PID/status) not ignored,
    // as this process (Node) ignores it.
    expect(BigInt(`0x${/^SigIgn:\s*(\w+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`) & 0x1000n).toBe(0x1000n);
    await runSpawned('sh', ['-c', '[ "$(readlink /proc/$$/fd/1)" = /dev/null ] && [ "$(ps -o pgid= -p $$ | tr -d " ")" = "$$" ] && m=$(grep SigIgn /proc/$$/status | cut -f2) && [ $((0x$m & 0x1000)) -eq 0 ]']);
  });

  it('an abort kills the whole group at once and rejects with the reason; the child is still reaped', async () => {
    const ac = new AbortController();
    const started = performance.now();
    const run = runSpawned('sh', ['-c', 'sleep 30 & sleep 30'], ac.signal);
    setTimeout(() => ac.abort(new Error('probe timed out')), 50);
    await expect(run).rejects.toThrow('probe timed out');
    expect(performance.now() - started).toBeLessThan(1000);
    for (let i = 0; i < 100 && readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim()).toBe('');
    const pre = new AbortController();
    pre.abort(new Error('already'));
    await expect(runSpawned('true', [], pre.signal)).rejects.toThrow('already');
  });

  it('costs the event loop less than child_process.spawn, whose fork grows with this process', async () => {
    const ballast = Array.from({ length: 200 }, () => Buffer.alloc(1 << 20, 1)); // ~200 MiB touched
    const time = async (start: () => Promise<unknown>) => {
      const t: number[] = [];
      for (let i = 0; i < 15; i++) {
        const t0 = performance.now();
        const done = start();
        t.push(performance.now() - t0); // the synchronous part: what holds the loop
        await done;
      }
      return t.sort((a, b) => a - b)[7]!;
    };
    const forked = await time(() => new Promise((r) => spawn('true', [], { stdio: 'ignore' }).on('exit', r)));
    const ours = await time(() => runSpawned('true', []));
    console.info(`event loop held per start, median of 15 with ~200 MiB of heap: child_process.spawn ${forked.toFixed(2)} ms, runSpawned ${ours.toFixed(2)} ms`);
    expect(ours).toBeLessThan(forked);
    expect(ballast.length).toBe(200);
  });
});
