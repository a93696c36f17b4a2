import { describe, expect, it } from 'vitest';
import { parseFan, printFan } from '../../src/events/fan-line.js';
import { IncarnationFilter } from '../../src/events/incarnation-filter.js';
import {
  decodeEventJson, encodeEventJson, EVENT_STATUSES, EVENT_TYPES, EventError, FIELDS_BY_TYPE, isPlanned, OPTIONAL_FIELDS, validateEvent,
  type EventType, type ServiceEvent,
} from '../../src/events/service-event.js';
import { prng } from './frame-builder.js';

const values = { service: 'sales', database: 'orcl', instance: 'orcl1', node: 'node1', cardinality: 2, role: 'primary', dbDomain: 'example.com', exitCode: 1, signal: 'SIGKILL' } as const;
const EXIT_FIELDS: readonly string[] = ['exitCode', 'signal'];
function sample(type: EventType, status: ServiceEvent['status'] = 'DOWN'): ServiceEvent {
  const e: Record<string, unknown> = { type, status, reason: 'failure', incarnation: 7, timestamp: '2026-11-22T10:00:00.000Z' };
  for (const f of FIELDS_BY_TYPE[type]) if (status === 'DOWN' || !EXIT_FIELDS.includes(f)) e[f] = values[f];
  return e as unknown as ServiceEvent;
}
function errorOf(f: () => unknown): EventError {
  try {
    f();
  } catch (e) {
    if (e instanceof EventError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('event model (seed 001 Table 2)', () => {
  it.each(EVENT_TYPES)('%s: exactly its fields', (type) => {
    const e = sample(type);
    expect(validateEvent(e)).toEqual(e);
    for (const f of FIELDS_BY_TYPE[type]) {
      const missing: Record<string, unknown> = { ...e };
      delete missing[f];
      if (OPTIONAL_FIELDS.has(f)) expect(validateEvent(missing)).toEqual(missing);
      else expect(errorOf(() => validateEvent(missing))).toMatchObject({ field: `event.${f}`, message: `event.${f}: required on a ${type} event` });
    }
    for (const f of (['service', 'database', 'instance', 'node', 'cardinality', 'role', 'dbDomain', 'exitCode', 'signal'] as const).filter((x) => !FIELDS_BY_TYPE[type].includes(x))) {
      expect(errorOf(() => validateEvent({ ...e, [f]: values[f] }))).toMatchObject({ message: `event.${f}: not allowed on a ${type} event` });
    }
  });

  it('names the bad field for wrong values, and never mutates the input', () => {
    const e = sample('instance');
    const frozen = Object.freeze({ ...e });
    expect(validateEvent(frozen)).toEqual(e);
    expect(errorOf(() => validateEvent({ ...e, status: 'down' })).field).toBe('event.status');
    expect(errorOf(() => validateEvent({ ...e, cardinality: -1 })).field).toBe('event.cardinality');
    expect(errorOf(() => validateEvent({ ...e, incarnation: 1.5 })).field).toBe('event.incarnation');
    expect(errorOf(() => validateEvent({ ...e, timestamp: 'yesterday' })).field).toBe('event.timestamp');
    expect(errorOf(() => validateEvent({ ...e, service: '' })).field).toBe('event.service');
    expect(errorOf(() => validateEvent({ ...e, role: 'boss' })).field).toBe('event.role');
    expect(errorOf(() => validateEvent({ ...e, colour: 'red' })).message).toBe('event.colour: unknown field');
    expect(errorOf(() => validateEvent([])).field).toBe('event');
    expect(isPlanned({ reason: 'user' })).toBe(true);
    expect(isPlanned({ reason: 'failure' })).toBe(false);
  });
});

describe('wire formats', () => {
  it('JSON and FAN lines round-trip for every type and status', () => {
    for (const type of EVENT_TYPES) {
      for (const status of EVENT_STATUSES) {
        const e = sample(type, status);
        expect(decodeEventJson(encodeEventJson(e))).toEqual(e);
        expect(parseFan(printFan(e))).toEqual(e);
      }
    }
  });

  it('an instance DOWN says how its process ended: exit= and signal= on the FAN line, only on a DOWN', () => {
    const down = { ...sample('instance'), exitCode: undefined, signal: 'SIGKILL' };
    delete down.exitCode;
    expect(printFan(down)).toBe('INSTANCE VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 role=primary status=down reason=failure card=2 signal=SIGKILL incarn=7 timestamp=2026-11-22T10:00:00.000Z db_domain=example.com');
    const line = 'INSTANCE VERSION=1.0 service=db database=db instance=web1 host=n1 status=down reason=failure card=0 exit=3 incarn=1 timestamp=2026-11-22T10:00:00Z';
    expect(parseFan(line)).toMatchObject({ type: 'instance', status: 'DOWN', exitCode: 3 });
    expect(() => parseFan(line.replace('exit=3', 'exit=256'))).toThrow(/^exit: must be an exit code, 0-255$/);
    expect(() => parseFan(line.replace('exit=3', 'exit=-1'))).toThrow(/^exit: must be a non-negative integer$/);
    expect(() => parseFan(line.replace('exit=3', 'signal=KILL'))).toThrow(/^signal: must be a signal name such as SIGKILL$/);
    expect(() => parseFan(line.replace('status=down', 'status=up'))).toThrow(/^exit: only on a DOWN event, not UP$/);
    expect(() => parseFan(line.replace('INSTANCE', 'SERVICEMEMBER'))).toThrow(/^exit: not allowed on a service_member event$/);
    expect(errorOf(() => validateEvent({ ...sample('node'), signal: 'SIGTERM' })).message).toBe('event.signal: not allowed on a node event');
  });

  it('prints and parses the FAN line as ONS does', () => {
    const line = 'SERVICEMEMBER VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 status=down reason=failure card=2 timestamp=2026-11-22T10:00:00Z incarn=3';
    expect(parseFan(line)).toEqual({ type: 'service_member', status: 'DOWN', reason: 'failure', incarnation: 3, timestamp: '2026-11-22T10:00:00Z', service: 'sales', database: 'orcl', instance: 'orcl1', node: 'node1', cardinality: 2 });
    expect(printFan(sample('node'))).toBe('NODE VERSION=1.0 host=node1 status=down reason=failure incarn=7 timestamp=2026-11-22T10:00:00.000Z');
  });

  it.each([
    ['', /unknown event type/],
    ['servicemember VERSION=1.0', /unknown event type/],
    ['NODE host=n1 status=down', /VERSION: the second field must be VERSION=1.0/],
    ['NODE VERSION=2.0 host=n1', /VERSION/],
    ['NODE VERSION=1.0 host=n1 host=n2 status=down reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /host: repeated/],
    ['NODE VERSION=1.0 host=n1 status=down reason=failure incarn=x timestamp=2026-11-22T10:00:00Z', /incarn: must be a non-negative integer/],
    ['NODE VERSION=1.0 host=n1 status=down reason=failure incarn=1', /timestamp: must be an ISO 8601 UTC time/],
    ['NODE VERSION=1.0 host=n1 status=sideways reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /status: must be one of/],
    ['NODE VERSION=1.0 host=n1 service=s status=down reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /service: not allowed on a node event/],
    ['NODE VERSION=1.0 status=down reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /host: required on a node event/],
    ['NODE VERSION=1.0 host=a=b', /host: empty value or a value with =/],
    ['NODE VERSION=1.0 colour=red', /colour: unknown key/],
    ['SERVICE VERSION=1.0 service=s database=d status=up reason=user incarn=1 timestamp=2026-11-22T10:00:00Z card=3', /card: not allowed on a service event/],
  ])('rejects %j', (line, message) => {
    expect(() => parseFan(line)).toThrow(message);
  });

  it('round-trips the largest integers JSON accepts, and rejects non-canonical ones', () => {
    for (const n of [0, 1e15, Number.MAX_SAFE_INTEGER]) {
      const e = { ...sample('instance'), incarnation: n, cardinality: n };
      expect(parseFan(printFan(e))).toEqual(e);
      expect(decodeEventJson(encodeEventJson(e))).toEqual(e);
    }
    const line = (incarn: string) => `NODE VERSION=1.0 host=n1 status=down reason=failure incarn=${incarn} timestamp=2026-11-22T10:00:00Z`;
    expect(() => parseFan(line('007'))).toThrow(/incarn: must be a non-negative integer/);
    expect(() => parseFan(line(String(Number.MAX_SAFE_INTEGER + 1)))).toThrow(/incarn: must be a non-negative integer/);
  });

  it.each(['2026-02-30T10:00:00Z', '2026-11-22T24:00:00Z', '2026-13-01T10:00:00Z', '2026-11-22T10:60:00Z', '2025-02-29T00:00:00Z'])('rejects the impossible time %s', (timestamp) => {
    expect(errorOf(() => validateEvent({ ...sample('node'), timestamp })).field).toBe('event.timestamp');
  });

  it('accepts a leap day', () => {
    expect(validateEvent({ ...sample('node'), timestamp: '2028-02-29T23:59:59.999Z' }).timestamp).toBe('2028-02-29T23:59:59.999Z');
  });

  it.each([
    ['NODE VERSION=1.0 host=node 1 status=down reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /^host: a value with whitespace$/],
    ['NODE VERSION=1.0 host=n1 status=DOWN reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /^status: must be lower case$/],
    ['NODE VERSION=1.0 host=n1 status=Down reason=failure incarn=1 timestamp=2026-11-22T10:00:00Z', /^status: must be lower case$/],
  ])('names the key for %j', (line, message) => {
    expect(() => parseFan(line)).toThrow(message);
  });

  it('refuses to print a value a FAN line cannot carry', () => {
    expect(() => printFan({ ...sample('node'), node: 'a b' })).toThrow(EventError);
  });

  it('random and mutated input only ever throws EventError', () => {
    const rnd = prng(5);
    const seeds = EVENT_TYPES.flatMap((t) => [printFan(sample(t)), encodeEventJson(sample(t))]);
    const alphabet = ' =:{}"abcXYZ019_.-,\n\u00e9';
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      let s = seeds[Math.floor(rnd() * seeds.length)]!;
      for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
        const at = Math.floor(rnd() * (s.length + 1));
        s = rnd() < 0.5 ? s.slice(0, at) + alphabet[Math.floor(rnd() * alphabet.length)] + s.slice(at + 1) : s.slice(0, at);
      }
      for (const parse of [parseFan, decodeEventJson]) {
        try {
          validateEvent(parse(s));
          accepted++;
        } catch (e) {
          expect(e).toBeInstanceOf(EventError);
        }
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });
});

describe('IncarnationFilter', () => {
  it('drops duplicates and older incarnations per source, keeps sources apart, bounds memory', () => {
    const f = new IncarnationFilter(2);
    const a = sample('node');
    expect(f.accept(a)).toBe(true);
    expect(f.accept(a)).toBe(false); // the same event from a second agent
    expect(f.accept({ ...a, incarnation: 6 })).toBe(false);
    expect(f.accept({ ...a, incarnation: 8 })).toBe(true);
    expect(f.accept({ ...a, node: 'node2' })).toBe(true);
    expect(f.dropped).toBe(2);
    expect(f.accept({ ...sample('instance') })).toBe(true); // evicts the least recent source (node1)
    expect(f.accept({ ...a, incarnation: 8 })).toBe(true); // forgotten, so taken again
  });
});
