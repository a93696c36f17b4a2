// A short command run to its exit without forking the agent (native Spawned: posix_spawnp, vfork
// semantics): the exec health probes, which run every probe interval on the event loop that
// sends the heartbeats. child_process forks, which copies the agent's page tables on that loop:
// 12-38 ms per probe in the lab's agent during a 10,000-connection burst (see native/spawn.cc).
import { constants } from 'node:os';
import { native } from '../native.js';

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name]));

/**
 * Runs `file` (looked up in PATH) with `args`, stdio on /dev/null, in its own process group, and
 * resolves once it exits 0. Rejects with an Error naming the command and its exit code or the
 * signal that killed it; with the spawn's error (code ENOENT, EACCES...; errno, syscall
 * posix_spawnp) when it cannot be started; with `signal.reason` once `signal` aborts, after
 * SIGKILL to its whole group (the child is still reaped when it dies).
 */
export function runSpawned(file: string, args: string[], signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let child: InstanceType<typeof native.Spawned>;
    try {
      child = new native.Spawned(file, args);
    } catch (err) {
      reject(err);
      return;
    }
    const onAbort = () => {
      child.killGroup(constants.signals.SIGKILL);
      reject(signal!.reason);
    };
    child.start((code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      if (code === 0) resolve();
      else reject(new Error(`${[file, ...args].join(' ')} ${code !== null ? `exited with code ${code}` : `was killed by ${SIGNAL_NAMES.get(sig!) ?? `signal ${sig}`}`}`));
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
