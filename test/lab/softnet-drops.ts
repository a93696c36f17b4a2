// Frames this host's kernel dropped because a CPU's input backlog was full (the second column of
// /proc/net/softnet_stat, summed over CPUs; netdev_max_backlog, 1,000 by default). In a lab every
// veth hop queues a frame there, the mirror's copy included: on a loaded 2-core machine a burst
// can overflow it, and the mirror then misses frames the primary got, which no capture ring sees.
// Host-wide, so a difference over a test bounds, not counts, that test's own losses.
import { readFileSync } from 'node:fs';

export function softnetDrops(): number {
  let sum = 0;
  for (const line of readFileSync('/proc/net/softnet_stat', 'utf8').trim().split('\n')) {
    sum += Number.parseInt(line.trim().split(/\s+/)[1] ?? '0', 16);
  }
  return sum;
}
