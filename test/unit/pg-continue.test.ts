// The PostgreSQL continue plugin without a server: the message framer (with a seeded fuzz), the
// request/reply boundaries, the session preamble, the blockers and the goodbye inside a
// transaction, also as a ShadowTable plan from synthetic segments.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { postgresErrorResponse } from '../../src/net/goodbye/postgres.js';
import { cstr, int32, PgMessageFramer, pgMessage } from '../../src/net/pg-framer.js';
import type { ExchangeTracker } from '../../src/net/shadow/exchange-tracker.js';
import { pgContinue } from '../../src/net/shadow/pg-continue.js';
import { pgLoginDialog } from '../../src/net/shadow/pg-login.js';
import { sessionEffect, splitStatements } from '../../src/net/shadow/pg-sql.js';
import { shadowConversation } from './shadow-plan-conversation.js';

/** A small seeded PRNG (mulberry32): the fuzz is the same on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const startupMessage = (params: Record<string, string>) => {
  const body = Buffer.concat([int32(196608), ...Object.entries(params).flatMap(([k, v]) => [cstr(k), cstr(v)]), Buffer.from([0])]);
  return Buffer.concat([int32(body.length + 4), body]);
};
const untyped = (code: number) => Buffer.concat([int32(8), int32(code)]);
const Q = (sql: string) => pgMessage('Q', cstr(sql));
const parse = (name: string, sql: string) => pgMessage('P', cstr(name), cstr(sql), Buffer.from([0, 0]));
const bind = (portal: string, stmt: string) => pgMessage('B', cstr(portal), cstr(stmt), Buffer.from([0, 0, 0, 0, 0, 0]));
const execute = (portal = '') => pgMessage('E', cstr(portal), int32(0));
const close = (kind: 'S' | 'P', name: string) => pgMessage('C', kind, cstr(name));
const sync = () => pgMessage('S');
const flush = () => pgMessage('H');

const authOk = () => pgMessage('R', int32(0));
const paramStatus = (k: string, v: string) => pgMessage('S', cstr(k), cstr(v));
const keyData = () => pgMessage('K', int32(1234), int32(5678));
const ready = (status: 'I' | 'T' | 'E') => pgMessage('Z', status);
const complete = (tag: string) => pgMessage('C', cstr(tag));
const error = (code: string) => postgresErrorResponse({ severity: 'ERROR', code, message: 'boom' });
const rowDesc = () => pgMessage('T', Buffer.from([0, 0]));
const dataRow = (v: string) => pgMessage('D', Buffer.from([0, 1]), int32(Buffer.byteLength(v)), v);

const LOGIN_C = startupMessage({ user: 'app', database: 'shop', application_name: 'test' });
const LOGIN_S = Buffer.concat([authOk(), paramStatus('server_version', '15'), keyData(), ready('I')]);

/** A tracker after a trusted login, with the conversation fed as given (client, server, ...). */
function tracker(...exchange: Buffer[][]): ExchangeTracker {
  const t = pgContinue().createTracker();
  t.clientData(LOGIN_C);
  t.serverData(LOGIN_S);
  for (const [c, s] of exchange) {
    if (c) t.clientData(c);
    if (s) t.serverData(s);
  }
  return t;
}

const sessionQueries = (t: ExchangeTracker) => {
  const p = t.sessionPreamble();
  // The static form: the StartupMessage, then one message group per piece of session state.
  const after = p.bytes.subarray(LOGIN_C.length);
  const framer = new PgMessageFramer({ typed: true, keep: () => 1 << 20 });
  return framer.push(after).map((m) => (m.type === 'Q' ? `Q ${m.body.toString('latin1', 0, m.body.length - 1)}` : m.type === 'P' ? `P ${m.body.toString('latin1').split('\0').slice(0, 2).join(' ')}` : m.type));
};

describe('PgMessageFramer', () => {
  it('frames untyped then typed messages in any chunking, keeping the bodies asked for (seeded fuzz)', () => {
    const random = rng(12);
    for (let round = 0; round < 200; round++) {
      const types = 'QPBEDCSHpZTDdCR1';
      const msgs: { type: string; body: Buffer }[] = [];
      const n = 1 + Math.floor(random() * 12);
      for (let i = 0; i < n; i++) {
        const body = Buffer.alloc(Math.floor(random() * (random() < 0.1 ? 5000 : 40)));
        for (let j = 0; j < body.length; j++) body[j] = Math.floor(random() * 256);
        msgs.push({ type: types[Math.floor(random() * types.length)]!, body });
      }
      const first = startupMessage({ user: `u${round}` });
      const stream = Buffer.concat([first, ...msgs.map((m) => pgMessage(m.type, m.body))]);
      const keep = (t: string) => (t === 'Q' ? 1 << 20 : t === 'D' ? 3 : 0);
      const framer = new PgMessageFramer({ typed: false, keep });
      const got: { type: string; end: number; body: Buffer; truncated: boolean }[] = [];
      let i = 0;
      while (i < stream.length) {
        const len = 1 + Math.floor(random() * 64);
        let chunk = stream.subarray(i, i + len);
        while (chunk.length > 0) {
          const before = framer.offset;
          const out = framer.push(chunk, (m) => m.type === '');
          for (const m of out) {
            got.push(m);
            if (m.type === '') framer.setTyped(true);
          }
          chunk = chunk.subarray(framer.offset - before);
        }
        i += len;
      }
      expect(framer.broken).toBeNull();
      expect(framer.offset).toBe(stream.length);
      expect(got).toHaveLength(n + 1);
      expect(got[0]!.end).toBe(first.length);
      let end = first.length;
      msgs.forEach((m, k) => {
        end += 5 + m.body.length;
        const g = got[k + 1]!;
        expect(g.type).toBe(m.type);
        expect(g.end).toBe(end);
        const kept = Math.min(m.body.length, keep(m.type));
        expect(g.body.equals(m.body.subarray(0, kept))).toBe(true);
        expect(g.truncated).toBe(kept < m.body.length);
      });
    }
  });

  it('says the stream is broken on an implausible length, and never throws on random bytes (seeded fuzz)', () => {
    const f = new PgMessageFramer({ typed: true });
    f.push(Buffer.from([0x51, 0, 0, 0, 2]));
    expect(f.broken).toMatch(/implausible 'Q' message length 2/);
    const s = new PgMessageFramer({ typed: false });
    s.push(int32(20_000));
    expect(s.broken).toMatch(/startup packet length 20000/);
    const random = rng(99);
    for (let round = 0; round < 300; round++) {
      const t = pgContinue().createTracker();
      const bytes = Buffer.alloc(Math.floor(random() * 300));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
      expect(() => {
        t.clientData(random() < 0.5 ? Buffer.concat([LOGIN_C, bytes]) : bytes);
        t.serverData(random() < 0.5 ? Buffer.concat([LOGIN_S, bytes]) : bytes);
        t.blocker();
        t.sessionPreamble();
      }).not.toThrow();
      expect(t.answeredClientBytes()).toBeGreaterThanOrEqual(0);
    }
  });
});

describe('pg-sql', () => {
  it('splits at semicolons outside literals, quoted identifiers, dollar quotes and comments', () => {
    const sql = `SET a = 'x;y'; select "b;c" -- ;\n ; /* ; /* ; */ */ DO $f$ ; $f$; SELECT E'\\';'; ;`;
    expect(splitStatements(sql)!.map((s) => s.text)).toEqual(["SET a = 'x;y'", 'select "b;c" -- ;', "/* ; /* ; */ */ DO $f$ ; $f$", "SELECT E'\\';'"]);
  });

  it('never throws and always ends on random SQL-ish text (seeded fuzz)', () => {
    const random = rng(2026);
    const pieces = ["'", '"', '$$', '$a$', ';', '--', '\n', '/*', '*/', 'E', "\\'", ' ', 'SET ', 'x', '=', 'RESET ', 'PREPARE ', 'LISTEN ', '$1', 'set_config(', 'TEMP '];
    for (let round = 0; round < 2000; round++) {
      let sql = '';
      const n = Math.floor(random() * 30);
      for (let i = 0; i < n; i++) sql += pieces[Math.floor(random() * pieces.length)]!;
      const out = splitStatements(sql);
      expect(out).not.toBeNull();
      expect(out!.length).toBeLessThanOrEqual(sql.split(';').length);
      for (const st of out!) {
        expect(sql.includes(st.text)).toBe(true);
        expect(() => sessionEffect(st)).not.toThrow();
      }
    }
  });

  it('classifies session statements', () => {
    const e = (sql: string) => sessionEffect(splitStatements(sql)![0]!);
    expect(e('SET search_path TO a, b')).toEqual({ kind: 'set', key: 'search_path', text: 'SET search_path TO a, b' });
    expect(e('set session work_mem = 1000')).toMatchObject({ kind: 'set', key: 'work_mem' });
    expect(e('SET TIME ZONE UTC')).toMatchObject({ kind: 'set', key: 'timezone' });
    expect(e('SET myapp.user_id = 7')).toMatchObject({ kind: 'set', key: 'myapp.user_id' });
    expect(e('SET LOCAL work_mem = 1000')).toEqual({ kind: 'other' });
    expect(e('SET TRANSACTION ISOLATION LEVEL SERIALIZABLE')).toEqual({ kind: 'other' });
    expect(e('RESET work_mem')).toEqual({ kind: 'reset', key: 'work_mem' });
    expect(e('RESET ALL')).toEqual({ kind: 'reset-all' });
    expect(e('DISCARD ALL')).toEqual({ kind: 'discard-all' });
    expect(e('PREPARE q1 (int) AS SELECT $1')).toMatchObject({ kind: 'prepare', name: 'q1' });
    expect(e('DEALLOCATE PREPARE q1')).toEqual({ kind: 'deallocate', name: 'q1' });
    expect(e('ROLLBACK TO SAVEPOINT s')).toEqual({ kind: 'rollback-to' });
    expect(e("SELECT 'set_config(' AS x")).toEqual({ kind: 'other' });
    for (const sql of ["SELECT set_config('a.b', '1', false)", 'LISTEN ch', 'CREATE TEMP TABLE t (a int)', 'SELECT 1 INTO TEMPORARY t', 'select pg_advisory_lock(1)', 'DECLARE c CURSOR WITH HOLD FOR SELECT 1']) {
      expect(e(sql).kind).toBe('block');
    }
  });
});

describe('pgContinue tracker', () => {
  it('follows the login: not continuable before its ReadyForQuery, then answered up to it', () => {
    const t = pgContinue().createTracker();
    expect(t.blocker()).toBe('no StartupMessage seen yet');
    t.clientData(LOGIN_C);
    t.serverData(pgMessage('R', int32(5), Buffer.from('salt')));
    t.clientData(pgMessage('p', cstr('md5abc')));
    expect(t.blocker()).toMatch(/login had not finished/);
    t.serverData(LOGIN_S);
    expect(t.blocker()).toBeNull();
    expect(t.goodbye!()).toBeNull();
    expect(t.answeredClientBytes()).toBe(LOGIN_C.length + 5 + 7);
    expect(t.completeServerBytes()).toBe(13 + LOGIN_S.length);
  });

  it('pairs simple queries with their ReadyForQuery, pipelined and in any chunking', () => {
    const client = Buffer.concat([Q('SELECT 1'), Q('SELECT 2'), Q('SELECT 3')]);
    const server = Buffer.concat([rowDesc(), dataRow('1'), complete('SELECT 1'), ready('I'), rowDesc(), dataRow('2')]);
    for (const step of [1, 3, 1000]) {
      const t = pgContinue().createTracker();
      const feed = (b: Buffer, f: (c: Buffer) => void) => {
        for (let i = 0; i < b.length; i += step) f(b.subarray(i, i + step));
      };
      feed(LOGIN_C, (c) => t.clientData(c));
      feed(LOGIN_S, (c) => t.serverData(c));
      feed(client, (c) => t.clientData(c));
      feed(server, (c) => t.serverData(c));
      expect(t.answeredClientBytes()).toBe(LOGIN_C.length + Q('SELECT 1').length);
      // The second reply is in progress: its bytes are the partial reply the shadow fingerprints.
      expect(t.completeServerBytes()).toBe(LOGIN_S.length + rowDesc().length + dataRow('1').length + complete('SELECT 1').length + 6);
      expect(t.blocker()).toBeNull();
    }
  });

  it('pairs an extended-protocol batch up to its Sync; a Flush without Sync blocks until the Sync', () => {
    const t = tracker([Buffer.concat([parse('', 'SELECT $1'), bind('', ''), execute(), flush()]), Buffer.concat([pgMessage('1'), pgMessage('2'), dataRow('x')])]);
    expect(t.blocker()).toMatch(/Flush without Sync/);
    t.clientData(sync());
    t.serverData(Buffer.concat([complete('SELECT 1'), ready('I')]));
    expect(t.blocker()).toBeNull();
    expect(t.answeredClientBytes()).toBe(LOGIN_C.length + parse('', 'SELECT $1').length + bind('', '').length + execute().length + 5 + 5);
  });

  it('keeps committed SETs and named prepared statements for the preamble, in order, and drops what was undone', () => {
    const t = tracker(
      [Q('SET search_path = app, public; SET work_mem = 1024'), Buffer.concat([complete('SET'), complete('SET'), ready('I')])],
      [Q('SET statement_timeout = 5000; SELECT 1/0'), Buffer.concat([complete('SET'), error('22012'), ready('I')])], // implicit transaction rolled back
      [Q('BEGIN'), Buffer.concat([complete('BEGIN'), ready('T')])],
      [Q('SET lock_timeout = 100'), Buffer.concat([complete('SET'), ready('T')])],
      [Q('ROLLBACK'), Buffer.concat([complete('ROLLBACK'), ready('I')])],
      [Q('BEGIN; SET application_name = \'x\'; COMMIT'), Buffer.concat([complete('BEGIN'), complete('SET'), complete('COMMIT'), ready('I')])],
      [Q('SET LOCAL work_mem = 1'), Buffer.concat([complete('SET'), ready('I')])],
      [Buffer.concat([parse('st1', 'SELECT $1::int'), bind('', 'st1'), execute(), sync()]), Buffer.concat([pgMessage('1'), pgMessage('2'), dataRow('1'), complete('SELECT 1'), ready('I')])],
      [Buffer.concat([parse('bad', 'SELEC'), sync()]), Buffer.concat([error('42601'), ready('I')])],
      [Buffer.concat([parse('st2', 'SELECT 2'), sync()]), Buffer.concat([pgMessage('1'), ready('I')])],
      [Buffer.concat([close('S', 'st2'), sync()]), Buffer.concat([pgMessage('3'), ready('I')])],
      [Q('PREPARE q1 AS SELECT 1; PREPARE q2 AS SELECT 2; DEALLOCATE q1'), Buffer.concat([complete('PREPARE'), complete('PREPARE'), complete('DEALLOCATE'), ready('I')])],
      [Q('SET work_mem = 2048'), Buffer.concat([complete('SET'), ready('I')])],
    );
    expect(t.blocker()).toBeNull();
    expect(sessionQueries(t)).toEqual([
      'Q SET search_path = app, public',
      "Q SET application_name = 'x'",
      'Q SET work_mem = 2048',
      'P st1 SELECT $1::int',
      'S',
      'Q PREPARE q2 AS SELECT 2',
    ]);
    const p = t.sessionPreamble();
    expect(p.bytes.subarray(0, LOGIN_C.length).equals(LOGIN_C)).toBe(true);
    expect(p.replies).toBe(1 + 5);
    expect(p.dialog).toBeTypeOf('function');
  });

  it('gives the same answers whatever the chunking (seeded), and closed statements do not pile up', () => {
    const exchange: Buffer[][] = [
      [Q('SET search_path = app; BEGIN'), Buffer.concat([complete('SET'), complete('BEGIN'), ready('T')])],
      [Buffer.concat([parse('s1', 'SELECT 1'), bind('p', 's1'), execute('p'), sync()]), Buffer.concat([pgMessage('1'), pgMessage('2'), dataRow('1'), complete('SELECT 1'), ready('T')])],
      [Q('COMMIT'), Buffer.concat([complete('COMMIT'), ready('I')])],
      [Q('SELECT 2'), rowDesc()],
    ];
    const whole = tracker(...exchange);
    const random = rng(7);
    for (let round = 0; round < 50; round++) {
      const t = pgContinue().createTracker();
      const feed = (b: Buffer, f: (c: Buffer) => void) => {
        for (let i = 0; i < b.length; ) {
          const n = 1 + Math.floor(random() * 40);
          f(b.subarray(i, i + n));
          i += n;
        }
      };
      feed(LOGIN_C, (c) => t.clientData(c));
      feed(LOGIN_S, (c) => t.serverData(c));
      for (const [c, sv] of exchange) {
        feed(c!, (x) => t.clientData(x));
        feed(sv!, (x) => t.serverData(x));
      }
      expect([t.answeredClientBytes(), t.completeServerBytes(), t.blocker()]).toEqual([whole.answeredClientBytes(), whole.completeServerBytes(), null]);
      expect(t.sessionPreamble().bytes.equals(whole.sessionPreamble().bytes)).toBe(true);
    }
    expect(sessionQueries(whole)).toEqual(['Q SET search_path = app', 'P s1 SELECT 1', 'S']);
    const many = tracker();
    for (let i = 0; i < 12_000; i++) {
      many.clientData(Buffer.concat([parse(`S_${i}`, 'SELECT 1'), bind('', `S_${i}`), execute(), close('S', `S_${i}`), sync()]));
      many.serverData(Buffer.concat([pgMessage('1'), pgMessage('2'), complete('SELECT 1'), pgMessage('3'), ready('I')]));
    }
    expect(many.blocker()).toBeNull();
    expect(sessionQueries(many)).toEqual([]);
  });

  it('forgets everything at DISCARD ALL and the settings at RESET ALL (not the role)', () => {
    const t = tracker(
      [Q('SET work_mem = 1; SET ROLE app; PREPARE q AS SELECT 1'), Buffer.concat([complete('SET'), complete('SET'), complete('PREPARE'), ready('I')])],
      [Q('RESET ALL'), Buffer.concat([complete('RESET'), ready('I')])],
    );
    expect(sessionQueries(t)).toEqual(['Q SET ROLE app', 'Q PREPARE q AS SELECT 1']);
    t.clientData(Q('DISCARD ALL'));
    t.serverData(Buffer.concat([complete('DISCARD ALL'), ready('I')]));
    expect(sessionQueries(t)).toEqual([]);
  });

  it('a SET through the extended protocol counts when its Execute completed', () => {
    const t = tracker([Buffer.concat([parse('', 'SET datestyle = ISO'), bind('', ''), execute(), sync()]), Buffer.concat([pgMessage('1'), pgMessage('2'), complete('SET'), ready('I')])]);
    expect(sessionQueries(t)).toEqual(['Q SET datestyle = ISO']);
  });

  it('says goodbye (FATAL 57P01) inside a transaction or a failed one, not between transactions', () => {
    const t = tracker([Q('BEGIN'), Buffer.concat([complete('BEGIN'), ready('T')])]);
    expect(t.blocker()).toBeNull();
    expect(t.goodbye!()).toMatchObject({ reason: expect.stringMatching(/inside a transaction/) });
    expect(t.goodbye!()!.bytes.equals(postgresErrorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' }))).toBe(true);
    t.clientData(Q('SELECT 1/0'));
    t.serverData(Buffer.concat([error('22012'), ready('E')]));
    expect(t.goodbye!()!.reason).toMatch(/failed transaction/);
    t.clientData(Q('ROLLBACK'));
    t.serverData(Buffer.concat([complete('ROLLBACK'), ready('I')]));
    expect(t.goodbye!()).toBeNull();
  });

  it('blocks what it cannot continue, with the reason', () => {
    const cases: [string, (t: ExchangeTracker) => void, RegExp][] = [
      ['TLS', (t) => (t.clientData(untyped(80877103)), t.serverData(Buffer.from('S'))), /encrypted/],
      ['GSS', (t) => (t.clientData(untyped(80877104)), t.serverData(Buffer.from('G'))), /encrypted/],
      ['cancel', (t) => t.clientData(Buffer.concat([int32(16), int32(80877102), int32(1), int32(2)])), /CancelRequest/],
      ['replication', (t) => t.clientData(startupMessage({ user: 'r', replication: 'database' })), /replication connection/],
      ['copy', (t) => (login(t), t.clientData(Q('COPY t FROM STDIN')), t.serverData(pgMessage('G', Buffer.from([0, 0, 0])))), /COPY/],
      ['notify', (t) => (login(t), t.serverData(pgMessage('A', int32(1), cstr('ch'), cstr('hi')))), /NotificationResponse/],
      ['listen', (t) => (login(t), t.clientData(Q('LISTEN ch'))), /LISTEN/],
      ['function call', (t) => (login(t), t.clientData(pgMessage('F', int32(1)))), /FunctionCall/],
      ['temp', (t) => (login(t), t.clientData(Q('select 1; create temporary table t (a int)'))), /temporary/],
      ['long query', (t) => (login(t), t.clientData(Q('SELECT ' + 'x'.repeat(1 << 20)))), /longer than/],
      ['terminate', (t) => (login(t), t.clientData(pgMessage('X'))), /Terminate/],
      ['garbage', (t) => (login(t), t.serverData(Buffer.from('Z\0\0\0\x01'))), /not PostgreSQL/],
    ];
    for (const [name, feed, reason] of cases) {
      const t = pgContinue().createTracker();
      feed(t);
      expect(t.blocker(), name).toMatch(reason);
    }
  });

  it('follows a refused SSLRequest: the answer byte counts in the server offsets', () => {
    const t = pgContinue().createTracker();
    t.clientData(untyped(80877103));
    t.serverData(Buffer.from('N'));
    t.clientData(LOGIN_C);
    t.serverData(LOGIN_S);
    expect(t.blocker()).toBeNull();
    expect(t.answeredClientBytes()).toBe(8 + LOGIN_C.length);
    expect(t.completeServerBytes()).toBe(1 + LOGIN_S.length);
  });

  it('counts replies at each ReadyForQuery', () => {
    const c = pgContinue().createReplyCounter();
    const s = Buffer.concat([LOGIN_S, complete('SET'), ready('I')]);
    expect(c.push(s.subarray(0, 10))).toEqual([]);
    expect(c.push(s.subarray(10))).toEqual([LOGIN_S.length - 10, s.length - 10]);
    expect(c.broken).toBeNull();
  });
});

function login(t: ExchangeTracker): void {
  t.clientData(LOGIN_C);
  t.serverData(LOGIN_S);
}

describe('pgContinue, bytes a capture lost', () => {
  it('skips inside a DataRow\'s values (server) and a CopyData-like body past what is kept (client); not into kept bytes, a header, or past the body', () => {
    const big = 'x'.repeat(5000);
    const reply = Buffer.concat([rowDesc(), dataRow(big), complete('SELECT 1'), ready('I')]);
    const t = tracker([Q('SELECT big FROM t')]);
    const rowAt = rowDesc().length;
    t.serverData(reply.subarray(0, rowAt + 100));
    expect(t.serverGap!(4000)).toBeNull();
    t.serverData(reply.subarray(rowAt + 4100));
    expect(t.blocker()).toBeNull();
    expect(t.completeServerBytes()).toBe(LOGIN_S.length + reply.length);
    // The reply completed: a next query is unanswered, replayable.
    const answered = t.answeredClientBytes();
    t.clientData(Q('SELECT 1'));
    expect(t.answeredClientBytes()).toBe(answered);
    // Into a message's header (between messages): refused, and the tracker says why.
    expect(t.serverGap!(3)).toMatch(/^they reach past a message body's unread part/);
    expect(t.blocker()).toMatch(/^the capture lost 3 server bytes the client acknowledged/);
    // A query's text is kept (the tracker reads it): not skipped.
    const q = pgContinue().createTracker();
    q.clientData(LOGIN_C);
    q.serverData(LOGIN_S);
    q.clientData(Q(big).subarray(0, 50));
    expect(q.clientGap!(10)).toMatch(/^they reach past/);
  });
  it('PgMessageFramer.skipLost: the message completes where the skip ends it; kept bytes and headers are never skipped', () => {
    const f = new PgMessageFramer({ typed: true, keep: (t) => (t === 'E' ? 8 : 0) });
    const d = dataRow('abcdefghij');
    f.push(d.subarray(0, 9));
    expect(f.skipLost(d.length - 9 + 1)).toBeNull(); // past the body
    expect(f.skipLost(d.length - 9)).toEqual([expect.objectContaining({ type: 'D', end: d.length, truncated: true })]);
    expect(f.skipLost(1)).toBeNull(); // between messages
    const e = error('42P01');
    f.push(e.subarray(0, 8));
    expect(f.skipLost(2)).toBeNull(); // inside the 8 bytes kept
    f.push(e.subarray(8, 13));
    expect(f.skipLost(e.length - 13)).toEqual([expect.objectContaining({ type: 'E', end: d.length + e.length })]);
  });
});

describe('pgContinue in a ShadowTable plan', () => {
  const SERVER = { address: '198.18.5.10', port: 5432 };
  const conversation = () => shadowConversation(pgContinue(), SERVER, (seg) => [seg(false, LOGIN_C), seg(true, LOGIN_S)]);

  it('between transactions: a restore that replays the unanswered query after the login preamble', () => {
    const { t, seg } = conversation();
    t.segments([seg(false, Q("SET search_path = 'app'")), seg(true, Buffer.concat([complete('SET'), ready('I')])), seg(false, Q('SELECT 42'))], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.goodbye).toBeUndefined();
    expect(p.replay.equals(Q('SELECT 42'))).toBe(true);
    expect(p.preamble.replies).toBe(2);
  });

  it('inside a transaction with nothing unanswered: a restore that rebuilds it from the request that began it (a COMMIT inside a request moves that start)', () => {
    const { t, seg } = conversation();
    const rfq = (tag: string, status: 'I' | 'T') => Buffer.concat([complete(tag), ready(status)]);
    t.segments([seg(false, Q('SELECT 0')), seg(true, rfq('SELECT 1', 'I')), seg(false, Q('BEGIN')), seg(true, rfq('BEGIN', 'T')), seg(false, Q('SELECT 1')), seg(true, rfq('SELECT 1', 'T'))], 1_000_000);
    let p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.goodbye).toBeUndefined();
    expect(p.transaction?.goodbye.reason).toMatch(/inside a transaction/);
    const requests = Buffer.concat([Q('BEGIN'), Q('SELECT 1')]);
    const before = p.transaction!.replay.before;
    expect(before.includes(Buffer.concat([requests, Q("SELECT current_setting('transaction_isolation')")]))).toBe(true);
    expect(before.subarray(before.length - requests.length).equals(requests)).toBe(true);
    expect(p.replay.length).toBe(0);
    // One request that commits and begins again: the open transaction began in it.
    t.segments([seg(false, Q('COMMIT; BEGIN')), seg(true, Buffer.concat([complete('COMMIT'), complete('BEGIN'), ready('T')]))], 1_000_020);
    p = t.plans(1_000_030)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.transaction!.replay.before.subarray(p.transaction!.replay.before.length - Q('COMMIT; BEGIN').length).equals(Q('COMMIT; BEGIN'))).toBe(true);
    expect(p.transaction!.replay.before.includes(Q('SELECT 1'))).toBe(false);
  });

  it('rebuildTransactions false: inside a transaction, the goodbye at once, saying why', () => {
    const { t, seg } = shadowConversation(pgContinue({ rebuildTransactions: false }), SERVER, (s) => [s(false, LOGIN_C), s(true, LOGIN_S)]);
    t.segments([seg(false, Q('BEGIN')), seg(true, Buffer.concat([complete('BEGIN'), ready('T')]))], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.transaction).toBeUndefined();
    expect(p.goodbye?.reason).toMatch(/inside a transaction.*; not rebuilt: transactions are not rebuilt here \(rebuildTransactions: false\)/);
  });

  it('inside a transaction: a restore with the 57P01 goodbye, nothing replayed; mid-reply: reset', () => {
    const { t, seg } = conversation();
    t.segments([seg(false, Q('BEGIN')), seg(true, Buffer.concat([complete('BEGIN'), ready('T')])), seg(false, Q('UPDATE t SET a = 1'))], 1_000_000);
    const p = t.plans(1_000_010)[0]!;
    if (p.kind !== 'restore') throw new Error(p.reason);
    expect(p.goodbye?.reason).toMatch(/inside a transaction/);
    expect(p.goodbye?.bytes.subarray(0, 1).toString()).toBe('E');
    expect(p.replay.length).toBe(0);
    expect(p.preamble).toEqual({ bytes: Buffer.alloc(0), replies: 0 });
    t.segments([seg(true, rowDesc())], 1_000_020);
    const mid = t.plans(1_000_030)[0]!;
    expect(mid.kind === 'reset' && mid.reason).toMatch(/inside a transaction.*middle of a reply/);
  });
});

describe('pgLoginDialog', () => {
  const plan = { startup: LOGIN_C, user: 'app', password: 'pw', session: Q('SET work_mem = 1'), sessionReplies: 1 };

  it('answers md5 with md5(md5(password + user) + salt), then swallows up to the session\'s ReadyForQuery', () => {
    const d = pgLoginDialog(plan);
    expect(d.start().equals(LOGIN_C)).toBe(true);
    const step = d.push(pgMessage('R', int32(5), Buffer.from([1, 2, 3, 4])));
    // md5(md5('pwapp') + 0x01020304), computed independently with node:crypto.
    const inner = createHash('md5').update('pwapp').digest('hex');
    const outer = createHash('md5').update(Buffer.concat([Buffer.from(inner), Buffer.from([1, 2, 3, 4])])).digest('hex');
    expect(step).toEqual({ kind: 'more', send: pgMessage('p', cstr('md5' + outer)) });
    expect(d.push(LOGIN_S)).toEqual({ kind: 'more', send: Q('SET work_mem = 1') });
    const tail = Buffer.from('rest-of-it');
    expect(d.push(Buffer.concat([complete('SET'), ready('I'), tail]))).toEqual({ kind: 'done', rest: tail });
  });

  it('fails with the reason on an error, an unsupported method, a bad SCRAM signature', () => {
    expect(pgLoginDialog(plan).push(postgresErrorResponse({ severity: 'FATAL', code: '28P01', message: 'password authentication failed' }))).toEqual({ kind: 'failed', reason: 'login refused: FATAL 28P01: password authentication failed' });
    expect(pgLoginDialog(plan).push(pgMessage('R', int32(7)))).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/GSS \(7\) is not supported/) });
    const d = pgLoginDialog(plan);
    const first = d.push(pgMessage('R', int32(10), cstr('SCRAM-SHA-256'), Buffer.from([0])));
    if (first.kind !== 'more') throw new Error('expected a SASLInitialResponse');
    const nonce = /r=([^,\0]+)/.exec(first.send.toString('latin1'))![1]!;
    const cont = d.push(pgMessage('R', int32(11), `r=${nonce}xyz,s=${Buffer.from('salt').toString('base64')},i=4096`));
    expect(cont.kind).toBe('more');
    expect(d.push(pgMessage('R', int32(12), `v=${Buffer.alloc(32).toString('base64')}`))).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/signature does not match/) });
    const e = pgLoginDialog(plan);
    e.push(pgMessage('R', int32(10), cstr('SCRAM-SHA-256'), Buffer.from([0])));
    expect(e.push(pgMessage('R', int32(11), 'r=not-our-nonce,s=c2FsdA==,i=4096'))).toMatchObject({ kind: 'failed', reason: expect.stringMatching(/server-first-message not acceptable/) });
  });

  it('never throws on random upstream bytes (seeded fuzz)', () => {
    const random = rng(5);
    const types = 'RSKZENv1C';
    for (let round = 0; round < 500; round++) {
      const d = pgLoginDialog(plan);
      const msgs: Buffer[] = [];
      for (let i = 0; i < 1 + Math.floor(random() * 6); i++) {
        const body = Buffer.alloc(Math.floor(random() * 12));
        for (let j = 0; j < body.length; j++) body[j] = random() < 0.3 ? Math.floor(random() * 13) : Math.floor(random() * 256);
        msgs.push(pgMessage(types[Math.floor(random() * types.length)]!, body));
      }
      const stream = Buffer.concat(msgs);
      expect(() => {
        for (let i = 0; i < stream.length; i += 7) if (d.push(stream.subarray(i, i + 7)).kind !== 'more') break;
      }).not.toThrow();
    }
  });
});
