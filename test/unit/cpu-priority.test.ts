// The agent's CPU priority (src/monitor/cpu-priority.ts): a nice value is per thread on Linux, so
// every thread of a process is set; a child starts at the nice asked for.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { atNice, niceOf, setProcessNice, threadNices } from '../../src/monitor/cpu-priority.js';

// A process with four threads (python: its main thread and three sleeping ones); it says so once they run.
const THREADS = "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\nprint('ready', flush=True)\ntime.sleep(30)";

let child: ChildProcess | undefined;
afterEach(() => {
  child?.kill('SIGKILL');
  child = undefined;
});

async function threaded(): Promise<number> {
  child = spawn('python3', ['-c', THREADS], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout!, 'data');
  return child.pid!;
}

describe('cpu priority', () => {
  it('setProcessNice sets every thread of a process, and says how many', async () => {
    const pid = await threaded();
    expect(threadNices(pid).size).toBe(4);
    expect(setProcessNice(pid, 7)).toBe(4);
    expect([...threadNices(pid).values()]).toEqual([7, 7, 7, 7]);
    expect(setProcessNice(pid, -3)).toBe(4); // lowering: root (CAP_SYS_NICE), as the suite runs
    expect([...threadNices(pid).values()]).toEqual([-3, -3, -3, -3]);
  });

  it('a process that is gone: 0 threads set, no error', async () => {
    const pid = await threaded();
    child!.kill('SIGKILL');
    await once(child!, 'exit');
    expect(setProcessNice(pid, 5)).toBe(0);
  });

  it('atNice starts a child at the nice asked for, from the first instruction, and puts the thread back', async () => {
    const own = niceOf();
    // The shell reads its own nice (field 19 of /proc/self/stat) as its first act.
    const read = (nice: number | undefined) =>
      new Promise<string>((resolve) => {
        const c = atNice(nice, () => spawn('sh', ['-c', 'cut -d" " -f19 /proc/$$/stat'], { stdio: ['ignore', 'pipe', 'inherit'] }));
        let out = '';
        c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        c.on('close', () => resolve(out.trim()));
      });
    expect(await read(own + 4)).toBe(String(own + 4));
    expect(niceOf()).toBe(own);
    expect(await read(undefined)).toBe(String(own));
    expect(atNice(own + 2, () => niceOf())).toBe(own + 2); // what start() runs at
    expect(() => atNice(own + 2, () => { throw new Error('spawn failed'); })).toThrow('spawn failed');
    expect(niceOf()).toBe(own); // back, after a throw too
  });
});
