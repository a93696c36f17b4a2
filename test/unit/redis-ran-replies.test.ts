// The replies of unanswered writes the dead primary ran, rebuilt from the promoted replica's
// state (redis-ran-replies.ts): which connections can be answered, and what each reply is.
import { describe, expect, it } from 'vitest';
import { planRanReplies, ranReplies } from '../../src/agent/redis-ran-replies.js';
import type { LoggedWrite } from '../../src/net/shadow/request-log.js';
import { encodeCommand } from '../../src/net/shadow/resp-continue.js';

/** A logged unanswered write of `words` in database db (rerun kept unless `kept` is false). */
const write = (db: number, words: string[], kept = true): LoggedWrite => ({
  connection: 'c', command: words[0]!.toLowerCase(), key: 'k', sentMs: 1, sentExact: true, answeredMs: null, failed: false,
  ...(kept ? { rerun: { db, argv: words.map((w) => Buffer.from(w)) } } : {}),
});
const replayOf = (...commands: string[][]) => Buffer.concat(commands.map((c) => encodeCommand(c)));

describe('planRanReplies: can the connection be answered, and what must be read', () => {
  it('every unanswered request ran and is a counter write, SET or MSET: the counters\' keys, once each', () => {
    const ran = [write(2, ['INCR', 'a']), write(2, ['SET', 's', 'v']), write(2, ['incrby', 'a', '5']), write(3, ['DECR', 'a']), write(3, ['MSET', 'x', '1', 'y', '2'])];
    const plan = planRanReplies(replayOf(['INCR', 'a'], ['SET', 's', 'v'], ['incrby', 'a', '5'], ['DECR', 'a'], ['MSET', 'x', '1', 'y', '2']), false, ran);
    expect(plan).toEqual({ reads: [{ db: 2, key: Buffer.from('a') }, { db: 3, key: Buffer.from('a') }] });
  });
  it('not when a request did not run or is no write the stream shows, a reply had begun, or a reply depends on the state before', () => {
    const incr = write(0, ['INCR', 'a']);
    expect(planRanReplies(replayOf(['INCR', 'a'], ['GET', 'a']), false, [incr])).toEqual({ why: '1 of its 2 unanswered requests ran as writes the stream shows (the others did not run, or are not such writes)' });
    expect(planRanReplies(replayOf(['INCR', 'a']), true, [incr])).toEqual({ why: 'the dead primary had begun its reply' });
    expect(planRanReplies(Buffer.from('INCR a\r\n'), false, [incr])).toMatchObject({ why: expect.stringMatching(/not whole RESP messages/) });
    expect(planRanReplies(replayOf(['INCR', 'a']).subarray(0, 10), false, [incr])).toEqual({ why: 'its unanswered requests are not whole RESP messages (10 bytes past the last one)' });
    expect(planRanReplies(replayOf(['APPEND', 'a', 'x']), false, [write(0, ['APPEND', 'a', 'x'])])).toEqual({ why: 'the reply to APPEND depends on the state before it' });
    expect(planRanReplies(replayOf(['SET', 'a', 'x', 'EX', '5']), false, [write(0, ['SET', 'a', 'x', 'EX', '5'])])).toEqual({ why: 'the reply to SET depends on the state before it' });
    expect(planRanReplies(replayOf(['INCR', 'a']), false, [write(0, ['INCR', 'a'], false)])).toEqual({ why: 'a INCR too large to keep' });
    expect(planRanReplies(replayOf(['INCRBY', 'a', '01']), false, [write(0, ['INCRBY', 'a', '01'])])).toEqual({ why: 'a INCRBY with arguments Redis would refuse' });
  });
});

describe('ranReplies: each reply from the value now, counted back', () => {
  it('a key\'s last run is its value now; each earlier one that minus the increments after it; SET and MSET +OK', () => {
    const ran = [write(0, ['INCR', 'a']), write(0, ['SET', 's', 'v']), write(0, ['INCRBY', 'a', '10']), write(1, ['DECRBY', 'a', '3']), write(0, ['DECR', 'a'])];
    const values = new Map([['0 a', Buffer.from('20')], ['1 a', Buffer.from('-3')]]);
    // db 0 a: DECR -> 20, INCRBY 10 -> 21, INCR -> 11. db 1 a: DECRBY 3 -> -3.
    expect(ranReplies(ran, values)).toEqual(Buffer.from(':11\r\n+OK\r\n:21\r\n:-3\r\n:20\r\n'));
  });
  it('64-bit values stay exact; a missing key or a value that is no integer: not answered', () => {
    expect(ranReplies([write(0, ['INCR', 'a'])], new Map([['0 a', Buffer.from('9223372036854775807')]]))).toEqual(Buffer.from(':9223372036854775807\r\n'));
    expect(ranReplies([write(0, ['INCR', 'a'])], new Map([['0 a', null]]))).toEqual({ why: 'the promoted server holds nothing at the key of its INCR' });
    expect(ranReplies([write(0, ['INCR', 'a'])], new Map([['0 a', Buffer.from('x')]]))).toEqual({ why: 'the promoted server holds no integer at the key of its INCR' });
  });
});
