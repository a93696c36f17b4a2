// takeover/pg: a node-postgres pool that follows FAN events (seed 001's client side). One
// pg.Pool per member (an instance on a node serving the service); connections go round robin
// to the members that are up. On an unplanned DOWN the affected connections are destroyed at
// once, checked-out ones included, so a query blocked on a dead server rejects now instead of
// after TCP gives up; a planned DOWN drains (idle connections close now, busy ones when
// released); an UP opens connections to the returning member, so load spreads back; after
// NOT_RESTARTING the member is gone, and with no member left a query fails at once.
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { isPlanned, type ServiceEvent } from '../events/service-event.js';
import { SessionRegistry } from '../events/session-registry.js';
import { subscribe } from '../events/subscribe.js';

export interface PoolMember {
  instance: string;
  node: string;
  host: string;
  port: number;
}

export type MemberState = 'up' | 'draining' | 'down' | 'gone';

export interface FailoverPoolOptions {
  service: string;
  database: string;
  members: PoolMember[];
  /** Agents' notification endpoints to subscribe to (or give `events`). */
  agents?: Array<{ host: string; port: number }>;
  events?: AsyncIterable<ServiceEvent>;
  /** Connections opened to a member when it comes (back) up. Default 1. */
  minPerMember?: number;
  /** node-postgres pool options for each member's pool (host and port come from the member). */
  pg?: Omit<pg.PoolConfig, 'host' | 'port'>;
}

export class NoMemberError extends Error {
  override readonly name = 'NoMemberError';
  readonly code = 'ERR_NO_MEMBER';
}

type Client = pg.PoolClient;

export type FailoverPoolEvents = {
  /** Every event that concerned this pool, after it was applied. */
  event: [ServiceEvent];
  destroyed: [{ instance: string; connections: number; checkedOut: number; event: ServiceEvent }];
  draining: [{ instance: string; event: ServiceEvent }];
  opened: [{ instance: string; connections: number }];
  error: [Error];
};

interface Member extends PoolMember {
  state: MemberState;
  pool: pg.Pool | undefined;
}

export class FailoverPool extends EventEmitter<FailoverPoolEvents> {
  private readonly members: Member[];
  private readonly sessions = new SessionRegistry<Client>();
  private readonly memberIndex = new SessionRegistry<Member>();
  private readonly memberOfClient = new Map<Client, Member>();
  private readonly checkedOut = new Set<Client>();
  private readonly abort = new AbortController();
  private readonly done: Promise<void>;
  private next = 0;
  private closed = false;

  constructor(private readonly options: FailoverPoolOptions) {
    super();
    if (options.members.length === 0) throw new RangeError('FailoverPool needs at least one member');
    if (!options.agents && !options.events) throw new RangeError('FailoverPool needs agents to subscribe to, or an events iterable');
    this.members = options.members.map((m) => ({ ...m, state: 'up', pool: undefined }));
    for (const m of this.members) {
      m.pool = this.memberPool(m);
      this.memberIndex.record(m, { service: options.service, database: options.database, instance: m.instance, node: m.node });
    }
    const events = options.events ?? subscribe({ agents: options.agents!, filter: { database: options.database }, signal: this.abort.signal });
    this.done = this.follow(events);
  }

  /** Each member's state, as the events have left it. */
  states(): Record<string, MemberState> {
    return Object.fromEntries(this.members.map((m) => [m.instance, m.state]));
  }

  /** Checks out a connection to a member that is up; rejects at once when none is. */
  async connect(): Promise<Client> {
    if (this.closed) throw new Error('FailoverPool is closed');
    const up = this.members.filter((m) => m.state === 'up');
    if (up.length === 0) throw new NoMemberError(`no member of ${this.options.service} is up (${this.members.map((m) => `${m.instance}: ${m.state}`).join(', ')})`);
    const m = up[this.next++ % up.length]!;
    const pool = m.pool!;
    const client = await pool.connect();
    this.checkedOut.add(client);
    const release = client.release.bind(client);
    let released = false;
    client.release = (err?: Error | boolean) => {
      if (released) return release(err);
      released = true;
      this.checkedOut.delete(client);
      // A connection to a member that went away meanwhile is not given back to anyone.
      return release(err ?? (m.state === 'up' && m.pool === pool ? undefined : new Error(`member ${m.instance} is ${m.state}`)));
    };
    return client;
  }

  /** One query on a checked-out connection. */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    const client = await this.connect();
    try {
      const result = await client.query<R>(text, values);
      client.release();
      return result;
    } catch (err) {
      client.release(err as Error);
      throw err;
    }
  }

  /** Ends the subscription and every member's pool; waits for checked-out connections to be released. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    await this.done.catch(() => {});
    await Promise.all(this.members.map((m) => this.endPool(m)));
  }

  private memberPool(m: Member): pg.Pool {
    const pool = new pg.Pool({ ...this.options.pg, host: m.host, port: m.port });
    pool.on('connect', (client) => {
      // A checked-out client's errors have no listener in pg-pool: the socket we destroy
      // reaches its caller through the rejected query, not as an uncaught 'error'.
      client.on('error', () => {});
      this.memberOfClient.set(client, m);
      this.sessions.record(client, { service: this.options.service, database: this.options.database, instance: m.instance, node: m.node });
    });
    pool.on('remove', (client) => {
      this.memberOfClient.delete(client);
      this.sessions.forget(client);
      this.checkedOut.delete(client);
    });
    pool.on('error', () => {}); // an idle client's socket error: pg-pool removes it
    return pool;
  }

  private async follow(events: AsyncIterable<ServiceEvent>): Promise<void> {
    try {
      for await (const e of events) {
        if (this.closed) break;
        if (this.apply(e)) this.emit('event', e);
      }
    } catch (err) {
      if (!this.closed) this.emit('error', err as Error);
    }
  }

  /** Applies one event; false when it concerned none of this pool's members. */
  private apply(e: ServiceEvent): boolean {
    if (e.type === 'service' && e.service !== this.options.service) return false;
    const affected = this.memberIndex.affected(e);
    if (affected.length === 0) return false;
    const unplannedDown = (e.status === 'DOWN' && !isPlanned(e)) || e.status === 'NOT_RESTARTING';
    if (unplannedDown) {
      for (const m of affected) this.destroyMember(m, e, e.status === 'NOT_RESTARTING' ? 'gone' : 'down');
    } else if (e.status === 'GOING_DOWN' || e.status === 'DOWN') {
      for (const m of affected) this.drainMember(m, e);
    } else if (e.status === 'UP' && e.type !== 'node') {
      // A node that boots says nothing yet about the database on it: wait for its instance.
      for (const m of affected) if (m.state !== 'up') void this.reopenMember(m);
    }
    return true;
  }

  private destroyMember(m: Member, e: ServiceEvent, state: MemberState): void {
    m.state = state;
    const clients = [...this.memberOfClient].filter(([, owner]) => owner === m).map(([c]) => c);
    let busy = 0;
    for (const c of clients) {
      if (this.checkedOut.has(c)) busy++;
      // The socket, not end(): a dead server would never answer the Terminate that end() sends.
      (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    }
    this.emit('destroyed', { instance: m.instance, connections: clients.length, checkedOut: busy, event: e });
    void this.endPool(m);
  }

  private drainMember(m: Member, e: ServiceEvent): void {
    if (m.state !== 'up') return;
    m.state = 'draining';
    this.emit('draining', { instance: m.instance, event: e });
    // pg.Pool.end(): idle connections close now, checked-out ones as they are released.
    void this.endPool(m).then(() => {
      if (m.state === 'draining') m.state = 'down';
    });
  }

  private async reopenMember(m: Member): Promise<void> {
    await this.endPool(m);
    if (this.closed) return;
    m.pool = this.memberPool(m);
    m.state = 'up';
    const n = this.options.minPerMember ?? 1;
    const opened = await Promise.allSettled(Array.from({ length: n }, () => m.pool!.connect()));
    for (const r of opened) if (r.status === 'fulfilled') r.value.release();
    const ok = opened.filter((r) => r.status === 'fulfilled').length;
    if (ok < n) this.emit('error', new Error(`member ${m.instance} is up but ${n - ok} of ${n} connections failed: ${String((opened.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason)}`));
    this.emit('opened', { instance: m.instance, connections: ok });
  }

  private async endPool(m: Member): Promise<void> {
    const pool = m.pool;
    if (!pool) return;
    m.pool = undefined;
    if (!pool.ending) await pool.end().catch(() => {});
  }
}
