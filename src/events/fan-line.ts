// FAN text lines, one event per line, in two forms that differ only in how they spell things:
//  - 'iso' (ours, the default): lower-case reasons, the time as ISO 8601 UTC with milliseconds
//      SERVICEMEMBER VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 status=down
//        reason=failure card=2 incarn=7 timestamp=2026-11-22T10:00:00.000Z
//  - 'oracle': the line Oracle documents for FAN callouts (Oracle RAC Administration and
//    Deployment Guide 12c, "Fast Application Notification High Availability Events", Tables 5-1
//    and 5-2): upper-case reasons, the date and time in whole seconds with a space between them,
//    the zone as its own key, `db_domain` on every event but NODE (empty when there is none), and
//    `status=nodedown` for a node that died:
//      SERVICEMEMBER VERSION=1.0 service=sales database=orcl instance=orcl1 host=node1 status=down
//        reason=FAILURE card=2 incarn=7 timestamp=2026-11-22 10:00:00 timezone=+00:00 db_domain=
//      NODE VERSION=1.0 host=node1 incarn=7 status=nodedown reason=FAILURE timestamp=... timezone=...
//    We print UTC (timezone=+00:00); the time is cut to the second, as Oracle prints it.
// parseFan reads both; a line is Oracle's when its timestamp is Oracle's date and time (also
// Oracle's other documented spelling, 08-Oct-2012 04:02:14), which then needs its timezone.
// Oracle's lines carry `card` only on SERVICEMEMBER UP (so it is optional) and `incarn` only on
// NODE: a line in Oracle's form without it gets the time of the event in microseconds since the
// epoch, the same scale as the agent's own incarnations. Keys are printed in a fixed order;
// parsing accepts any order but rejects unknown and repeated keys, a missing or other VERSION,
// and values with '=' or whitespace (but for the timestamp's time). Errors name the key as written.
// Two keys are ours, not Oracle's: `exit=` and `signal=` on an INSTANCE down (how its process ended).
import { EventError, validateEvent, type EventType, type ServiceEvent } from './service-event.js';

export type FanForm = 'iso' | 'oracle';
export const FAN_FORMS: readonly FanForm[] = ['iso', 'oracle'];

const TYPE_TOKENS: Readonly<Record<EventType, string>> = {
  service: 'SERVICE',
  service_member: 'SERVICEMEMBER',
  database: 'DATABASE',
  instance: 'INSTANCE',
  node: 'NODE',
};
const TYPE_BY_TOKEN = new Map(Object.entries(TYPE_TOKENS).map(([t, token]) => [token, t as EventType]));

// FAN key ↔ event field, in our form's order.
const KEYS: ReadonlyArray<[string, keyof ServiceEvent]> = [
  ['service', 'service'],
  ['database', 'database'],
  ['instance', 'instance'],
  ['host', 'node'],
  ['role', 'role'],
  ['status', 'status'],
  ['reason', 'reason'],
  ['card', 'cardinality'],
  // Not Oracle's: how an instance's process ended (service-event.ts).
  ['exit', 'exitCode'],
  ['signal', 'signal'],
  ['incarn', 'incarnation'],
  ['timestamp', 'timestamp'],
  ['db_domain', 'dbDomain'],
  ['snapshot', 'snapshot'],
];
const FIELD_OF = new Map(KEYS);
const KEY_OF = new Map(KEYS.map(([k, f]) => [f as string, k]));
/** Oracle's key for the zone of its timestamp; no event field (events hold UTC). */
const TIMEZONE = 'timezone';
// Oracle's order (its documented examples), with our keys where they fit.
const ORACLE_ORDER = ['service', 'database', 'instance', 'host', 'status', 'reason', 'card', 'role', 'exit', 'signal', 'incarn', 'timestamp', 'db_domain', 'snapshot'];
const ORACLE_NODE_ORDER = ['host', 'incarn', 'status', 'reason', 'timestamp', 'snapshot'];

const TIME = /^\d{2}:\d{2}:\d{2}$/;
const ORACLE_ISO_DATE = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/;
const ORACLE_MON_DATE = /^(\d{2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2})$/;
const BARE_DATE = /^(\d{4}-\d{2}-\d{2}|\d{2}-[A-Za-z]{3}-\d{4})$/;
const ZONE = /^([+-])(\d{2}):(\d{2})$/;
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];

/**
 * One event as a FAN text line, in our form (`'iso'`, the default) or Oracle's (`'oracle'`).
 * Throws EventError (naming the field) for an event validateEvent refuses.
 */
export function printFan(event: ServiceEvent, form: FanForm = 'iso'): string {
  const e = validateEvent(event);
  const parts = [TYPE_TOKENS[e.type], 'VERSION=1.0'];
  if (form === 'iso') {
    for (const [key, field] of KEYS) {
      const v = e[field];
      if (v !== undefined) parts.push(`${key}=${field === 'status' ? String(v).toLowerCase() : String(v)}`);
    }
    return parts.join(' ');
  }
  for (const key of e.type === 'node' ? ORACLE_NODE_ORDER : ORACLE_ORDER) {
    const field = FIELD_OF.get(key)!;
    const v = e[field];
    if (key === 'db_domain') parts.push(`db_domain=${e.dbDomain ?? ''}`);
    else if (v === undefined) continue;
    else if (key === 'status') parts.push(`status=${e.type === 'node' && e.status === 'DOWN' ? 'nodedown' : e.status.toLowerCase()}`);
    else if (key === 'reason') parts.push(`reason=${e.reason.toUpperCase()}`);
    // validateEvent admits only YYYY-MM-DDTHH:MM:SS[.f]Z: the UTC date and time are its first 19 characters.
    else if (key === 'timestamp') parts.push(`timestamp=${e.timestamp.slice(0, 10)} ${e.timestamp.slice(11, 19)}`, `${TIMEZONE}=+00:00`);
    else parts.push(`${key}=${String(v)}`);
  }
  return parts.join(' ');
}

/** Reads a FAN text line in either form; throws EventError naming the key as the line spells it. */
export function parseFan(line: string): ServiceEvent {
  const tokens = line.trim().split(/\s+/);
  const first = tokens[0] ?? '';
  const type = TYPE_BY_TOKEN.get(first);
  if (!type) throw new EventError('type', `unknown event type "${first.slice(0, 40)}" (expected ${[...TYPE_BY_TOKEN.keys()].join(', ')})`);
  if (tokens[1] !== 'VERSION=1.0') throw new EventError('VERSION', 'the second field must be VERSION=1.0');
  const values = new Map<string, string>();
  let previous: string | undefined;
  let timeJoined = false;
  for (const t of tokens.slice(2)) {
    const eq = t.indexOf('=');
    if (eq < 0) {
      // Oracle's timestamp is a date, a space and a time.
      if (previous === 'timestamp' && !timeJoined && TIME.test(t)) {
        values.set('timestamp', `${values.get('timestamp')} ${t}`);
        timeJoined = true;
        continue;
      }
      // A bare word after key=value is most likely that value's continuation: name the key.
      if (previous !== undefined) throw new EventError(previous, 'a value with whitespace');
      throw new EventError(t.slice(0, 40), 'expected key=value');
    }
    if (eq === 0) throw new EventError(t.slice(0, 40), 'expected key=value');
    const key = t.slice(0, eq);
    const value = t.slice(eq + 1);
    if (!FIELD_OF.has(key) && key !== TIMEZONE) throw new EventError(key.slice(0, 40), 'unknown key');
    if (values.has(key)) throw new EventError(key, 'repeated');
    // Oracle prints `db_domain=` when the database has no domain.
    if (value.includes('=') || (value.length === 0 && key !== 'db_domain')) throw new EventError(key, 'empty value or a value with =');
    values.set(key, value);
    previous = key;
    timeJoined = false;
  }

  const o: Record<string, unknown> = { type };
  const oracle = isOracleLine(values);
  for (const [key, value] of values) {
    if (key === TIMEZONE) continue;
    const field = FIELD_OF.get(key)!;
    if (field === 'status') {
      // Both forms write lower case; take nothing else, so one event has one spelling per form.
      if (value !== value.toLowerCase()) throw new EventError(key, 'must be lower case');
      if (value === 'nodedown' && type !== 'node') throw new EventError(key, 'nodedown is for NODE events only');
      o[field] = value === 'nodedown' ? 'DOWN' : value.toUpperCase();
    } else if (field === 'reason') {
      // Oracle writes reasons in upper case (FAILURE, USER) but NODE reasons in lower case.
      o[field] = oracle ? value.toLowerCase() : value;
    } else if (field === 'cardinality' || field === 'incarnation' || field === 'exitCode') {
      // Canonical decimal (no leading zeros), up to 16 digits: validateEvent then caps it at
      // Number.MAX_SAFE_INTEGER, the same bound as JSON, so every valid event round-trips.
      if (!/^(0|[1-9]\d{0,15})$/.test(value)) throw new EventError(key, 'must be a non-negative integer');
      o[field] = Number(value);
    } else if (field === 'snapshot') {
      if (value !== 'true') throw new EventError(key, 'must be true when present');
      o[field] = true;
    } else if (field === 'dbDomain') {
      if (value !== '') o[field] = value;
    } else if (field === 'timestamp' && oracle) {
      const ms = oracleTime(value, values.get(TIMEZONE));
      o.timestamp = new Date(ms).toISOString();
      if (!values.has('incarn')) o.incarnation = ms * 1000;
    } else o[field] = value;
  }
  if (!oracle && values.has(TIMEZONE)) throw new EventError(TIMEZONE, 'only with Oracle\'s date and time (an ISO 8601 timestamp carries its zone)');
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

/** Oracle's form: its timestamp is a date and time with a space (or a bare date), or it has a timezone. */
function isOracleLine(values: Map<string, string>): boolean {
  const ts = values.get('timestamp');
  if (ts === undefined) return false;
  return ts.includes(' ') || BARE_DATE.test(ts) || (values.has(TIMEZONE) && !ts.includes('T'));
}

/** Oracle's local date and time and its zone to ms since the epoch (UTC); throws EventError. */
function oracleTime(value: string, zone: string | undefined): number {
  let y: number, mo: number, d: number, h: number, mi: number, s: number;
  const iso = ORACLE_ISO_DATE.exec(value);
  const mon = iso ? null : ORACLE_MON_DATE.exec(value);
  if (iso) [y, mo, d, h, mi, s] = iso.slice(1).map(Number) as [number, number, number, number, number, number];
  else if (mon) {
    [d, y, h, mi, s] = [mon[1], mon[3], mon[4], mon[5], mon[6]].map(Number) as [number, number, number, number, number];
    mo = MONTHS.indexOf(mon[2]!.toLowerCase()) + 1;
    if (mo === 0) throw new EventError('timestamp', `unknown month "${mon[2]}"`);
  } else throw new EventError('timestamp', 'must be Oracle\'s date and time (YYYY-MM-DD HH:MM:SS or DD-Mon-YYYY HH:MM:SS) or ISO 8601 UTC');
  // Date.UTC rolls 2026-02-30 over to March 2: a real time survives the round trip unchanged.
  const local = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  if (local.getUTCFullYear() !== y || local.getUTCMonth() !== mo - 1 || local.getUTCDate() !== d || local.getUTCHours() !== h || local.getUTCMinutes() !== mi || local.getUTCSeconds() !== s) {
    throw new EventError('timestamp', `no such date and time: ${value}`);
  }
  if (zone === undefined) throw new EventError(TIMEZONE, 'required with Oracle\'s date and time (e.g. timezone=-07:00)');
  const z = ZONE.exec(zone);
  if (!z || Number(z[2]) > 14 || Number(z[3]) > 59) throw new EventError(TIMEZONE, 'must be +HH:MM or -HH:MM (at most 14 hours)');
  const offsetMin = (z[1] === '-' ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3]));
  return local.getTime() - offsetMin * 60_000;
}
