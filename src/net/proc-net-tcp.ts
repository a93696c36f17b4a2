// /proc/net/tcp and /proc/net/tcp6: each socket's queues without touching the socket. A planned
// switchover waits, after locking the service's connections, until its server is quiet: it has
// read every request that arrived (rx_queue 0: RCV.NXT - copied_seq) and stopped writing (the
// tx_queue, write_seq - SND.UNA, no longer growing: with the lock, nothing is acknowledged). Only
// then does a dump see the server between requests. sock_diag would give the same numbers, but
// the addon's dump does not carry them; these files are read in one go (~150 bytes a socket).
// The parser is pure.
import { readFile } from 'node:fs/promises';

export interface ProcTcpSocket {
  local: { address: string; port: number };
  remote: { address: string; port: number };
  /** TCP state number (1 ESTABLISHED). */
  state: number;
  /** Bytes written and not acknowledged (write_seq - SND.UNA for a connected socket). */
  txQueue: number;
  /** Bytes received and not read by the process (RCV.NXT - copied_seq). */
  rxQueue: number;
  inode: number;
}

/** The IPv4 address of /proc/net/tcp's hex form (the 32-bit word in host order: little endian here). */
function v4(hex: string): string {
  const n = Number.parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff].join('.');
}

/** The IPv6 address of /proc/net/tcp6's hex form: four 32-bit words, each in host order (little endian). */
function v6(hex: string): string {
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    const bytes = [word.slice(6, 8), word.slice(4, 6), word.slice(2, 4), word.slice(0, 2)];
    groups.push(`${bytes[0]}${bytes[1]}`, `${bytes[2]}${bytes[3]}`);
  }
  // Canonical text: leading zeros dropped, the longest run of zero groups as '::'.
  const short = groups.map((g) => Number.parseInt(g, 16).toString(16));
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (short[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && short[j] === '0') j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return short.join(':');
  return `${short.slice(0, best).join(':')}::${short.slice(best + bestLen).join(':')}`;
}

const LINE = /^\s*\d+:\s+([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})\s+([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})\s+([0-9A-Fa-f]{2})\s+([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8})\s+\S+\s+\S+\s+\d+\s+\d+\s+(\d+)/;

/**
 * The sockets of one /proc/net/tcp or tcp6 text. The header and any line that does not parse
 * are skipped (never thrown on): a line cut by a concurrent change of the table is simply absent.
 */
export function parseProcNetTcp(text: string): ProcTcpSocket[] {
  const out: ProcTcpSocket[] = [];
  for (const line of text.split('\n')) {
    const m = LINE.exec(line);
    if (!m) continue;
    const [, la, lp, ra, rp, st, tx, rx, inode] = m;
    if (la!.length !== ra!.length || !Number.isSafeInteger(Number(inode))) continue;
    const addr = la!.length === 8 ? v4 : v6;
    out.push({
      local: { address: addr(la!), port: Number.parseInt(lp!, 16) },
      remote: { address: addr(ra!), port: Number.parseInt(rp!, 16) },
      state: Number.parseInt(st!, 16),
      txQueue: Number.parseInt(tx!, 16),
      rxQueue: Number.parseInt(rx!, 16),
      inode: Number(inode),
    });
  }
  return out;
}

/** The sockets of this network namespace, both families. Throws what the read throws. */
export async function readProcNetTcp(): Promise<ProcTcpSocket[]> {
  const [a, b] = await Promise.all([readFile('/proc/net/tcp', 'utf8'), readFile('/proc/net/tcp6', 'utf8').catch(() => '')]);
  return [...parseProcNetTcp(a), ...parseProcNetTcp(b)];
}

/** One sample of the moved connections' queues: client "address|port" -> [tx, rx]. */
export type QueueSample = Map<string, readonly [tx: number, rx: number]>;

export type QuietVerdict =
  | { quiet: true }
  | { quiet: false; why: string };

/**
 * Whether a server is quiet, from two samples of its locked connections taken some ms apart:
 * every connection of `now` has read everything (rx 0) and its tx queue did not change since
 * `before` (nothing written meanwhile), and none appeared. A connection gone from `now` (closed
 * by the server) is not counted against it: it is not moved. Pure.
 */
export function quietVerdict(before: QueueSample, now: QueueSample): QuietVerdict {
  let unread = 0;
  let writing = 0;
  let fresh = 0;
  for (const [k, [tx, rx]] of now) {
    if (rx > 0) unread++;
    const b = before.get(k);
    if (!b) fresh++;
    else if (b[0] !== tx) writing++;
  }
  if (unread + writing + fresh === 0) return { quiet: true };
  const parts = [unread > 0 ? `${unread} with requests not read yet` : '', writing > 0 ? `${writing} still being written to` : '', fresh > 0 ? `${fresh} new` : ''].filter(Boolean);
  return { quiet: false, why: parts.join(', ') };
}
