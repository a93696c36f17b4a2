// A Unix socket path that a listener takes over from a process that died without removing it
// (the agent's control socket, the relay keeper's): one listener per path, never two.
import { lstat, rm } from 'node:fs/promises';
import net from 'node:net';

/**
 * Removes `file` when it is a socket nobody listens on (ECONNREFUSED: its listener died). Throws
 * `live()` when something answers on it, and an error (code EEXIST) naming `what` when the path
 * is not a socket: neither is deleted.
 */
export async function removeStaleSocket(file: string, what: string, live: () => Error): Promise<void> {
  const there = await lstat(file).catch(() => undefined);
  if (!there) return;
  if (!there.isSocket()) throw Object.assign(new Error(`${what}: ${file} exists and is not a socket: not deleting it`), { code: 'EEXIST' });
  const answers = await new Promise<boolean>((resolve) => {
    const probe = net.connect(file);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (answers) throw live();
  await rm(file, { force: true });
}
