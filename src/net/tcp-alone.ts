// What TCP alone does for a peer of a silently dead side, computed from the kernel's sysctls,
// to set beside what takeover did. The formulas are the kernel's (Documentation/networking/
// ip-sysctl.rst: tcp_retries2's default of 15 "yields a hypothetical timeout of 924.6 seconds",
// RTO doubling from 200 ms up to 120 s; keepalive gives up after tcp_keepalive_time +
// tcp_keepalive_intvl x tcp_keepalive_probes); test/unit/tcp-alone.test.ts checks them.

/** Seconds of retransmission before the kernel gives up on unacknowledged data (tcp_retries2). */
export function retransmissionGiveUpSeconds(retries2: number, rtoMinSeconds = 0.2, rtoMaxSeconds = 120): number {
  let total = 0;
  for (let i = 0; i <= retries2; i++) total += Math.min(rtoMinSeconds * 2 ** i, rtoMaxSeconds);
  return Math.round(total * 10) / 10;
}

/** Seconds until keepalive declares an idle connection dead, when SO_KEEPALIVE is on. */
export function keepaliveGiveUpSeconds(time: number, intvl: number, probes: number): number {
  return time + intvl * probes;
}

export interface TcpAlone {
  idleReader: string;
  unackedRequest: string;
}

export function describeTcpAlone(s: { retries2: number; keepaliveTime: number; keepaliveIntvl: number; keepaliveProbes: number }): TcpAlone {
  const ka = keepaliveGiveUpSeconds(s.keepaliveTime, s.keepaliveIntvl, s.keepaliveProbes);
  return {
    idleReader: `never (no keepalive by default; ${ka} s with SO_KEEPALIVE)`,
    unackedRequest: `~${retransmissionGiveUpSeconds(s.retries2)} s (tcp_retries2=${s.retries2})`,
  };
}
