// Session signatures (seed 001): recorded when a session connects — the service, database,
// instance and node it landed on — and matched exactly against an event's location to find the
// sessions the change affects. What to do with them (abort, drain, rebalance) is the caller's.
import type { ServiceEvent } from './service-event.js';

export interface SessionSignature {
  service: string;
  database: string;
  instance: string;
  node: string;
}

/** Which signature fields an event of each type must equal (its Table 2 location). */
const MATCH: Readonly<Record<ServiceEvent['type'], ReadonlyArray<keyof SessionSignature>>> = {
  service: ['service', 'database'],
  service_member: ['service', 'database', 'instance', 'node'],
  database: ['database'],
  instance: ['database', 'instance', 'node'],
  node: ['node'],
};

export class SessionRegistry<S> {
  private readonly sessions = new Map<S, SessionSignature>();

  record(session: S, signature: SessionSignature): void {
    this.sessions.set(session, { ...signature });
  }

  forget(session: S): void {
    this.sessions.delete(session);
  }

  get size(): number {
    return this.sessions.size;
  }

  /** The sessions whose signature lies where the event happened. */
  affected(event: ServiceEvent): S[] {
    const fields = MATCH[event.type];
    const out: S[] = [];
    for (const [session, sig] of this.sessions) {
      if (fields.every((f) => event[f] === sig[f])) out.push(session);
    }
    return out;
  }
}
