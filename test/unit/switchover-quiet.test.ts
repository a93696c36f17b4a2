// The planned switchover's quiet verdict (src/agent/switchover-quiet.ts), from two samples of the
// locked connections' queues. The queues themselves come from sock_diag (sockdiag.test.ts).
import { expect, it } from 'vitest';
import { quietVerdict, type QueueSample } from '../../src/agent/switchover-quiet.js';

it('quiet: every connection read everything and its send queue stayed; else says what is not', () => {
  const s = (entries: Array<[string, number, number]>): QueueSample => new Map(entries.map(([k, tx, rx]) => [k, [tx, rx] as const]));
  expect(quietVerdict(s([['c|1', 10, 0], ['c|2', 0, 0]]), s([['c|1', 10, 0], ['c|2', 0, 0]]))).toEqual({ quiet: true });
  expect(quietVerdict(s([['c|1', 10, 0]]), s([]))).toEqual({ quiet: true }); // closed meanwhile: not moved
  expect(quietVerdict(s([['c|1', 10, 5]]), s([['c|1', 10, 5]]))).toEqual({ quiet: false, why: '1 with requests not read yet' });
  expect(quietVerdict(s([['c|1', 10, 0]]), s([['c|1', 20, 0]]))).toEqual({ quiet: false, why: '1 still being written to' });
  expect(quietVerdict(s([]), s([['c|1', 0, 0], ['c|2', 0, 3]]))).toEqual({ quiet: false, why: '1 with requests not read yet, 2 new' });
});
