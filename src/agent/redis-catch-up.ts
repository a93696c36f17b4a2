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
    socket.once('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
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
    if (replicaOffset >= primaryOffset) return { primaryOffset, replicaOffset, waitedMs: Math.round(performance.now() - t0) };
    if (performance.now() - t0 > timeoutMs) throw new Error(`the replica did not catch up in ${timeoutMs} ms (offset ${replicaOffset} of the primary's ${primaryOffset})`);
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('the catch-up ran out of rounds');
}
