// Who holds an address, sampled: `ip -o addr show dev eth0` on each of a lab's hosts, one right
// after the other, every ~20 ms until stopped (one bash loop in the root namespace: a fork per
// `ip`, lighter than processes from node per sample). As in address-lease.test.ts, for tests
// that must show an address never on two hosts at once.
import { spawn } from 'node:child_process';
import type { Lab } from '../../src/lab/lab.js';
import { canonicalAddress } from '../../src/net/endpoint.js';
import { until } from './replication-cluster.js';

export interface HolderSample {
  /** ms since the epoch (bash's $EPOCHREALTIME). */
  at: number;
  /** The hosts whose eth0 held the address, in the order given. */
  holders: string[];
}

export function addressSampler(lab: Lab, hosts: string[], address: string) {
  const samples: HolderSample[] = [];
  const text = ` ${canonicalAddress(address)}/`;
  // The pause is bash's own `read -t` on a FIFO nobody writes: sleep(1) costs a process too.
  const script = [
    'f=$(mktemp -u); mkfifo "$f"; exec 9<>"$f"; rm "$f"',
    `while :; do echo "T $EPOCHREALTIME"; ${hosts.map((h) => `echo "H ${h}"; ip -n ${lab.host(h).ns} -o addr show dev eth0;`).join(' ')} echo E; read -t 0.012 -u 9 || :; done`,
  ].join('\n');
  const child = spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  let cur: { at: number; host?: string; holders: string[] } | undefined;
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop()!;
    for (const l of lines) {
      if (l.startsWith('T ')) cur = { at: Math.round(Number(l.slice(2)) * 1000), holders: [] };
      else if (l.startsWith('H ')) cur!.host = l.slice(2);
      else if (l === 'E') {
        samples.push({ at: cur!.at, holders: cur!.holders });
        cur = undefined;
      } else if (cur?.host && l.includes(text) && !cur.holders.includes(cur.host)) cur.holders.push(cur.host);
    }
  });
  return {
    samples,
    /**
     * The holders at the next sample that began after this call, joined with ','. (The next
     * sample to end may have begun before: its `ip` run on a host could predate a change the
     * caller just made. One CI run read '' right after the taker had added the address.)
     */
    now: async () => {
      const from = Date.now();
      await until('a sample', async () => ((samples.at(-1)?.at ?? -Infinity) >= from ? true : undefined), 5000);
      return samples.at(-1)!.holders.join();
    },
    since: (t: number) => samples.filter((s) => s.at >= t),
    /** Samples that found the address on more than one host. */
    twoHolders: () => samples.filter((s) => s.holders.length > 1),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}
