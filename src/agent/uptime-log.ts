// The uptime log: one JSON line per event the agent publishes, appended in order, and a summary
// that adds up each member's downtime, planned (an operator's stop: reason 'user') apart from
// unplanned (failures), as availability reports need them apart.
import { appendFile, readFile } from 'node:fs/promises';
import { isPlanned, type ServiceEvent } from '../events/service-event.js';

export interface UptimeRecord {
  timestamp: string;
  type: ServiceEvent['type'];
  status: ServiceEvent['status'];
  planned: boolean;
  reason: string;
  service?: string;
  instance?: string;
  node?: string;
}

export class UptimeLog {
  private tail: Promise<void> = Promise.resolve();
  failures = 0;
  lastError: string | undefined;

  constructor(readonly file: string) {}

  /** Queues one line; writes stay in order and never throw into the agent (counted instead). */
  append(e: ServiceEvent): Promise<void> {
    const rec: UptimeRecord = {
      timestamp: e.timestamp,
      type: e.type,
      status: e.status,
      planned: isPlanned(e),
      reason: e.reason,
      ...(e.service !== undefined ? { service: e.service } : {}),
      ...(e.instance !== undefined ? { instance: e.instance } : {}),
      ...(e.node !== undefined ? { node: e.node } : {}),
    };
    this.tail = this.tail.then(() =>
      appendFile(this.file, `${JSON.stringify(rec)}\n`).catch((err: Error) => {
        this.failures++;
        this.lastError = err.message;
      }),
    );
    return this.tail;
  }
}

export interface Downtime {
  plannedMs: number;
  unplannedMs: number;
  /** Down at the end of the log (counted up to `until`). */
  down: boolean;
}

/**
 * Downtime per subject (`type:service/instance@node`) from uptime records: a DOWN (or
 * NOT_RESTARTING, or GOING_DOWN) opens a period, the next UP closes it; a period counts as
 * planned when the event that opened it was planned.
 */
export function summarizeUptime(records: UptimeRecord[], until = Date.now()): Map<string, Downtime> {
  const out = new Map<string, Downtime>();
  const open = new Map<string, { since: number; planned: boolean }>();
  for (const r of records) {
    const key = `${r.type}:${r.service ?? ''}/${r.instance ?? ''}@${r.node ?? ''}`;
    const t = Date.parse(r.timestamp);
    const d = out.get(key) ?? { plannedMs: 0, unplannedMs: 0, down: false };
    out.set(key, d);
    if (r.status === 'UP') {
      const o = open.get(key);
      if (o) {
        d[o.planned ? 'plannedMs' : 'unplannedMs'] += t - o.since;
        open.delete(key);
      }
      d.down = false;
    } else if (r.status !== 'COMING_UP' && !open.has(key)) {
      open.set(key, { since: t, planned: r.planned });
      d.down = true;
    }
  }
  for (const [key, o] of open) out.get(key)![o.planned ? 'plannedMs' : 'unplannedMs'] += until - o.since;
  return out;
}

export async function readUptimeLog(file: string): Promise<UptimeRecord[]> {
  const text = await readFile(file, 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l, i) => {
      try {
        return JSON.parse(l) as UptimeRecord;
      } catch {
        throw new Error(`${file}: line ${i + 1} is not JSON`);
      }
    });
}
