// Frames this host's kernel dropped because a CPU's input backlog was full: the second column of
// /proc/net/softnet_stat (hex), summed over CPUs (netdev_max_backlog, 1,000 by default). A port
// mirror's copy is queued there on its way to a capture like any other frame, so an overflow can
// drop the copy of a segment the primary got, and no capture ring counts it (docs/CONTINUE.md).
// Host-wide, not per interface or namespace: an increase bounds, not counts, a capture's losses.
import { readFile } from 'node:fs/promises';

/** The drops column of softnet_stat's text, summed. Pure; a line without it counts 0. */
export function parseSoftnetDrops(text: string): number {
  let sum = 0;
  for (const line of text.trim().split('\n')) {
    const n = Number.parseInt(line.trim().split(/\s+/)[1] ?? '', 16);
    if (Number.isFinite(n)) sum += n;
  }
  return sum;
}

/** This host's input-backlog drops so far (read asynchronously); null when the file cannot be read. */
export async function softnetDrops(): Promise<number | null> {
  try {
    return parseSoftnetDrops(await readFile('/proc/net/softnet_stat', 'utf8'));
  } catch {
    return null;
  }
}
