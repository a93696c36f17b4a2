// native.realtimeMs(): the wall clock a capture ring stamps frames with, to a fraction of a ms
// (the replay matcher orders probes and captured requests with it). Checked against Date.now()
// (the same clock, truncated to whole ms) and for its fractional part.
import { expect, it } from 'vitest';
import { native } from '../../src/native.js';

it('reads CLOCK_REALTIME in ms with a fractional part, within Date.now()\'s truncation', () => {
  let fractional = 0;
  for (let i = 0; i < 1000; i++) {
    const before = Date.now();
    const t = native.realtimeMs();
    const after = Date.now();
    // 1 ms of slack each way: V8's Date.now() reads the clock on its own (and rounds it).
    expect(t).toBeGreaterThanOrEqual(before - 1);
    expect(t).toBeLessThan(after + 2);
    if (t % 1 !== 0) fractional++;
  }
  expect(fractional).toBeGreaterThan(990);
});
