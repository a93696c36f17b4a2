// pgReadOnlyReplay: which replays may run read-only, and the judge of the new upstream's replies
// (SET's dropped, the replay's held and passed or failed, RESET's dropped), fed in any chunking
// and with bytes that are not PostgreSQL. The same against a real server: pg-relay.test.ts.
import { describe, expect, it } from 'vitest';
import type { ReadOnlyJudge, ReadOnlyReplay } from '../../src/net/shadow/exchange-tracker.js';
import { pgMessage } from '../../src/net/pg-framer.js';
import { postgresErrorResponse } from '../../src/net/goodbye/postgres.js';
import { MAX_HELD_BYTES, pgReadOnlyReplay } from '../../src/net/shadow/pg-read-only-replay.js';

const Q = (sql: string) => pgMessage('Q', sql, Buffer.from([0]));
const parse = (sql: string) => pgMessage('P', '\0', sql, Buffer.from([0, 0, 0]));
const bind = () => pgMessage('B', '\0\0', Buffer.from([0, 0, 0, 0, 0, 0]));
const execute = () => pgMessage('E', '\0', Buffer.from([0, 0, 0, 0]));
const sync = () => pgMessage('S');
const ready = (status: string) => pgMessage('Z', status);
const complete = (tag: string) => pgMessage('C', tag, Buffer.from([0]));
const row = (v: string) => pgMessage('D', Buffer.from([0, 1, 0, 0, 0, v.length]), v);
const paramStatus = (k: string, v: string) => pgMessage('S', k, Buffer.from([0]), v, Buffer.from([0]));
const error = (code: string, message: string) => postgresErrorResponse({ severity: 'ERROR', code, message });

function replayOf(bytes: Buffer, keys: string[] = []): ReadOnlyReplay {
  const r = pgReadOnlyReplay(bytes, keys);
  if (typeof r === 'string') throw new Error(r);
  return r;
}

/** Feeds the judge `bytes` in chunks of `size`; the steps that were not `more`. */
function feed(judge: ReadOnlyJudge, bytes: Buffer, size: number) {
  const steps = [];
  for (let i = 0; i < bytes.length; i += size) {
    const s = judge.push(bytes.subarray(i, i + size));
    if (s.kind !== 'more') steps.push(s);
    if (s.kind === 'failed' || s.kind === 'done') break;
  }
  return steps;
}

const SET_REPLY = Buffer.concat([complete('SET'), paramStatus('default_transaction_read_only', 'on'), ready('I')]);
const RESET_REPLY = Buffer.concat([complete('RESET'), paramStatus('default_transaction_read_only', 'off'), ready('I')]);

describe('which replays may run read-only', () => {
  it('simple queries and complete extended batches may; the judge waits for one reply per Query and Sync', () => {
    const r = replayOf(Buffer.concat([Q('SELECT 1; SELECT 2'), parse('SELECT $1'), bind(), execute(), sync()]));
    expect(r.before).toEqual(Q('SET default_transaction_read_only = on'));
    const replies = Buffer.concat([row('1'), complete('SELECT 1'), row('2'), complete('SELECT 1'), ready('I'), pgMessage('1'), pgMessage('2'), row('x'), complete('SELECT 1'), ready('I')]);
    const steps = feed(r.createJudge(), Buffer.concat([SET_REPLY, replies]), 1 << 20);
    expect(steps).toEqual([{ kind: 'passed', replies, send: Q('RESET default_transaction_read_only') }]);
  });

  it.each([
    ['a session that set the mode', [Q('SELECT 1')], ['default_transaction_read_only'], /the session set its own read-only mode/],
    ['SESSION CHARACTERISTICS', [Q('SELECT 1')], ['session characteristics'], /the session set its own read-only mode/],
    ['READ WRITE', [Q('BEGIN READ WRITE; INSERT INTO t VALUES (1); COMMIT')], [], /READ WRITE/],
    ['the setting', [Q('SET default_transaction_read_only = off; COMMIT; INSERT INTO t VALUES (1)')], [], /a read-only setting/],
    ['RESET ALL', [Q('RESET ALL')], [], /RESET ALL/],
    ['DISCARD ALL in a Parse', [parse('DISCARD ALL'), bind(), execute(), sync()], [], /DISCARD ALL/],
    ['CALL', [Q('CALL p()')], [], /CALL/],
    ['DO', [Q("DO $$ BEGIN PERFORM 1; END $$")], [], /DO block/],
    ['an unsynced batch', [parse('SELECT 1'), bind(), execute()], [], /no Sync yet/],
    ['half a message', [Q('SELECT 1').subarray(0, 7)], [], /ends inside a message/],
    ['a Flush', [parse('SELECT 1'), pgMessage('H'), sync()], [], /'H' message/],
    ['not PostgreSQL', [Buffer.from('GET / HTTP/1.1\r\n\r\n')], [], /not PostgreSQL messages/],
  ])('not: %s', (_, parts, keys, why) => {
    const r = pgReadOnlyReplay(Buffer.concat(parts as Buffer[]), keys as string[]);
    expect(typeof r).toBe('string');
    expect(r).toMatch(why as RegExp);
  });

  it('words inside literals and comments are not statements: a read that mentions them may', () => {
    expect(typeof pgReadOnlyReplay(Q("SELECT 'read write' AS a /* call */ -- do\n"), [])).toBe('object');
  });
});

describe('the judge', () => {
  const simple = () => replayOf(Q('SELECT v FROM t')).createJudge();
  const readReply = Buffer.concat([pgMessage('T', Buffer.alloc(2)), row('7'), complete('SELECT 1'), ready('I')]);

  it('passes a read in any chunking, drops the SET and RESET replies, hands the client what follows', () => {
    for (const size of [1, 3, 7, 64, 1 << 20]) {
      const j = simple();
      const steps = feed(j, Buffer.concat([SET_REPLY, readReply]), size);
      expect(steps).toEqual([{ kind: 'passed', replies: readReply, send: Q('RESET default_transaction_read_only') }]);
      const client = Buffer.concat([row('next'), ready('I')]);
      // RESET's reply and the client's first reply in one chunk: the rest is the client's.
      expect(feed(j, Buffer.concat([RESET_REPLY, client]), 1 << 20)).toEqual([{ kind: 'done', rest: client }]);
    }
  });

  it('fails a write (25006) at once, naming it', () => {
    const j = simple();
    const steps = feed(j, Buffer.concat([SET_REPLY, error('25006', 'cannot execute INSERT in a read-only transaction'), ready('I')]), 5);
    expect(steps).toEqual([{ kind: 'failed', reason: 'the replayed request writes (cannot execute INSERT in a read-only transaction), and whether the dead primary committed it is not known' }]);
  });

  it('passes another error: it is the request\'s own answer', () => {
    const reply = Buffer.concat([error('42P01', 'relation "t" does not exist'), ready('I')]);
    expect(feed(simple(), Buffer.concat([SET_REPLY, reply]), 1 << 20)).toEqual([{ kind: 'passed', replies: reply, send: Q('RESET default_transaction_read_only') }]);
  });

  it('fails a transaction left open, a refused SET or RESET, a ReadyForQuery nobody asked for, bytes that are not PostgreSQL', () => {
    expect(feed(simple(), Buffer.concat([SET_REPLY, complete('BEGIN'), ready('T')]), 9)[0]).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/transaction open \(ReadyForQuery 'T'\)/) });
    expect(feed(simple(), Buffer.concat([error('42501', 'permission denied'), ready('I')]), 9)[0]).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/refused SET default_transaction_read_only \(42501: permission denied\)/) });
    const j = simple();
    feed(j, Buffer.concat([SET_REPLY, readReply]), 1 << 20);
    expect(feed(j, Buffer.concat([error('XX000', 'odd'), ready('I')]), 1 << 20)[0]).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/refused RESET/) });
    expect(feed(simple(), Buffer.concat([SET_REPLY, readReply, ready('I')]), 1 << 20)[0]).toMatchObject({ kind: 'failed', reason: 'a ReadyForQuery the new upstream was not asked for' });
    expect(feed(simple(), Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), 1 << 20)[0]).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/cannot be read: implausible/) });
  });

  it(`fails replies past ${MAX_HELD_BYTES} bytes held`, () => {
    const j = simple();
    j.push(SET_REPLY);
    const big = row('x'.repeat(255));
    let step: ReturnType<ReadOnlyJudge['push']> = { kind: 'more' };
    const chunk = Buffer.concat(Array.from({ length: 4096 }, () => big));
    for (let i = 0; i < Math.ceil(MAX_HELD_BYTES / chunk.length) + 1 && step.kind === 'more'; i++) step = j.push(chunk);
    expect(step).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/passed \d+ bytes before they ended/) });
  });

  it('never throws on random bytes (bounded fuzz, seeded)', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let n = 0; n < 2000; n++) {
      const j = simple();
      const bytes = Buffer.from(Array.from({ length: Math.floor(rand() * 200) }, () => Math.floor(rand() * 256)));
      // Half the runs start with a valid SET reply, so the replay part is fuzzed too.
      const input = n % 2 ? Buffer.concat([SET_REPLY, bytes]) : bytes;
      expect(() => feed(j, input, 1 + Math.floor(rand() * 16))).not.toThrow();
      expect(() => pgReadOnlyReplay(bytes, [])).not.toThrow();
    }
  });
});
