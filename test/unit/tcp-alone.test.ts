// What TCP alone would do, against the kernel's own documented figures (ip-sysctl.rst).
import { describe, expect, it } from 'vitest';
import { describeTcpAlone, keepaliveGiveUpSeconds, retransmissionGiveUpSeconds } from '../../src/net/tcp-alone.js';

describe('tcp-alone', () => {
  it('tcp_retries2=15 gives the 924.6 s that ip-sysctl.rst states; 8 gives ~100 s (its RFC 1122 minimum)', () => {
    expect(retransmissionGiveUpSeconds(15)).toBe(924.6);
    expect(retransmissionGiveUpSeconds(8)).toBe(102.2);
  });

  it('keepalive with the defaults (7200 s, 75 s x 9) gives up after 7875 s', () => {
    expect(keepaliveGiveUpSeconds(7200, 75, 9)).toBe(7875);
    expect(describeTcpAlone({ retries2: 15, keepaliveTime: 7200, keepaliveIntvl: 75, keepaliveProbes: 9 })).toEqual({
      idleReader: 'never (no keepalive by default; 7875 s with SO_KEEPALIVE)',
      unackedRequest: '~924.6 s (tcp_retries2=15)',
    });
  });
});
