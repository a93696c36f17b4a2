// The agent's open-files limit as /proc/self/limits gives it, and status's warning when the
// connections its shadows follow would need more fds to be continued than the limit leaves.
import { describe, expect, it } from 'vitest';
import { FD_RESERVE, fdLimitWarning, openFilesLimit, parseOpenFilesLimit } from '../../src/agent/fd-limit.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            20000                524288               files
Max locked memory         8388608              8388608              bytes
`;

describe('openFilesLimit', () => {
  it('reads the soft limit; undefined when unlimited or absent', () => {
    expect(parseOpenFilesLimit(LIMITS)).toBe(20000);
    expect(parseOpenFilesLimit(LIMITS.replace('20000 ', 'unlimited'))).toBeUndefined();
    expect(parseOpenFilesLimit('')).toBeUndefined();
    // This process's own, as Node raised it.
    expect(openFilesLimit()).toBeGreaterThan(0);
  });
});

describe('fdLimitWarning', () => {
  it('warns once two fds per followed connection and the reserve pass the limit', () => {
    const limit = 20000;
    const fits = (limit - FD_RESERVE) / 2;
    expect(fdLimitWarning(fits, limit)).toBeNull();
    expect(fdLimitWarning(fits + 1, limit)).toMatch(new RegExp(`continuing the ${fits + 1} connection\\(s\\) followed needs about ${2 * fits + 2} fds .* limit of 20000 .*EMFILE`));
    expect(fdLimitWarning(1_000_000, undefined)).toBeNull();
  });
});
