// The FAN text line of Oracle's notification service (Oracle RAC Administration and Deployment
// Guide 12c, "FAN Callouts", tables 5-1 and 5-2: event types and name=value pairs), one event per line:
//   SERVICEMEMBER VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 status=down
//     reason=failure card=2 incarn=7 timestamp=2026-11-22T10:00:00.000Z
// Keys are printed in a fixed order; parsing accepts any order but rejects unknown and repeated
// keys, a missing or other VERSION, and values with '='. Errors name the key as written.
import { EventError, validateEvent, type EventType, type ServiceEvent } from './service-event.js';

const TYPE_TOKENS: Readonly<Record<EventType, string>> = {
  service: 'SERVICE',
  service_member: 'SERVICEMEMBER',
  database: 'DATABASE',
  instance: 'INSTANCE',
  node: 'NODE',
};
const TYPE_BY_TOKEN = new Map(Object.entries(TYPE_TOKENS).map(([t, token]) => [token, t as EventType]));

// FAN key ↔ event field.
const KEYS: ReadonlyArray<[string, keyof ServiceEvent]> = [
  ['service', 'service'],
  ['database', 'database'],
  ['instance', 'instance'],
  ['host', 'node'],
  ['role', 'role'],
  ['status', 'status'],
  ['reason', 'reason'],
  ['card', 'cardinality'],
  ['incarn', 'incarnation'],
  ['timestamp', 'timestamp'],
];
const FIELD_OF = new Map(KEYS);
const KEY_OF = new Map(KEYS.map(([k, f]) => [f as string, k]));

export function printFan(event: ServiceEvent): string {
  const e = validateEvent(event);
  const parts = [TYPE_TOKENS[e.type], 'VERSION=1.0'];
  for (const [key, field] of KEYS) {
    const v = e[field];
    if (v === undefined) continue;
    parts.push(`${key}=${field === 'status' ? String(v).toLowerCase() : String(v)}`);
  }
  return parts.join(' ');
}

export function parseFan(line: string): ServiceEvent {
  const tokens = line.trim().split(/\s+/);
  const first = tokens[0] ?? '';
  const type = TYPE_BY_TOKEN.get(first);
  if (!type) throw new EventError('type', `unknown event type "${first.slice(0, 40)}" (expected ${[...TYPE_BY_TOKEN.keys()].join(', ')})`);
  if (tokens[1] !== 'VERSION=1.0') throw new EventError('VERSION', 'the second field must be VERSION=1.0');
  const o: Record<string, unknown> = { type };
  const seen = new Set<string>();
  let previous: string | undefined;
  for (const t of tokens.slice(2)) {
    const eq = t.indexOf('=');
    // A bare word after key=value is most likely that value's continuation: name the key.
    if (eq < 0 && previous !== undefined) throw new EventError(previous, 'a value with whitespace');
    if (eq <= 0) throw new EventError(t.slice(0, 40), 'expected key=value');
    const key = t.slice(0, eq);
    const value = t.slice(eq + 1);
    const field = FIELD_OF.get(key);
    if (!field) throw new EventError(key.slice(0, 40), 'unknown key');
    if (seen.has(key)) throw new EventError(key, 'repeated');
    seen.add(key);
    previous = key;
    if (value.length === 0 || value.includes('=')) throw new EventError(key, 'empty value or a value with =');
    if (field === 'status') {
      // printFan writes lower case; take nothing else, so one event has one spelling.
      if (value !== value.toLowerCase()) throw new EventError(key, 'must be lower case');
      o[field] = value.toUpperCase();
    } else if (field === 'cardinality' || field === 'incarnation') {
      // Canonical decimal (no leading zeros), up to 16 digits: validateEvent then caps it at
      // Number.MAX_SAFE_INTEGER, the same bound as JSON, so every valid event round-trips.
      if (!/^(0|[1-9]\d{0,15})$/.test(value)) throw new EventError(key, 'must be a non-negative integer');
      o[field] = Number(value);
    } else o[field] = value;
  }
  try {
    return validateEvent(o);
  } catch (err) {
    if (!(err instanceof EventError)) throw err;
    // Name the key as a FAN line spells it.
    const field = err.field.replace(/^event\./, '');
    const key = KEY_OF.get(field) ?? field;
    throw new EventError(key, err.message.slice(err.field.length + 2));
  }
}
