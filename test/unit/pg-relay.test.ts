// pgContinue with relayConnection against a real PostgreSQL on loopback (Debian package
// postgresql), with node-postgres as the unmodified client. A tap between the client and the
// server plays the mirror: it feeds both streams to the plugin's tracker and forwards them, until
// the "death": then the old server connection is dropped, and the client's socket (the tap's
// accepted end, standing for the restored socket) is relayed to a fresh upstream as
// continueConnections would, or gets the plan's goodbye.
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relayConnection, type Relay } from '../../src/net/shadow/connection-relay.js';
import type { ExchangeTracker } from '../../src/net/shadow/exchange-tracker.js';
import { pgContinue, type PgContinueOptions } from '../../src/net/shadow/pg-continue.js';
import { freePort } from '../free-port.js';
import { startLoopbackPg, type LoopbackPg } from './pg-loopback.js';

let server: LoopbackPg | undefined;
const USERS = [
  { name: 'scram_user', password: 'scr@m pw', method: 'scram-sha-256' as const },
  { name: 'md5_user', password: 'md5-pw', method: 'md5' as const },
  { name: 'clear_user', password: 'clear-pw', method: 'password' as const },
];

beforeAll(async () => {
  server = await startLoopbackPg(await freePort(), USERS);
  await server.psql('CREATE TABLE counter (id int PRIMARY KEY, n int); INSERT INTO counter VALUES (1, 0); GRANT ALL ON counter TO PUBLIC');
}, 60_000);

afterAll(async () => {
  await server?.stop();
});

/** The mirror and the dead server in one: forwards and follows, until die(). */
class Tap {
  readonly tracker: ExchangeTracker;
  private readonly listener = net.createServer();
  private clientBytes: Buffer[] = [];
  private dead = false;
  private accepted?: net.Socket;
  private old?: net.Socket;
  /** Called with each client chunk before it is forwarded; true: the server dies before it gets it. */
  dieBefore: (chunk: Buffer) => boolean = () => false;
  /** The client bytes takeOver() replayed (the requests the dead server never answered). */
  replayed = Buffer.alloc(0);
  /** Inside a transaction: rebuild it (the plugin's transactionReplay) instead of the goodbye, as the shadow's plan does. */
  rebuild = false;

  constructor(readonly options: PgContinueOptions) {
    this.tracker = pgContinue(options).createTracker();
  }

  async listen(): Promise<number> {
    this.listener.on('connection', (c) => {
      this.accepted = c;
      const old = (this.old = net.connect(server!.port, '127.0.0.1'));
      c.on('data', (d: Buffer) => {
        if (!this.dead && this.dieBefore(d)) this.die();
        this.clientBytes.push(d);
        this.tracker.clientData(d);
        if (!this.dead) old.write(d);
      });
      old.on('data', (d: Buffer) => {
        if (this.dead) return;
        this.tracker.serverData(d);
        c.write(d);
      });
      old.on('error', () => undefined);
      c.on('error', () => undefined);
    });
    await new Promise<void>((r) => this.listener.listen(0, '127.0.0.1', () => r()));
    return (this.listener.address() as net.AddressInfo).port;
  }

  /** The server dies silently: nothing more reaches either end through it. */
  die(): void {
    this.dead = true;
    this.old?.destroy();
  }

  /**
   * The backup's takeover of this connection: a relay to a fresh upstream, or the goodbye.
   * readOnlyWhy: the replay check asked for the plugin's read-only replay, saying why.
   */
  takeOver(readOnlyWhy?: string): Relay {
    const c = this.accepted!;
    this.die();
    this.listener.close();
    c.removeAllListeners('data');
    c.removeAllListeners('error');
    const t = this.tracker;
    expect(t.blocker()).toBeNull();
    const goodbye = t.goodbye?.();
    const all = Buffer.concat(this.clientBytes);
    const answered = t.answeredClientBytes();
    const tx = goodbye && this.rebuild && answered === all.length ? t.transactionReplay!((from) => all.subarray(from, answered)) : undefined;
    if (typeof tx === 'string') throw new Error(tx);
    if (goodbye && tx) {
      return relayConnection({ client: c, upstream: { host: '127.0.0.1', port: server!.port }, preamble: t.sessionPreamble(), replay: Buffer.alloc(0), replyCounter: pgContinue().createReplyCounter(), transaction: { replay: tx, goodbye: goodbye.bytes } });
    }
    if (goodbye) return relayConnection({ client: c, upstream: { host: '127.0.0.1', port: 1 }, preamble: { bytes: Buffer.alloc(0), replies: 0 }, replay: Buffer.alloc(0), replyCounter: pgContinue().createReplyCounter(), goodbye: goodbye.bytes });
    const replay = (this.replayed = Buffer.concat(this.clientBytes).subarray(t.answeredClientBytes()));
    const readOnly = readOnlyWhy === undefined ? undefined : t.readOnlyReplay!(replay);
    if (typeof readOnly === 'string') throw new Error(readOnly);
    const hold = readOnly ? { hold: Promise.resolve({ readOnly, why: readOnlyWhy! }) } : {};
    return relayConnection({ client: c, upstream: { host: '127.0.0.1', port: server!.port }, preamble: t.sessionPreamble(), replay, replyCounter: pgContinue().createReplyCounter(), ...hold });
  }
}

async function connect(tap: Tap, user = 'postgres', password?: string): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port: await tap.listen(), user, database: 'postgres', ...(password ? { password } : {}) });
  await client.connect();
  return client;
}

/** The backend pid a connection has now (a new one after the takeover). */
const pid = async (c: pg.Client) => Number((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p);

describe('pgContinue relay with a real PostgreSQL', () => {
  it('continues an idle session: the SET value and the named prepared statement are there on the new backend', async () => {
    const tap = new Tap({});
    const client = await connect(tap);
    await client.query("SET work_mem = '7MB'");
    await client.query('SET application_name = \'continued\'');
    expect((await client.query({ name: 'plus', text: 'SELECT $1::int + 1 AS v', values: [41] })).rows[0].v).toBe(42);
    const before = await pid(client);
    const relay = tap.takeOver();
    expect(tap.replayed.length).toBe(0);
    expect(await pid(client)).not.toBe(before);
    expect((await client.query('SHOW work_mem')).rows[0].work_mem).toBe('7MB');
    expect((await client.query('SHOW application_name')).rows[0].application_name).toBe('continued');
    // node-postgres parsed 'plus' once: now it sends only Bind/Execute, which needs the preamble's Parse.
    expect((await client.query({ name: 'plus', text: 'SELECT $1::int + 1 AS v', values: [1] })).rows[0].v).toBe(2);
    expect(relay.stats.swallowedReplies).toBe(1 + 3);
    await client.end();
    expect((await relay.done).reason).toMatch(/client ended|upstream/);
  });

  it('continues a session between transactions and replays the query the dead server never got', async () => {
    const tap = new Tap({});
    const client = await connect(tap);
    await client.query('BEGIN');
    await client.query('SET search_path = pg_catalog, public');
    await client.query('UPDATE counter SET n = n + 1 WHERE id = 1');
    await client.query('COMMIT');
    const n = Number((await client.query('SELECT n FROM counter WHERE id = 1')).rows[0].n);
    tap.dieBefore = (d) => d.includes('the-replayed-one');
    let relay: Relay | undefined;
    const answer = client.query("SELECT 'the-replayed-one' AS q, n FROM counter WHERE id = 1");
    await new Promise((r) => setTimeout(r, 50));
    relay = tap.takeOver();
    expect(tap.replayed.includes('the-replayed-one')).toBe(true);
    expect((await answer).rows[0]).toEqual({ q: 'the-replayed-one', n });
    expect((await client.query('SHOW search_path')).rows[0].search_path).toBe('pg_catalog, public');
    expect(relay.stats.swallowedReplies).toBe(2);
    await client.end();
    await relay.done;
  });

  it('replays an extended-protocol query (Parse/Bind/Execute/Sync) the dead server never answered', async () => {
    const tap = new Tap({});
    const client = await connect(tap);
    await client.query('SET extra_float_digits = 2');
    tap.dieBefore = (d) => d.includes('extended-marker');
    const answer = client.query('SELECT $1::text AS m, current_setting(\'extra_float_digits\') AS d', ['extended-marker']);
    await new Promise((r) => setTimeout(r, 50));
    const relay = tap.takeOver();
    expect(tap.replayed.subarray(0, 1).toString()).toBe('P');
    expect((await answer).rows[0]).toEqual({ m: 'extended-marker', d: '2' });
    await client.end();
    await relay.done;
  });

  describe('a replay run read-only (the WAL check could not rule out the dead primary ran it)', () => {
    const WHY = 'the primary sent WAL after it';
    /** A session with its request `sql` (values: extended protocol) unanswered, taken over read-only. */
    async function takenOverWith(sql: string, values?: unknown[]) {
      const tap = new Tap({});
      const client = await connect(tap);
      await client.query("SET work_mem = '5MB'");
      const marker = `ro-${Math.random().toString(36).slice(2)}`;
      tap.dieBefore = (d) => d.includes(marker);
      const answer = client.query(sql.replace('MARKER', marker), values?.map((v) => (v === 'MARKER' ? marker : v)));
      answer.catch(() => undefined);
      await new Promise((r) => setTimeout(r, 50));
      const relay = tap.takeOver(WHY);
      expect(tap.replayed.includes(marker)).toBe(true);
      return { client, answer, relay, marker };
    }
    const counter = async () => Number(await server!.psql('SELECT n FROM counter WHERE id = 1'));

    it('a read is answered, and the session goes on in its own mode (writes work, the setting is its own)', async () => {
      const n = await counter();
      const { client, answer, relay, marker } = await takenOverWith("SELECT 'MARKER' AS m, n FROM counter WHERE id = 1");
      expect((await answer).rows[0]).toEqual({ m: marker, n });
      expect(relay.stats.readOnlyPassed).toBe(true);
      expect((await client.query('SHOW default_transaction_read_only')).rows[0].default_transaction_read_only).toBe('off');
      expect((await client.query('SHOW work_mem')).rows[0].work_mem).toBe('5MB');
      await client.query('UPDATE counter SET n = n + 1 WHERE id = 1');
      expect(await counter()).toBe(n + 1);
      await client.end();
      expect((await relay.done).clientReset).toBe(false);
    });

    it('an extended-protocol read is answered the same way', async () => {
      const { client, answer, relay, marker } = await takenOverWith("SELECT $1::text AS m, current_setting('work_mem') AS w", ['MARKER']);
      expect((await answer).rows[0]).toEqual({ m: marker, w: '5MB' });
      expect(relay.stats.readOnlyPassed).toBe(true);
      await client.query('UPDATE counter SET n = n WHERE id = 1');
      await client.end();
      await relay.done;
    });

    it('a write is refused by the new upstream: nothing applied, the client reset, the reason says both', async () => {
      const n = await counter();
      const { client, answer, relay } = await takenOverWith("UPDATE counter SET n = n + 1000 WHERE id = 1 AND 'MARKER' <> ''");
      client.on('error', () => undefined);
      await expect(answer).rejects.toThrow(/ECONNRESET|terminated|reset/i);
      const end = await relay.done;
      expect(end.clientReset).toBe(true);
      expect(end.reason).toMatch(/^the replayed request writes \(cannot execute UPDATE in a read-only transaction\), .*; not run as it was: the primary sent WAL after it$/);
      expect(relay.stats.readOnlyPassed).toBe(false);
      expect(await counter()).toBe(n);
    });

    it('a request that leaves a transaction open is not continued read-only: reset', async () => {
      const { client, answer, relay } = await takenOverWith("BEGIN; SELECT 'MARKER'");
      client.on('error', () => undefined);
      await expect(answer).rejects.toThrow();
      const end = await relay.done;
      expect(end.clientReset).toBe(true);
      expect(end.reason).toMatch(/left a transaction open \(ReadyForQuery 'T'\)/);
    });
  });

  describe('a session inside a transaction, rebuilt when it wrote nothing (transactionReplay)', () => {
    const counter = async () => Number(await server!.psql('SELECT n FROM counter WHERE id = 1'));
    /** A session through a tap that rebuilds transactions. */
    const rebuilding = async () => {
      const tap = new Tap({});
      tap.rebuild = true;
      return { tap, client: await connect(tap) };
    };
    /** Takes over a session the rebuild fails for: its errors once node-postgres saw the end, and the relay's end. */
    const takenOverToGoodbye = async (tap: Tap, client: pg.Client) => {
      const errors: (Error & { code?: string })[] = [];
      client.on('error', (e) => errors.push(e));
      const ended = new Promise<void>((r) => client.once('end', () => r()));
      const relay = tap.takeOver();
      await ended;
      return { errors, end: await relay.done };
    };

    it('BEGIN and reads: the transaction goes on on the new backend and commits there', async () => {
      const { tap, client } = await rebuilding();
      await client.query("SET work_mem = '6MB'");
      await client.query('BEGIN');
      await client.query("SET LOCAL statement_timeout = '9s'");
      const n = Number((await client.query('SELECT n FROM counter WHERE id = 1')).rows[0].n);
      const before = await pid(client);
      const relay = tap.takeOver();
      expect(await pid(client)).not.toBe(before);
      expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('9s');
      expect((await client.query('SHOW transaction_read_only')).rows[0].transaction_read_only).toBe('off');
      await client.query('UPDATE counter SET n = n + 1 WHERE id = 1');
      expect(await counter()).toBe(n); // not committed yet
      await client.query('COMMIT');
      expect(await counter()).toBe(n + 1);
      expect((await client.query('SHOW statement_timeout')).rows[0].statement_timeout).not.toBe('9s');
      expect((await client.query('SHOW work_mem')).rows[0].work_mem).toBe('6MB');
      await client.end();
      const end = await relay.done;
      expect(end.saidGoodbye).toBe(false);
      expect(end.clientReset).toBe(false);
    });

    it('after a password login (SCRAM): the rebuild follows the login dialog', async () => {
      const u = USERS[0]!;
      const tap = new Tap({ password: u.password });
      tap.rebuild = true;
      const client = await connect(tap, u.name, u.password);
      await client.query('BEGIN');
      await client.query("SELECT 'read' AS r");
      const relay = tap.takeOver();
      expect((await client.query('SELECT current_user AS u, now() = statement_timestamp() AS fresh')).rows[0]).toEqual({ u: u.name, fresh: false });
      await client.query('COMMIT');
      await client.end();
      expect((await relay.done).saidGoodbye).toBe(false);
    });

    it('a transaction that wrote gets 57P01 after all (found read-only), and nothing of it is applied', async () => {
      const { tap, client } = await rebuilding();
      const n = await counter();
      await client.query('BEGIN');
      await client.query('UPDATE counter SET n = n + 100 WHERE id = 1');
      const { errors, end } = await takenOverToGoodbye(tap, client);
      expect(errors.map((e) => e.code)).toContain('57P01');
      expect(end.saidGoodbye).toBe(true);
      expect(end.reason).toMatch(/^said goodbye: the transaction was not rebuilt: it had written \(cannot execute UPDATE in a read-only transaction\)/);
      expect(await counter()).toBe(n);
    });

    it('REPEATABLE READ: 57P01 (rebuilt, it would read another snapshot)', async () => {
      const { tap, client } = await rebuilding();
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      await client.query('SELECT n FROM counter');
      const { errors, end } = await takenOverToGoodbye(tap, client);
      expect(errors.map((e) => e.code)).toContain('57P01');
      expect(end.saidGoodbye).toBe(true);
      expect(end.reason).toMatch(/its isolation level is repeatable read/);
    });

    it('not rebuilt: a prepared statement made inside it, a read-write BEGIN, requests past 64 KiB', async () => {
      for (const [steps, why] of [[['BEGIN', 'PREPARE p1 AS SELECT 1'], /a prepared statement was made or dropped in it/], [['BEGIN READ WRITE'], /READ WRITE/], [['BEGIN', `SELECT '${'x'.repeat(70_000)}' AS big`], /its requests passed 65536 bytes/]] as const) {
        const tap = new Tap({});
        const client = await connect(tap);
        for (const q of steps) await client.query(q);
        const all = Buffer.concat((tap as unknown as { clientBytes: Buffer[] }).clientBytes);
        expect(tap.tracker.transactionReplay!((from) => all.subarray(from, tap.tracker.answeredClientBytes()))).toMatch(why);
        await client.query('ROLLBACK');
        await client.end();
      }
    });
  });

  it('ends a session inside a transaction with FATAL 57P01: the client sees the error and the end', async () => {
    const tap = new Tap({});
    const client = await connect(tap);
    await client.query('BEGIN');
    await client.query('UPDATE counter SET n = n + 100 WHERE id = 1');
    const errors: (Error & { code?: string })[] = [];
    client.on('error', (e) => errors.push(e));
    const ended = new Promise<void>((r) => client.once('end', () => r()));
    const relay = tap.takeOver();
    expect(relay.upstream).toBeNull();
    await ended;
    // Exactly what node-postgres reports when a backend is terminated for real (below).
    expect(errors.map((e) => `${e.code}: ${e.message}`)).toEqual(['57P01: terminating connection due to administrator command', 'undefined: Connection terminated unexpectedly']);
    const direct = new pg.Client({ host: '127.0.0.1', port: server!.port, user: 'postgres', database: 'postgres' });
    await direct.connect();
    await direct.query('BEGIN');
    const directErrors: (Error & { code?: string })[] = [];
    direct.on('error', (e) => directErrors.push(e));
    const directEnded = new Promise<void>((r) => direct.once('end', () => r()));
    await server!.psql(`SELECT pg_terminate_backend(${await pid(direct)})`);
    await directEnded;
    expect(directErrors.map((e) => `${e.code}: ${e.message}`)).toEqual(errors.map((e) => `${e.code}: ${e.message}`));
    expect((await relay.done).reason).toMatch(/said goodbye|client/);
    await expect(client.query('SELECT 1')).rejects.toThrow();
    // The dead server's transaction never committed.
    expect(Number(await server!.psql('SELECT n FROM counter WHERE id = 1'))).toBeLessThan(100);
  });

  for (const u of USERS) {
    it(`logs the new upstream in with the plugin's password (${u.method})`, async () => {
      const tap = new Tap({ password: ({ user }) => USERS.find((x) => x.name === user)?.password });
      const client = await connect(tap, u.name, u.password);
      await client.query("SET datestyle = 'SQL, DMY'");
      const relay = tap.takeOver();
      expect((await client.query('SELECT current_user AS u, current_setting(\'datestyle\') AS d')).rows[0]).toEqual({ u: u.name, d: 'SQL, DMY' });
      await client.end();
      await relay.done;
    });
  }

  it('ends the relay with the reason when the upstream refuses the login (a wrong password)', async () => {
    const tap = new Tap({ password: 'wrong' });
    const client = await connect(tap, 'scram_user', 'scr@m pw');
    client.on('error', () => undefined);
    const relay = tap.takeOver();
    expect((await relay.done).reason).toMatch(/refused the session preamble: login refused: FATAL 28P01/);
    await client.end().catch(() => undefined);
  });

  it('without a password for a password login: the relay ends saying so', async () => {
    const tap = new Tap({});
    const client = await connect(tap, 'md5_user', 'md5-pw');
    client.on('error', () => undefined);
    const relay = tap.takeOver();
    expect((await relay.done).reason).toMatch(/asks for a password .*MD5Password.*pgContinue\(\{ password \}\)/);
    await client.end().catch(() => undefined);
  });
});
