// The verdict of a planned switchover's quiet check (switchover-primary.ts): after the lock, the
// server must have read every request that arrived (the receive queue empty: RCV.NXT -
// copied_seq 0) and stopped writing (the send queue, write_seq - SND.UNA, unchanged between two
// samples: with the lock nothing is acknowledged). Only then does a dump see the server between
// requests. The samples come from sock_diag (idiag_rqueue, idiag_wqueue); the verdict is pure.

/** One sample of the locked connections' queues: client "address|port" -> [wqueue, rqueue] in bytes. */
export type QueueSample = Map<string, readonly [tx: number, rx: number]>;

export type QuietVerdict = { quiet: true } | { quiet: false; why: string };

/**
 * Whether a server is quiet, from two samples of its locked connections taken some ms apart:
 * every connection of `now` has read everything (rx 0) and its tx queue did not change since
 * `before` (nothing written meanwhile), and none appeared. A connection gone from `now` (closed
 * by the server) is not counted against it: it is not moved.
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
