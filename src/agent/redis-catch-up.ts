// Before a planned switchover promotes the local Redis replica, it must hold every write the
// primary applied: the primary is locked and quiet by then, so its replication offset
// (master_repl_offset) no longer grows from client writes; the replica has caught up once its
// own offset (slave_repl_offset) reaches it. Read with INFO replication on both servers (the
// primary at the master_host/master_port the replica follows: its own address, not the service
// address, which the lock closes). Redis' own FAILOVER would do the same wait, but it also turns
// the old primary into a replica and needs it to reach the new one, on its own schedule; here
// the agent keeps the order of the switchover (catch up, promote, then the address moves).
// Servers with `requirepass` are not supported (INFO is refused): the error says so.
import net from 'node:net';
import { canonicalAddress } from '../net/endpoint.js';
import { encodeCommand } from '../net/shadow/resp-continue.js';
import type { ServerSession } from '../net/switchover-plans.js';
import { performance } from 'node:perf_hooks';

/** `key:value` lines of an INFO reply (sections and comments skipped). Pure. */
export function parseInfo(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.indexOf(':');
    if (i > 0) out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

/** One RESP command's reply as text: a bulk string's bytes or a simple string. Rejects on an error reply, within timeoutMs. */
export function respCommand(endpoint: { host: string; port: number }, args: string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: endpoint.host, port: endpoint.port });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => fail(`no reply in ${timeoutMs} ms`), timeoutMs);
    const fail = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`${args.join(' ')} on ${endpoint.host}:${endpoint.port}: ${why}`));
    };
    socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
    socket.once('connect', () => socket.write(encodeCommand(args)));
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      const b = Buffer.concat(chunks);
      const eol = b.indexOf('\r\n');
      if (eol < 0) return;
      const head = b.subarray(0, eol).toString('latin1');
      const done = (v: string) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(v);
      };
      if (head.startsWith('-')) return fail(head.slice(1));
      if (head.startsWith('+')) return done(head.slice(1));
      if (!head.startsWith('$')) return fail(`unexpected reply ${JSON.stringify(head.slice(0, 40))}`);
      const len = Number(head.slice(1));
      if (!Number.isInteger(len) || len < 0) return fail(`bad bulk length ${head}`);
      if (b.length >= eol + 2 + len + 2) done(b.subarray(eol + 2, eol + 2 + len).toString('utf8'));
    });
  });
}

export interface CatchUp {
  /** The primary's Redis, as its replica follows it. */
  primary: { host: string; port: number };
  /** The primary's master_repl_offset once locked, and the replica's offset that reached it. */
  primaryOffset: number;
  replicaOffset: number;
  waitedMs: number;
}

/**
 * Waits until the Redis replica at `replica` has applied everything its primary has (see the
 * file's comment). Rejects naming what was wrong: the upstream is not a replica, its link is
 * down, or it did not catch up in timeoutMs.
 */
export async function redisCatchUp(replica: { host: string; port: number }, timeoutMs = 5000): Promise<CatchUp> {
  const t0 = performance.now();
  const info = parseInfo(await respCommand(replica, ['INFO', 'replication']));
  if (info.get('role') !== 'slave') throw new Error(`the upstream ${replica.host}:${replica.port} is not a replica (role ${info.get('role') ?? '?'}): nothing tells that it holds the primary's writes`);
  if (info.get('master_link_status') !== 'up') throw new Error(`the upstream's link to its primary is ${info.get('master_link_status') ?? '?'}: it cannot catch up`);
  const primary = { host: info.get('master_host') ?? '', port: Number(info.get('master_port')) };
  const pinfo = parseInfo(await respCommand(primary, ['INFO', 'replication']));
  const primaryOffset = Number(pinfo.get('master_repl_offset'));
  if (!Number.isFinite(primaryOffset)) throw new Error(`the primary ${primary.host}:${primary.port} shows no master_repl_offset`);
  for (let i = 0; i < 100_000; i++) {
    const replicaOffset = Number(parseInfo(await respCommand(replica, ['INFO', 'replication'])).get('slave_repl_offset'));
    if (replicaOffset >= primaryOffset) return { primary, primaryOffset, replicaOffset, waitedMs: Math.round(performance.now() - t0) };
    if (performance.now() - t0 > timeoutMs) throw new Error(`the replica did not catch up in ${timeoutMs} ms (offset ${replicaOffset} of the primary's ${primaryOffset})`);
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('the catch-up ran out of rounds');
}

// ---- the sessions, from the server itself ----
// The locked, quiet primary knows each client's session exactly: CLIENT LIST (Redis 7) gives its
// database, name, protocol, user and flags, and whether the server holds bytes of it that no
// dump can see: part of a request read (qbuf), a reply not yet written to the socket (obl, oll).
// The shadow's copy is a second-hand view of the same, and a capture that lost a segment cannot
// follow the stream past it; a switchover takes the sessions from the server, and the shadow's
// preamble only for what the server does not show (a password: user other than default).

/** One client of CLIENT LIST: its fields as text (`addr`, `laddr`, `db`, `flags`, ...). */
export type ClientEntry = ReadonlyMap<string, string>;

/** The lines of a CLIENT LIST reply, each as its `key=value` fields (values have no spaces). Pure. */
export function parseClientList(text: string): ClientEntry[] {
  const out: ClientEntry[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const m = new Map<string, string>();
    for (const field of line.trim().split(' ')) {
      const i = field.indexOf('=');
      if (i > 0) m.set(field.slice(0, i), field.slice(i + 1));
    }
    if (m.has('addr')) out.push(m);
  }
  return out;
}


/** Flags (CLIENT LIST's `flags`) of a client that cannot be moved, with why. */
const BLOCKING_FLAGS: Record<string, string> = {
  b: 'blocked in a command (BLPOP, WAIT, ...): its request was read, its reply will never come from here',
  x: 'inside a transaction (MULTI)',
  d: 'WATCH: a watched key was modified',
  O: 'MONITOR',
  P: 'pub/sub',
  t: 'client tracking',
  R: 'client tracking',
  B: 'client tracking',
  M: 'a primary\'s replication link',
  S: 'a replica\'s replication link',
  c: 'to be closed after its reply',
  A: 'to be closed as soon as possible',
};

/**
 * What CLIENT LIST says of one client (pure): its session as commands (HELLO 3, CLIENT SETNAME,
 * SELECT, READONLY: what the RESP plugin rebuilds too), or why it cannot be moved exactly.
 */
export function serverSessionOf(e: ClientEntry): ServerSession {
  const num = (k: string) => Number(e.get(k) ?? '0');
  for (const f of e.get('flags') ?? '') if (BLOCKING_FLAGS[f]) return { kind: 'blocked', reason: BLOCKING_FLAGS[f]! };
  if (num('sub') + num('psub') + num('ssub') > 0) return { kind: 'blocked', reason: 'pub/sub' };
  if ((e.get('multi') ?? '-1') !== '-1') return { kind: 'blocked', reason: 'inside a transaction (MULTI)' };
  if (num('watch') > 0) return { kind: 'blocked', reason: 'WATCH active' };
  if (num('qbuf') > 0) return { kind: 'blocked', reason: `the server holds ${num('qbuf')} bytes of a request it read in part (not in the dump)` };
  if (num('obl') + num('oll') > 0) return { kind: 'blocked', reason: 'the server holds part of a reply not yet written to the socket (not in the dump)' };
  const commands: string[][] = [];
  const resp = e.get('resp') ?? '2';
  if (resp !== '2') commands.push(['HELLO', resp]);
  const name = e.get('name') ?? '';
  if (name !== '') commands.push(['CLIENT', 'SETNAME', name]);
  const db = e.get('db') ?? '0';
  if (db !== '0') commands.push(['SELECT', db]);
  if ((e.get('flags') ?? '').includes('r')) commands.push(['READONLY']);
  const user = e.get('user') ?? 'default';
  const idle = Number(e.get('idle'));
  return { kind: user === 'default' ? 'session' : 'auth', commands, ...(Number.isSafeInteger(idle) && idle >= 0 ? { idleS: idle } : {}) };
}

/**
 * The sessions of the clients connected to `service` (address and port as the server sees them:
 * CLIENT LIST's laddr), keyed "address|port" of the client, from the Redis at `primary`.
 * Rejects naming the server when CLIENT LIST fails.
 */
export async function redisSessions(primary: { host: string; port: number }, service: { address: string; port: number }): Promise<Map<string, ServerSession>> {
  const text = await respCommand(primary, ['CLIENT', 'LIST'], 5000);
  const out = new Map<string, ServerSession>();
  const want = `${canonicalAddress(service.address)}|${service.port}`;
  for (const e of parseClientList(text)) {
    const local = endpointKey(e.get('laddr'));
    const client = endpointKey(e.get('addr'));
    if (local === want && client) out.set(client, serverSessionOf(e));
  }
  return out;
}

/** "address|port" of Redis' "1.2.3.4:5" or "[::1]:5" (canonical address); undefined when neither. */
function endpointKey(text: string | undefined): string | undefined {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text ?? '');
  if (!m || net.isIP(m[1]!) === 0) return undefined;
  return `${canonicalAddress(m[1]!)}|${Number(m[2])}`;
}
