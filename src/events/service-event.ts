// The FAN event model (seed 001 Tables 1 and 2, seed 000 Table 3). Every event has an envelope
// (type, status, reason, incarnation, timestamp; `snapshot` on the state an agent sends a new
// subscriber) and exactly the location fields its type's row of Table 2 names (role, cardinality
// and Oracle's db_domain may be absent); anything missing or extra is rejected with the field
// named, so a subscriber can match an event against session signatures without guessing.

export const EVENT_TYPES = ['service', 'service_member', 'database', 'instance', 'node'] as const;
export const EVENT_STATUSES = ['UP', 'DOWN', 'NOT_RESTARTING', 'COMING_UP', 'GOING_DOWN'] as const;
export const ROLES = ['primary', 'secondary', 'offline'] as const;

export type EventType = (typeof EVENT_TYPES)[number];
export type EventStatus = (typeof EVENT_STATUSES)[number];
export type Role = (typeof ROLES)[number];

export interface ServiceEvent {
  type: EventType;
  status: EventStatus;
  /**
   * The cause, one lower-case token: 'user' for a planned change (an operator's stop or start),
   * anything else ('failure', 'hang', 'link', ...) for an unplanned one. `isPlanned()` says which.
   */
  reason: string;
  /** Orders the events of one source; a subscriber drops one not above the last it took. */
  incarnation: number;
  /** ISO 8601, UTC. */
  timestamp: string;
  service?: string;
  database?: string;
  instance?: string;
  node?: string;
  role?: Role;
  /**
   * How many members serve the service after the change (for rebalancing on UP). The agent always
   * sets it; Oracle's own lines carry `card` only on SERVICEMEMBER UP, so it is optional.
   */
  cardinality?: number;
  /** Oracle's `db_domain` (the database's domain), when the source has one; never on node events. */
  dbDomain?: string;
  /**
   * An instance DOWN only, when its process exited by itself and the agent that ran it read its
   * status: the exit code (0-255), or the signal that ended it (`SIGKILL`). Neither for a hang,
   * nor for a process watched by pid (not the agent's child: its status is not the agent's to read).
   */
  exitCode?: number;
  signal?: string;
  /**
   * Present (always `true`) on the events an agent sends a subscriber when it connects: the state
   * as the agent holds it then (its `status`), not a change. Live events never carry it.
   */
  snapshot?: true;
}

type LocationField = 'service' | 'database' | 'instance' | 'node' | 'cardinality' | 'role' | 'dbDomain' | 'exitCode' | 'signal';

/**
 * Table 2: the location fields each type carries. All are required but `role`, `cardinality`,
 * `dbDomain`, `exitCode` and `signal` (see OPTIONAL_FIELDS; the last two only on a DOWN).
 */
export const FIELDS_BY_TYPE: Readonly<Record<EventType, readonly LocationField[]>> = {
  service: ['service', 'database', 'dbDomain'],
  service_member: ['service', 'database', 'instance', 'node', 'cardinality', 'role', 'dbDomain'],
  database: ['service', 'database', 'cardinality', 'dbDomain'],
  instance: ['service', 'database', 'instance', 'node', 'cardinality', 'role', 'dbDomain', 'exitCode', 'signal'],
  node: ['node'],
};
export const OPTIONAL_FIELDS: ReadonlySet<LocationField> = new Set(['role', 'cardinality', 'dbDomain', 'exitCode', 'signal']);
const LOCATION_FIELDS: ReadonlySet<string> = new Set(Object.values(FIELDS_BY_TYPE).flat());
const SIGNAL = /^SIG[A-Z0-9+]{1,12}$/;
const ENVELOPE = ['type', 'status', 'reason', 'incarnation', 'timestamp', 'snapshot'] as const;
const NAME = /^[A-Za-z0-9_.:@-]{1,128}$/;
const CAUSE = /^[a-z][a-z0-9_-]{0,31}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

export class EventError extends Error {
  override readonly name = 'EventError';
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
  }
}

export function isPlanned(e: Pick<ServiceEvent, 'reason'>): boolean {
  return e.reason === 'user';
}

/** Checks an untrusted value and returns a ServiceEvent copy; throws EventError naming the field. */
export function validateEvent(input: unknown): ServiceEvent {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new EventError('event', 'not an object');
  const o = input as Record<string, unknown>;
  const type = oneOf(o, 'type', EVENT_TYPES);
  const out: ServiceEvent = {
    type,
    status: oneOf(o, 'status', EVENT_STATUSES),
    reason: str(o, 'reason', CAUSE, 'a lower-case token such as failure or user'),
    incarnation: int(o, 'incarnation'),
    timestamp: timestamp(o),
  };
  if (o.snapshot !== undefined) {
    if (o.snapshot !== true) throw new EventError('event.snapshot', 'must be true when present');
    out.snapshot = true;
  }
  const allowed = FIELDS_BY_TYPE[type];
  for (const key of Object.keys(o)) {
    if ((ENVELOPE as readonly string[]).includes(key)) continue;
    if (!(allowed as readonly string[]).includes(key)) {
      throw new EventError(`event.${key}`, LOCATION_FIELDS.has(key) ? `not allowed on a ${type} event` : 'unknown field');
    }
  }
  for (const f of allowed) {
    if (o[f] === undefined) {
      if (OPTIONAL_FIELDS.has(f)) continue;
      throw new EventError(`event.${f}`, `required on a ${type} event`);
    }
    if ((f === 'exitCode' || f === 'signal') && out.status !== 'DOWN') throw new EventError(`event.${f}`, `only on a DOWN event, not ${out.status}`);
    if (f === 'cardinality') out.cardinality = int(o, f);
    else if (f === 'role') out.role = oneOf(o, 'role', ROLES);
    else if (f === 'exitCode') {
      out.exitCode = int(o, f);
      if (out.exitCode > 255) throw new EventError('event.exitCode', 'must be an exit code, 0-255');
    } else if (f === 'signal') out.signal = str(o, f, SIGNAL, 'a signal name such as SIGKILL');
    else out[f] = str(o, f, NAME, 'a name of 1-128 letters, digits and _.:@-');
  }
  return out;
}

export function encodeEventJson(e: ServiceEvent): string {
  return JSON.stringify(validateEvent(e));
}

export function decodeEventJson(text: string): ServiceEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new EventError('event', `not JSON: ${(err as Error).message}`);
  }
  return validateEvent(parsed);
}

function oneOf<T extends string>(o: Record<string, unknown>, key: string, values: readonly T[]): T {
  const v = o[key];
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) throw new EventError(`event.${key}`, `must be one of ${values.join(', ')}`);
  return v as T;
}

function str(o: Record<string, unknown>, key: string, re: RegExp, what: string): string {
  const v = o[key];
  if (typeof v !== 'string' || !re.test(v)) throw new EventError(`event.${key}`, `must be ${what}`);
  return v;
}

function int(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new EventError(`event.${key}`, 'must be a non-negative integer');
  return v;
}

function timestamp(o: Record<string, unknown>): string {
  const v = o.timestamp;
  if (typeof v !== 'string' || !ISO_UTC.test(v) || !isCalendarTime(v)) throw new EventError('event.timestamp', 'must be an ISO 8601 UTC time');
  return v;
}

// Date.parse rolls 2026-02-30 over to March 2 and 24:00 to the next day; a real time survives a
// round trip through Date.UTC with every component unchanged.
function isCalendarTime(v: string): boolean {
  const [y, mo, d, h, mi, s] = [0, 5, 8, 11, 14, 17].map((at) => Number(v.slice(at, at === 0 ? 4 : at + 2))) as [number, number, number, number, number, number];
  const t = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return t.getUTCFullYear() === y && t.getUTCMonth() === mo - 1 && t.getUTCDate() === d && t.getUTCHours() === h && t.getUTCMinutes() === mi && t.getUTCSeconds() === s;
}
