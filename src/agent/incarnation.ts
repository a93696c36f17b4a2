// The agent's incarnation: the number that tells peers "this is a new life of node X" (the
// failure detector ignores heartbeats of older lives, so a replayed or delayed heartbeat cannot
// hold a dead node up). It must grow at every start, whatever the wall clock does: a clock that
// steps back (a VM resumed, an RTC-less boot corrected by NTP) would otherwise give a restarted
// agent a lower number than its previous life, and its peers would ignore it for good.
// So the last one is persisted and the next is max(now in ms, last + 1, floor).
import { mkdir, open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';

/** Where incarnations persist by default (one file per cluster and node): it survives reboots. */
export const DEFAULT_INCARNATION_DIR = '/var/lib/takeover';

export function defaultIncarnationFile(cluster: string, node: string): string {
  return path.join(DEFAULT_INCARNATION_DIR, `${cluster}.${node}.incarnation`);
}

/**
 * Reads the last incarnation from `file` (absent: none), picks the next, and writes it back
 * durably (temporary file, fdatasync, rename, directory fsync) before returning it, so no two
 * starts can ever return the same or a lower number, even across a crash or power loss.
 * `floor`: a lower bound from the configuration. Throws (with the file's name) when the
 * directory cannot be written or the file holds something that is not a number: an agent that
 * cannot guarantee a new life must not start.
 */
export async function nextIncarnation(file: string, floor = 0, now = Date.now()): Promise<number> {
  let last = -1;
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new Error(`cannot read the incarnation file ${file}: ${err.code ?? err.message}`);
  });
  if (text !== undefined) {
    if (!/^\d{1,16}\n?$/.test(text)) throw new Error(`the incarnation file ${file} does not hold a number (${JSON.stringify(text.slice(0, 20))}): remove it only if no other life of this node could be running`);
    last = Number(text.trim());
  }
  const next = Math.max(Math.floor(now), last + 1, floor);
  if (!Number.isSafeInteger(next)) throw new Error(`incarnation overflow in ${file}`);
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${next}\n`);
    await fh.datasync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
  return next;
}
