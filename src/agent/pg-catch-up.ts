// Before a planned switchover promotes the local PostgreSQL standby, it must hold every commit
// the primary acknowledged. By then the primary is locked and its backends idle (every reply,
// each commit's among them, written: barrier 'pg-idle'), so every acknowledged commit lies in
// WAL before the primary's insert position, read once under the lock; the standby has caught up
// once it has replayed that far (pg_last_wal_replay_lsn: promotion then starts from all of it).
// The primary is read at its own address (config `switchover.primary`), which the lock, on the
// service address only, leaves open. Reads with node-postgres (the standard client, already the
// pool adapter's); the positions need no privilege (any login both servers accept: `switchover.user`).
import { performance } from 'node:perf_hooks';
import type pg from 'pg';

/** The long page header's size, bytes (XLogLongPageHeaderData: a segment's first page). */
const LONG_PAGE_HEADER_BYTES = 40;

/** An LSN as PostgreSQL prints it (`16/B374D848`: high and low 32 bits, hex) as a number. Throws RangeError. Pure. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(text);
  if (!m) throw new RangeError(`${JSON.stringify(text.slice(0, 40))} is not an LSN (X/Y, hex)`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** The LSN as PostgreSQL prints it. Pure. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/**
 * What the standby must have replayed (pure): the primary's insert position, except when it sits
 * just past a page header (no record yet on that page: pg_current_wal_insert_lsn points where the
 * next record would start, after the header, while the last record ended at the page's start,
 * where a standby's replay stops). `walBlockSize`: wal_block_size, bytes.
 */
export function catchUpTarget(insert: bigint, walBlockSize: number): bigint {
  if (!Number.isInteger(walBlockSize) || walBlockSize < 1024) throw new RangeError(`wal_block_size ${walBlockSize} is not a block size`);
  const intoPage = insert % BigInt(walBlockSize);
  return intoPage > 0n && intoPage <= BigInt(LONG_PAGE_HEADER_BYTES) ? insert - intoPage : insert;
}

export interface PgCatchUpOptions {
  /** The primary at its own address (not the service address: the lock drops that). */
  primary: { host: string; port: number };
  /** The local standby (the takeover's upstream). */
  standby: { host: string; port: number };
  user: string;
  database: string;
  password?: string;
  /** The whole catch-up's bound (logins, queries, the wait for the replay), ms (default 5000): the lock holds meanwhile. */
  timeoutMs?: number;
}

export interface PgCatchUp {
  /** The primary's insert position under the lock, and the target derived from it. */
  insert: string;
  target: string;
  /** The standby's replay position once it reached the target. */
  replayed: string;
  waitedMs: number;
}

/**
 * Resolves once the standby replayed the locked primary's WAL up to its insert position;
 * rejects naming the server and why (cannot log in, the primary is itself in recovery, the
 * standby is not one, or not of this primary: another system identifier; the standby did not
 * reach the target), all within timeoutMs.
 */
export async function pgCatchUp(o: PgCatchUpOptions): Promise<PgCatchUp> {
  const t0 = performance.now();
  const timeoutMs = o.timeoutMs ?? 5000;
  const left = () => Math.max(1, Math.round(timeoutMs - (performance.now() - t0)));
  // Loaded when used: node-postgres takes ~70 ms to load, which most agents' starts need not pay.
  const { default: driver } = await import('pg');
  const clients: pg.Client[] = [];
  const open = (at: { host: string; port: number }, role: string) => connect(driver, o, at, role, left(), clients);
  try {
    const [primary, standby] = await Promise.all([open(o.primary, 'primary'), open(o.standby, 'standby')]);
    const p = (await query(primary, 'primary', "SELECT pg_is_in_recovery() AS recovery, pg_current_wal_insert_lsn()::text AS insert, current_setting('wal_block_size') AS block, (SELECT system_identifier FROM pg_control_system())::text AS system", left())) as { recovery: boolean; insert: string | null; block: string; system: string };
    if (p.recovery || p.insert === null) throw new Error(`the primary ${o.primary.host}:${o.primary.port} is in recovery itself: it is not the primary`);
    const insert = parseLsn(p.insert);
    const target = catchUpTarget(insert, Number(p.block));
    for (let i = 0; i < 100_000; i++) {
      const s = (await query(standby, 'standby', 'SELECT pg_is_in_recovery() AS recovery, pg_last_wal_replay_lsn()::text AS replayed, (SELECT system_identifier FROM pg_control_system())::text AS system', left())) as { recovery: boolean; replayed: string | null; system: string };
      if (!s.recovery || s.replayed === null) throw new Error(`the upstream ${o.standby.host}:${o.standby.port} is not a standby: nothing tells that it holds the primary's commits`);
      if (s.system !== p.system) throw new Error(`the upstream ${o.standby.host}:${o.standby.port} is not a standby of the primary ${o.primary.host}:${o.primary.port} (system identifier ${s.system}, the primary's ${p.system})`);
      const replayed = parseLsn(s.replayed);
      if (replayed >= target) return { insert: p.insert, target: formatLsn(target), replayed: s.replayed, waitedMs: Math.round(performance.now() - t0) };
      if (performance.now() - t0 > timeoutMs) throw new Error(`the standby did not catch up in ${timeoutMs} ms (replayed ${s.replayed} of the primary's ${formatLsn(target)})`);
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error('the catch-up ran out of rounds');
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

async function connect(driver: typeof pg, o: PgCatchUpOptions, at: { host: string; port: number }, role: string, timeoutMs: number, clients: pg.Client[]): Promise<pg.Client> {
  const client = new driver.Client({ host: at.host, port: at.port, user: o.user, database: o.database, ...(o.password !== undefined ? { password: o.password } : {}), connectionTimeoutMillis: timeoutMs });
  clients.push(client);
  // An error after the connect (the server going away) must not be an uncaught 'error' event.
  client.on('error', () => undefined);
  try {
    await client.connect();
    return client;
  } catch (err) {
    throw new Error(`the ${role} ${at.host}:${at.port} (user ${o.user}, database ${o.database}): ${(err as Error).message}`);
  }
}

async function query(client: pg.Client, role: string, sql: string, timeoutMs: number): Promise<Record<string, unknown>> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    // The query itself goes on when late: the caller ends the client.
    return (await Promise.race([client.query(sql), late])).rows[0] as Record<string, unknown>;
  } catch (err) {
    throw new Error(`the ${role}: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}
