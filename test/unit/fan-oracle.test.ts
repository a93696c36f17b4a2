// The FAN text line in both forms: ours (ISO 8601) and Oracle's as its documentation prints it
// (Oracle RAC Administration and Deployment Guide 12c, "Fast Application Notification High
// Availability Events" and "FAN callouts"). Oracle's documented lines are read as written;
// parse(print(e)) == e for random events in both forms; bad lines get one error naming the key.
import { describe, expect, it } from 'vitest';
import { FAN_FORMS, parseFan, printFan, type FanForm } from '../../src/events/fan-line.js';
import { EVENT_STATUSES, EVENT_TYPES, EventError, FIELDS_BY_TYPE, ROLES, validateEvent, type ServiceEvent } from '../../src/events/service-event.js';
import { prng } from './frame-builder.js';

const utcMs = (y: number, mo: number, d: number, h: number, mi: number, s: number) => Date.UTC(y, mo - 1, d, h, mi, s);

describe("Oracle's documented lines", () => {
  it('reads the SERVICEMEMBER example: date and time with a space, timezone, db_domain, upper-case reason; no card, no incarn', () => {
    const line = 'SERVICEMEMBER VERSION=1.0 service=test.company.com database=ractest instance=ractest11 host=ractest1_host0343_1 status=up reason=FAILURE timestamp=2012-02-01 22:06:02 timezone=-07:00 db_domain=company.com';
    const at = utcMs(2012, 2, 2, 5, 6, 2); // 22:06:02 at -07:00
    expect(parseFan(line)).toEqual({
      type: 'service_member', status: 'UP', reason: 'failure', service: 'test.company.com', database: 'ractest', instance: 'ractest11',
      node: 'ractest1_host0343_1', dbDomain: 'company.com', timestamp: '2012-02-02T05:06:02.000Z', incarnation: at * 1000,
    });
  });

  it('reads an empty db_domain and a card', () => {
    const line = 'SERVICEMEMBER VERSION=1.0 service=swingbench database=orcl instance=orcl_2 host=rwsbj13 status=up reason=USER card=1 timestamp=2012-05-29 17:26:37 timezone=-07:00 db_domain=';
    expect(parseFan(line)).toEqual({
      type: 'service_member', status: 'UP', reason: 'user', service: 'swingbench', database: 'orcl', instance: 'orcl_2', node: 'rwsbj13', cardinality: 1,
      timestamp: '2012-05-30T00:26:37.000Z', incarnation: utcMs(2012, 5, 30, 0, 26, 37) * 1000,
    });
  });

  it("reads the NODE callout example: nodedown, a lower-case reason, Oracle's DD-Mon-YYYY date", () => {
    const line = 'NODE VERSION=1.0 host=sun880-2 incarn=23 status=nodedown reason=public_nw_down timestamp=08-Oct-2012 04:02:14 timezone=-08:00';
    expect(parseFan(line)).toEqual({ type: 'node', status: 'DOWN', reason: 'public_nw_down', node: 'sun880-2', incarnation: 23, timestamp: '2012-10-08T12:02:14.000Z' });
  });

  it("prints Oracle's form as documented: key order, upper-case reason, date and time, timezone, db_domain (NODE: none, nodedown)", () => {
    const member: ServiceEvent = { type: 'service_member', status: 'DOWN', reason: 'failure', incarnation: 7, timestamp: '2026-11-22T10:00:00.250Z', service: 'sales', database: 'orcl', instance: 'orcl1', node: 'node1', cardinality: 2 };
    expect(printFan(member, 'oracle')).toBe('SERVICEMEMBER VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 status=down reason=FAILURE card=2 incarn=7 timestamp=2026-11-22 10:00:00 timezone=+00:00 db_domain=');
    expect(printFan({ ...member, dbDomain: 'example.com', role: 'primary' }, 'oracle')).toBe('SERVICEMEMBER VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 status=down reason=FAILURE card=2 role=primary incarn=7 timestamp=2026-11-22 10:00:00 timezone=+00:00 db_domain=example.com');
    const node: ServiceEvent = { type: 'node', status: 'DOWN', reason: 'failure', incarnation: 9, timestamp: '2026-11-22T10:00:00.000Z', node: 'node1' };
    expect(printFan(node, 'oracle')).toBe('NODE VERSION=1.0 host=node1 incarn=9 status=nodedown reason=FAILURE timestamp=2026-11-22 10:00:00 timezone=+00:00');
    expect(printFan({ ...node, status: 'UP', snapshot: true }, 'oracle')).toBe('NODE VERSION=1.0 host=node1 incarn=9 status=up reason=FAILURE timestamp=2026-11-22 10:00:00 timezone=+00:00 snapshot=true');
    // The default is ours, unchanged.
    expect(printFan(node)).toBe('NODE VERSION=1.0 host=node1 status=down reason=failure incarn=9 timestamp=2026-11-22T10:00:00.000Z');
  });

  it("every line printed in Oracle's form has the shape of Oracle's documented lines", () => {
    // The grammar of Table 5-2's example, written out: TYPE VERSION=1.0, then name=value pairs
    // separated by single spaces; the timestamp alone holds a space; reasons in upper case.
    const shape = /^(SERVICE|SERVICEMEMBER|DATABASE|INSTANCE|NODE) VERSION=1\.0( [a-z_]+=[^ =]*)*? timestamp=\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} timezone=[+-]\d{2}:\d{2}( [a-z_]+=[^ =]*)*$/;
    for (const e of randomEvents(300, 11)) {
      const line = printFan(e, 'oracle');
      expect(line).toMatch(shape);
      expect(line).toMatch(/ reason=[A-Z0-9_-]+( |$)/);
      expect(line.includes(' db_domain=')).toBe(e.type !== 'node');
      expect(line).toMatch(/ status=(up|down|nodedown|not_restarting|coming_up|going_down)( |$)/);
    }
  });
});

describe('round trips, both forms', () => {
  it.each(FAN_FORMS)('parse(print(e, %s)) == e for random events (Oracle: to the second)', (form: FanForm) => {
    let n = 0;
    for (const e of randomEvents(1500, form === 'iso' ? 1 : 2)) {
      const wholeSeconds = { ...e, timestamp: `${e.timestamp.slice(0, 19)}.000Z` };
      expect(parseFan(printFan(e, form))).toEqual(form === 'iso' ? e : wholeSeconds);
      // A whole-second event comes back exactly in either form.
      expect(parseFan(printFan(wholeSeconds, form))).toEqual(wholeSeconds);
      n++;
    }
    expect(n).toBe(1500);
  });

  it('a line parsed from one form prints the same event in the other', () => {
    for (const e of randomEvents(500, 3)) {
      const exact = { ...e, timestamp: `${e.timestamp.slice(0, 19)}.000Z` };
      expect(parseFan(printFan(parseFan(printFan(exact, 'oracle')), 'iso'))).toEqual(exact);
    }
  });
});

describe('bad lines', () => {
  const member = 'SERVICEMEMBER VERSION=1.0 service=s database=d instance=i host=h status=up reason=USER card=1';
  it.each([
    [`${member} timestamp=2012-02-01 22:06:02`, /^timezone: required with Oracle's date and time/],
    [`${member} timestamp=2012-02-01 22:06:02 timezone=0700`, /^timezone: must be \+HH:MM or -HH:MM/],
    [`${member} timestamp=2012-02-01 22:06:02 timezone=+15:00`, /^timezone: must be \+HH:MM or -HH:MM/],
    [`${member} timestamp=2012-02-30 22:06:02 timezone=+00:00`, /^timestamp: no such date and time: 2012-02-30 22:06:02$/],
    [`${member} timestamp=2012-02-01 24:00:00 timezone=+00:00`, /^timestamp: no such date and time/],
    [`${member} timestamp=08-Okt-2012 04:02:14 timezone=+00:00`, /^timestamp: unknown month "Okt"$/],
    [`${member} timestamp=2012-02-01 timezone=+00:00`, /^timestamp: must be Oracle's date and time/],
    [`${member} timestamp=2012-02-01 22:06:02 23:00:00 timezone=+00:00`, /^timestamp: a value with whitespace$/],
    [`${member} timestamp=2026-11-22T10:00:00Z timezone=+00:00`, /^timezone: only with Oracle's date and time/],
    [`${member.replace('status=up', 'status=nodedown')} timestamp=2012-02-01 22:06:02 timezone=+00:00`, /^status: nodedown is for NODE events only$/],
    [`${member.replace('status=up', 'status=UP')} timestamp=2012-02-01 22:06:02 timezone=+00:00`, /^status: must be lower case$/],
    [`${member.replace('status=up', 'status=preconn_up')} timestamp=2012-02-01 22:06:02 timezone=+00:00`, /^status: must be one of/],
    [`${member.replace('reason=USER', 'reason=user')} incarn=1 timestamp=2026-11-22T10:00:00Z`, null],
    [`${member} incarn=1 timestamp=2026-11-22T10:00:00Z`, /^reason: must be a lower-case token/],
    [`${member} timestamp=2012-02-01 22:06:02 timezone=+00:00 drain_timeout=30`, /^drain_timeout: unknown key$/],
    [`${member} timestamp=2012-02-01 22:06:02 timezone=+00:00 snapshot=false`, /^snapshot: must be true when present$/],
    [`${member} timestamp=2012-02-01 22:06:02 timezone=+00:00 host=`, /^host: repeated$/],
    ['NODE VERSION=1.0 host= incarn=1 status=nodedown reason=failure timestamp=2012-02-01 22:06:02 timezone=+00:00', /^host: empty value or a value with =$/],
    ['NODE VERSION=1.0 host=n1 incarn=1 status=nodedown reason=failure timestamp=2012-02-01 22:06:02 timezone=+00:00 db_domain=x.com', /^db_domain: not allowed on a node event$/],
  ])('%s', (line, message) => {
    if (message === null) expect(() => parseFan(line)).not.toThrow();
    else expect(() => parseFan(line)).toThrow(message);
    if (message !== null) expect(() => parseFan(line)).toThrow(EventError);
  });

  it("mutated Oracle lines only ever throw EventError", () => {
    const rnd = prng(17);
    const seeds = randomEvents(40, 5).map((e) => printFan(e, 'oracle'));
    const alphabet = ' =:-+{}"abcXYZ019_.,\n\u00e9';
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      let s = seeds[Math.floor(rnd() * seeds.length)]!;
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
        const at = Math.floor(rnd() * (s.length + 1));
        s = rnd() < 0.5 ? s.slice(0, at) + alphabet[Math.floor(rnd() * alphabet.length)] + s.slice(at + 1) : s.slice(0, at);
      }
      try {
        validateEvent(parseFan(s));
        accepted++;
      } catch (e) {
        expect(e).toBeInstanceOf(EventError);
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });
});

/** Valid events of every type and status, with random names, numbers, times and optional fields. */
function randomEvents(count: number, seed: number): ServiceEvent[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const nameChars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-';
  const name = () => Array.from({ length: 1 + Math.floor(rnd() * 20) }, () => pick([...nameChars])).join('');
  const reasonChars = 'abcdefghijklmnopqrstuvwxyz0123456789_-';
  const reason = () => pick([...'abcdefghijklmnopqrstuvwxyz']) + Array.from({ length: Math.floor(rnd() * 12) }, () => pick([...reasonChars])).join('');
  const int = () => (rnd() < 0.1 ? Number.MAX_SAFE_INTEGER : Math.floor(rnd() * 2 ** Math.floor(rnd() * 53)));
  const out: ServiceEvent[] = [];
  for (let i = 0; i < count; i++) {
    const type = pick(EVENT_TYPES);
    // 1970 .. 2200, millisecond resolution.
    const e: Record<string, unknown> = { type, status: pick(EVENT_STATUSES), reason: reason(), incarnation: int(), timestamp: new Date(Math.floor(rnd() * 7.3e12)).toISOString() };
    if (rnd() < 0.2) e.snapshot = true;
    for (const f of FIELDS_BY_TYPE[type]) {
      if (f === 'cardinality') {
        if (rnd() < 0.8) e.cardinality = int();
      } else if (f === 'role') {
        if (rnd() < 0.5) e.role = pick(ROLES);
      } else if (f === 'dbDomain') {
        if (rnd() < 0.5) e.dbDomain = name();
      } else if (f === 'exitCode') {
        if (e.status === 'DOWN' && rnd() < 0.3) e.exitCode = Math.floor(rnd() * 256);
      } else if (f === 'signal') {
        if (e.status === 'DOWN' && rnd() < 0.2) e.signal = pick(['SIGKILL', 'SIGTERM', 'SIGSEGV']);
      } else e[f] = name();
    }
    out.push(validateEvent(e));
  }
  return out;
}
