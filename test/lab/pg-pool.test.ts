// takeover/pg's FailoverPool against two real PostgreSQL servers: what a node-postgres user sees
// on each event: an unplanned DOWN rejects a blocked query at once and moves new queries to the
// other member; UP opens connections to the returning member; a planned GOING_DOWN lets work
// finish and drains; NOT_RESTARTING everywhere fails queries at once; others' events change nothing.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { Lab } from '../../src/lab/lab.js';
import type { NodeChild } from '../../src/lab/node-child.js';
import type { ServiceEvent } from '../../src/events/service-event.js';
import { startPostgres, type PgServer } from './postgres.js';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'pg-pool-client.ts');
const WHERE = 'SELECT inet_server_addr()::text AS server';

let lab: Lab;
const servers: PgServer[] = [];
let client: NodeChild | undefined;
let incarnation = 1;

beforeAll(async () => {
  lab = await Lab.create({ hosts: ['a', 'b', 'client'] });
  servers.push(await startPostgres(lab, 'a'), await startPostgres(lab, 'b'));
});
afterEach(async () => {
  await client?.kill();
  client = undefined;
});
afterAll(async () => {
  for (const s of servers) await s.stop();
  await lab?.destroy();
});

const addr = (host: string) => `${lab.host(host).ipv4}/32`;

async function startClient(): Promise<NodeChild> {
  const members = ['a', 'b'].map((n) => ({ instance: `pg-${n}`, node: n, host: lab.host(n).ipv4, port: 5432 }));
  client = lab.spawn('client', FIXTURE, ['--members', JSON.stringify(members), '--service', 'sales', '--database', 'appdb']);
  await client.waitFor('ready', 15_000);
  return client;
}

function event(type: ServiceEvent['type'], status: ServiceEvent['status'], reason: string, node: string, extra: Partial<ServiceEvent> = {}): ServiceEvent {
  const base = { type, status, reason, incarnation: incarnation++, timestamp: new Date().toISOString() };
  if (type === 'node') return { ...base, node };
  return { ...base, service: type === 'instance' ? 'appdb' : 'sales', database: 'appdb', instance: `pg-${node}`, node, cardinality: 1, ...extra };
}

let nextId = 1;
async function query(c: NodeChild, sql: string): Promise<Record<string, unknown>> {
  const id = nextId++;
  c.send({ cmd: 'query', id, sql });
  const ended = (name: string) => c.waitFor(name, 10_000, (e) => e.id === id);
  return Promise.any([ended('query-result'), ended('query-error')]);
}
function startQuery(c: NodeChild, sql: string): number {
  const id = nextId++;
  c.send({ cmd: 'query', id, sql });
  return id;
}
async function publish(c: NodeChild, e: ServiceEvent): Promise<number> {
  const before = c.events.filter((x) => x.event === 'published').length;
  c.send({ cmd: 'publish', event: e });
  const p = await c.waitFor('published', 5000, () => c.events.filter((x) => x.event === 'published').length > before);
  return Number(c.events.filter((x) => x.event === 'published')[before]!.t ?? p.t);
}
function psql(member: string, sql: string) {
  return run('ip', ['netns', 'exec', lab.host(member).ns, 'psql', '-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-Atc', sql]);
}
/** Connections the client host has open to a member, from that server's pg_stat_activity. */
async function connectionsFromClient(member: string): Promise<number> {
  return Number((await psql(member, `SELECT count(*) FROM pg_stat_activity WHERE client_addr = '${lab.host('client').ipv4}'`)).stdout.trim());
}
async function states(c: NodeChild): Promise<Record<string, string>> {
  const n = c.events.filter((e) => e.event === 'states').length;
  c.send({ cmd: 'states' });
  await c.waitFor('states', 5000, () => c.events.filter((e) => e.event === 'states').length > n);
  return c.events.filter((e) => e.event === 'states').at(-1)!.states as Record<string, string>;
}

describe('FailoverPool (takeover/pg) with real PostgreSQL', () => {
  it('unplanned instance DOWN: the blocked pg_sleep(600) rejects at once, new queries go to the other member; UP opens a connection back', async () => {
    const c = await startClient();
    const blocked = startQuery(c, `${WHERE}, pg_sleep(600)`); // the first connection goes to pg-a
    for (let i = 0; i < 100 && (await connectionsFromClient('a')) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 200)); // the query is running on a
    const sentAt = await publish(c, event('instance', 'DOWN', 'failure', 'a'));
    const err = await c.waitFor('query-error', 5000, (e) => e.id === blocked);
    expect(err.message).toBe('Connection terminated unexpectedly');
    expect(Number(err.t) - sentAt).toBeLessThan(200);
    console.info(`unplanned DOWN published -> blocked query rejected in ${(Number(err.t) - sentAt).toFixed(1)} ms`);
    expect(await c.waitFor('pool-destroyed')).toMatchObject({ instance: 'pg-a', checkedOut: 1 });
    // The server itself still runs the orphaned query until it next writes to the socket
    // (PostgreSQL's client_connection_check_interval bounds that); end it for the count below.
    expect((await psql('a', "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()")).stdout.trim()).toBe('1');
    for (let i = 0; i < 50 && (await connectionsFromClient('a')) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    for (let i = 0; i < 3; i++) expect((await query(c, WHERE)).rows).toEqual([{ server: addr('b') }]);
    expect(await states(c)).toEqual({ 'pg-a': 'down', 'pg-b': 'up' });

    await publish(c, event('instance', 'UP', 'boot', 'a'));
    expect(await c.waitFor('pool-opened', 10_000)).toMatchObject({ instance: 'pg-a', connections: 1 });
    expect(await connectionsFromClient('a')).toBe(1);
    const servedBy = new Set<string>();
    for (let i = 0; i < 4; i++) servedBy.add(String(((await query(c, WHERE)).rows as Array<{ server: string }>)[0]!.server));
    expect([...servedBy].sort()).toEqual([addr('a'), addr('b')].sort());
  });

  it('planned GOING_DOWN drains: running queries finish, then the member has no connection; NOT_RESTARTING everywhere fails at once; others\' events change nothing', async () => {
    const c = await startClient();
    const running = [startQuery(c, `${WHERE}, pg_sleep(1)`), startQuery(c, `${WHERE}, pg_sleep(1)`)]; // one on each member
    for (let i = 0; i < 100 && (await connectionsFromClient('a')) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    await publish(c, event('service_member', 'GOING_DOWN', 'user', 'a'));
    await c.waitFor('pool-draining', 5000);
    const results = await Promise.all(running.map((id) => c.waitFor('query-result', 10_000, (e) => e.id === id)));
    expect(results.map((r) => (r.rows as Array<{ server: string }>)[0]!.server).sort()).toEqual([addr('a'), addr('b')].sort());
    for (let i = 0; i < 50 && (await connectionsFromClient('a')) > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await connectionsFromClient('a')).toBe(0);
    for (let i = 0; i < 3; i++) expect((await query(c, WHERE)).rows).toEqual([{ server: addr('b') }]);

    // Not ours: another service, another database, a node UP (which says nothing about the database).
    await publish(c, { ...event('service_member', 'DOWN', 'failure', 'b'), service: 'hr' });
    await publish(c, { ...event('instance', 'DOWN', 'failure', 'b'), service: 'otherdb', database: 'otherdb' });
    await publish(c, event('node', 'UP', 'boot', 'a'));
    await new Promise((r) => setTimeout(r, 200));
    expect(await states(c)).toEqual({ 'pg-a': 'down', 'pg-b': 'up' });
    expect(c.events.filter((e) => e.event === 'pool-event').map((e) => `${e.type}:${e.status}`)).toEqual(['service_member:GOING_DOWN', 'node:UP']);

    await publish(c, event('service_member', 'NOT_RESTARTING', 'failure', 'b'));
    await c.waitFor('pool-destroyed', 5000, (e) => e.instance === 'pg-b');
    const t0 = Date.now();
    const failed = await query(c, WHERE);
    expect(Date.now() - t0).toBeLessThan(500);
    expect(failed).toMatchObject({ event: 'query-error', code: 'ERR_NO_MEMBER', message: 'no member of sales is up (pg-a: down, pg-b: gone)' });
  });
});
