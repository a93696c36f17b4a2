// The pure parts of a PostgreSQL planned switchover: the backend's process title (the primary's
// barrier: every backend idle) and the catch-up's LSN arithmetic (the standby must replay the
// locked primary's WAL up to its insert position).
import { describe, expect, it } from 'vitest';
import { catchUpTarget, formatLsn, parseLsn } from '../../src/agent/pg-catch-up.js';
import { pgBackendActivity } from '../../src/net/pg-backend-title.js';
import { seededRandom } from './mirror-helpers.js';

describe('pgBackendActivity', () => {
  const title = (s: string) => Buffer.from(`${s}\0\0\0\0`);
  it('tells a backend waiting for its client from one at work', () => {
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) idle'))).toEqual({ kind: 'idle', activity: 'idle' });
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) idle in transaction'))).toEqual({ kind: 'idle', activity: 'idle in transaction' });
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) idle in transaction (aborted)'))).toEqual({ kind: 'idle', activity: 'idle in transaction (aborted)' });
    // cluster_name prefixes the title; an IPv6 client; a unix socket.
    expect(pgBackendActivity(title('postgres: main: app shop 2001:db8::3(40112) idle'))).toEqual({ kind: 'idle', activity: 'idle' });
    expect(pgBackendActivity(title('postgres: app shop [local] idle'))).toEqual({ kind: 'idle', activity: 'idle' });
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) SELECT'))).toEqual({ kind: 'busy', activity: 'SELECT' });
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) UPDATE waiting'))).toEqual({ kind: 'busy', activity: 'UPDATE waiting' });
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) authentication'))).toEqual({ kind: 'busy', activity: 'authentication' });
  });

  it('tells a WAL sender (a standby\'s replication connection) from a client session', () => {
    expect(pgBackendActivity(title('postgres: walsender postgres 198.18.7.2(40112) streaming 0/3004C90'))).toEqual({ kind: 'walsender', activity: 'postgres 198.18.7.2(40112) streaming 0/3004C90' });
    expect(pgBackendActivity(title('postgres: main: walsender rep 198.18.7.2(40112) idle')).kind).toBe('walsender');
  });

  it('says unknown for what is not a client backend\'s title, or one that never changes', () => {
    expect(pgBackendActivity(title('/usr/bin/pgbouncer\0/etc/pgbouncer.ini')).kind).toBe('unknown');
    expect(pgBackendActivity(title('postgres: checkpointer ')).kind).toBe('unknown');
    // update_process_title off: the activity stays empty.
    expect(pgBackendActivity(title('postgres: app shop 198.18.7.3(40112) '))).toEqual({ kind: 'unknown', title: 'postgres: app shop 198.18.7.3(40112)' });
    expect(pgBackendActivity('').kind).toBe('unknown');
  });

  it('fuzz: 2,000 seeded mutations never throw and never call a changed title idle unless it says so', () => {
    const { int } = seededRandom(0x7171e);
    const base = 'postgres: app shop 198.18.7.3(40112) idle in transaction';
    const alphabet = 'a(): \0idle[]';
    for (let i = 0; i < 2000; i++) {
      const chars = [...base];
      for (let k = 0, n = 1 + int(6); k < n; k++) {
        const at = int(chars.length);
        if (int(2)) chars[at] = alphabet[int(alphabet.length)]!;
        else chars.splice(at, 1 + int(4));
      }
      const a = pgBackendActivity(Buffer.from(chars.join('')));
      if (a.kind === 'idle') expect(a.activity).toMatch(/^idle( in transaction( \(aborted\))?)?$/);
    }
  });
});

describe('the catch-up target', () => {
  it('parses and prints LSNs as PostgreSQL does', () => {
    expect(parseLsn('16/B374D848')).toBe(0x16b374d848n);
    expect(parseLsn('0/0')).toBe(0n);
    expect(formatLsn(0x16b374d848n)).toBe('16/B374D848');
    expect(formatLsn(parseLsn('FFFFFFFF/FFFFFFFF'))).toBe('FFFFFFFF/FFFFFFFF');
    for (const bad of ['', '16', '16/', '/1', 'G/1', '1/2/3', '123456789/0', ' 0/1']) expect(() => parseLsn(bad), bad).toThrow(RangeError);
  });

  it('is the insert position, or its page\'s start when that is just past the page header', () => {
    const page = 8192n;
    expect(catchUpTarget(5n * page + 1000n, 8192)).toBe(5n * page + 1000n);
    // No record yet on the page: the insert position points past the header (24 bytes, 40 on a segment's first page).
    expect(catchUpTarget(5n * page + 24n, 8192)).toBe(5n * page);
    expect(catchUpTarget(16n * 1024n * 1024n + 40n, 8192)).toBe(16n * 1024n * 1024n);
    expect(catchUpTarget(5n * page, 8192)).toBe(5n * page);
    expect(catchUpTarget(5n * page + 48n, 8192)).toBe(5n * page + 48n);
    expect(() => catchUpTarget(1n, 0)).toThrow(RangeError);
  });
});
