// The relay keeper (`takeover relay-keeper`, a process of its own, started from dist/ by the
// client as the agent starts it): a relay handed over in its steady state goes on after the
// handing process has closed everything of its own (its copies of both sockets, its connection
// to the keeper), as after an agent's restart; a new client finds it listed, hears its end, and
// SIGTERM closes what the keeper holds. The wire refuses bad lines with a reason and changes
// nothing. Real redis-server on loopback as the upstream (test/redis-local.ts).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relayConnection } from '../../src/net/shadow/connection-relay.js';
import { encodeCommand, respContinue } from '../../src/net/shadow/resp-continue.js';
import { KeeperMessageError, keeperLine, parseKeeperReply, parseKeeperRequest, type KeeperRequest } from '../../src/net/relay-keeper/keeper-wire.js';
import { RelayKeeperClient } from '../../src/net/relay-keeper/keeper-client.js';
import { RelayKeeper } from '../../src/net/relay-keeper/relay-keeper.js';
import { pino } from 'pino';
import { once } from 'node:events';
import { CLI } from '../cli-process.js';
import { startLocalRedis, type LocalRedis } from '../redis-local.js';
import { socketPair } from '../socket-pair.js';
import { KEEPER_UNIT_FILE, unitPrivileges } from '../systemd-unit.js';

const cmd = (...w: string[]) => encodeCommand(w);
let redis: LocalRedis | undefined;
let port = 0;
let dir = '';

const take: KeeperRequest = {
  op: 'take', id: '1.x.0', pid: 4242, clientFd: 20, upstreamFd: 21, toUpstream: Buffer.from('PING\r\n').toString('base64'), toClient: '', clientEof: false, upstreamEof: false,
  meta: { client: '198.18.0.3:50000', service: '198.18.0.100:6379', upstream: '127.0.0.1:6380', peer: 'a', since: 1 }, before: { clientBytes: 10, upstreamBytes: 20 },
};

describe('the relay keeper\'s wire', () => {
  it('takes valid lines and refuses bad ones naming the field', () => {
    expect(parseKeeperRequest(keeperLine(take).trim())).toEqual(take);
    expect(parseKeeperRequest('{"op":"list"}')).toEqual({ op: 'list' });
    expect(parseKeeperReply('{"op":"taken","id":"1.x.0"}')).toEqual({ op: 'taken', id: '1.x.0' });
    expect(parseKeeperRequest('{"op":"replace","pid":77}')).toEqual({ op: 'replace', pid: 77 });
    expect(parseKeeperReply('{"op":"handed","relays":3,"closed":0}')).toEqual({ op: 'handed', relays: 3, closed: 0 });
    expect(parseKeeperReply('{"op":"replaced","pid":78}')).toEqual({ op: 'replaced', pid: 78 });
    const bad: Array<[unknown, RegExp]> = [
      ['not json', /not JSON/],
      [{ op: 'nope' }, /op/],
      [{ ...take, clientFd: -1 }, /clientFd/],
      [{ ...take, toUpstream: 'not base64!' }, /toUpstream must be base64/],
      [{ ...take, pid: 1 }, /pid/],
      [{ ...take, extra: 1 }, /extra|Unrecognized/i],
      [{ ...take, meta: { ...take.meta, since: undefined } }, /meta\.since/],
      [{ op: 'close', ids: ['a b'], reason: 'x' }, /ids\[0\]/],
      [{ op: 'replace', pid: 'me' }, /pid/],
    ];
    for (const [line, why] of bad) {
      const text = typeof line === 'string' ? line : JSON.stringify(line);
      expect(() => parseKeeperRequest(text), text).toThrow(why);
      expect(() => parseKeeperRequest(text)).toThrow(KeeperMessageError);
    }
  });

  it('a seeded fuzz of mutated lines: a message or KeeperMessageError, nothing else', () => {
    let seed = 12345;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    const base = keeperLine(take).trim();
    for (let i = 0; i < 5000; i++) {
      const chars = [...base];
      for (let k = 0, m = 1 + rand(4); k < m; k++) {
        const at = rand(chars.length);
        const op = rand(3);
        if (op === 0) chars.splice(at, 1);
        else if (op === 1) chars.splice(at, 0, String.fromCharCode(rand(128)));
        else chars[at] = String.fromCharCode(rand(128));
      }
      try {
        const msg = parseKeeperRequest(chars.join(''));
        expect(['take', 'list', 'close', 'replace']).toContain(msg.op);
      } catch (err) {
        expect(err).toBeInstanceOf(KeeperMessageError);
      }
    }
  });
});

async function ask(s: net.Socket, bytes: Buffer, replies: number): Promise<string> {
  const counter = respContinue.createReplyCounter();
  let n = 0;
  let out = '';
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${replies} replies in 5 s: ${JSON.stringify(out)}`)), 5000);
    const onData = (d: Buffer) => {
      out += d.toString('latin1');
      n += counter.push(d).length;
      if (n >= replies) {
        clearTimeout(timer);
        s.off('data', onData);
        resolve(out);
      }
    };
    s.on('data', onData);
    s.write(bytes);
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-keeper-'));
  redis = await startLocalRedis();
  port = redis.port;
});

afterAll(async () => {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A relay of a fresh loopback pair (socketPair: `app` plays the client) to the test's Redis, its
 * steady state for `client`'s keeper; `preamble`: the session's (none by default).
 */
async function keptRelay(client: RelayKeeperClient, preamble: { bytes: Buffer; replies: number } = { bytes: Buffer.alloc(0), replies: 0 }) {
  const { restored, app } = await socketPair();
  app.on('error', () => {});
  const relay = relayConnection({
    client: restored, upstream: { host: '127.0.0.1', port }, preamble, replay: new Uint8Array(), replyCounter: respContinue.createReplyCounter(),
    keeper: client.handOff({ client: `127.0.0.1:${app.localPort}`, service: '198.18.0.100:6379', upstream: `127.0.0.1:${port}`, peer: 'a' }),
  });
  return { relay, app };
}

/**
 * A handover that starts a keeper: the client's bounds (startTimeoutMs 5 s for the keeper to come
 * up, answerTimeoutMs 3 s for its list), and a margin for a loaded machine.
 */
const HANDOVER_MS = 10_000;

const until = async <T,>(what: string, f: () => T | undefined, ms = 5000): Promise<T> => {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`not in ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

const processGone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
};

describe('a relay handed to the keeper', () => {
  it('outlives the process that handed it over; a new client lists it and hears its end; bad requests change nothing', async () => {
    const socket = path.join(dir, 'keeper.sock');
    const logFile = path.join(dir, 'keeper.log');
    const first = new RelayKeeperClient({ socket, logFile, idleExitMs: 500 });
    const started: number[] = [];
    first.on('started', (e) => started.push(e.pid));
    const { relay, app } = await keptRelay(first, { bytes: cmd('SELECT', '3'), replies: 1 });
    expect(await ask(app, cmd('SET', 'k', 'v1'), 1)).toBe('+OK\r\n');
    await until('the handover', () => (relay.stats.kept ? true : undefined), HANDOVER_MS);
    expect(started).toHaveLength(1);
    const keeperPid = started[0]!;
    expect(first.held).toMatchObject({ pid: keeperPid, relays: [{ client: `127.0.0.1:${app.localPort}`, peer: 'a' }] });

    // The handing side goes away: its connection to the keeper closed, its fds closed long ago.
    first.close();
    await new Promise((r) => setTimeout(r, 100));
    // Database 3 still (the preamble's SELECT is the session's), answered through the keeper.
    expect(await ask(app, cmd('GET', 'k'), 1)).toBe('$2\r\nv1\r\n');
    expect(await ask(app, Buffer.concat([cmd('SELECT', '0'), cmd('GET', 'k')]), 2)).toBe('+OK\r\n$-1\r\n');

    // A new life attaches: the relay is listed, with its counts.
    const second = new RelayKeeperClient({ socket, logFile });
    expect(await second.attach()).toBe(true);
    expect(second.held!.pid).toBe(keeperPid);
    expect(second.held!.relays).toMatchObject([{ client: `127.0.0.1:${app.localPort}`, service: '198.18.0.100:6379', peer: 'a' }]);

    // Bad requests on a raw connection: an error or a refusal each, the relay untouched.
    const raw = net.connect(socket);
    const lines: string[] = [];
    createInterface({ input: raw }).on('line', (l) => lines.push(l));
    raw.write('{"op":"take"}\n');
    raw.write(keeperLine({ ...take, id: 'bad.pid', pid: 0x3ffffff0 } as KeeperRequest));
    await until('two answers', () => (lines.length >= 2 ? true : undefined));
    expect(JSON.parse(lines[0]!)).toMatchObject({ op: 'error', reason: expect.stringMatching(/^relay keeper request: /) });
    expect(JSON.parse(lines[1]!)).toMatchObject({ op: 'refused', id: 'bad.pid', reason: expect.stringMatching(/pidfd_open/) });
    raw.destroy();
    expect(await ask(app, cmd('PING'), 1)).toBe('+PONG\r\n');

    // The client ends: the keeper's relay ends, and the attached life hears of it (not its own).
    const ended = new Promise<{ reason: string; mine: boolean; clientBytes: number }>((r) => second.once('ended', r));
    app.end();
    const end = await ended;
    expect(end).toMatchObject({ mine: false, reason: 'client ended' });
    expect(end.clientBytes).toBeGreaterThan(0);
    expect(second.held!.relays).toEqual([]);
    second.close();
    // Idle (no relay, no client): it exits by itself after its idle time (500 ms here).
    await until('the idle keeper gone', () => (processGone(keeperPid) ? true : undefined));
    expect(readFileSync(logFile, 'utf8')).toMatch(/relay keeper stopped \(idle/);
  }, 30_000);

  it('SIGTERM closes what it holds and ends it', async () => {
    const socket = path.join(dir, 'keeper2.sock');
    const client = new RelayKeeperClient({ socket, logFile: path.join(dir, 'keeper2.log') });
    const { relay, app } = await keptRelay(client);
    expect(await ask(app, cmd('PING'), 1)).toBe('+PONG\r\n');
    await until('the handover', () => (relay.stats.kept ? true : undefined), HANDOVER_MS);
    const pid = client.held!.pid;
    const appEnded = new Promise<void>((r) => app.once('close', () => r()).once('end', () => r()));
    process.kill(pid, 'SIGTERM');
    const end = await relay.done;
    expect(end.reason).toMatch(/relay keeper stopped \(SIGTERM\)/);
    expect(end.stats.kept).toBe(true);
    await appEnded;
    await until('the keeper gone', () => (processGone(pid) ? true : undefined));
    client.close();
  }, 20_000);

  it('a keeper killed with SIGKILL: the relays it held end with "relay keeper lost", the client says how many, the next handover starts a new keeper', async () => {
    const socket = path.join(dir, 'keeper3.sock');
    const client = new RelayKeeperClient({ socket, logFile: path.join(dir, 'keeper3.log'), idleExitMs: 500 });
    const lost: Array<{ held: number }> = [];
    client.on('lost', (e) => lost.push(e));
    const relayed = async () => {
      const { relay, app } = await keptRelay(client);
      expect(await ask(app, cmd('PING'), 1)).toBe('+PONG\r\n');
      await until('the handover', () => (relay.stats.kept ? true : undefined), HANDOVER_MS);
      return { relay, app };
    };
    const one = await relayed();
    const pid = client.held!.pid;
    process.kill(pid, 'SIGKILL');
    const end = await one.relay.done;
    expect(end.reason).toMatch(/^relay keeper lost/);
    expect(lost).toEqual([expect.objectContaining({ held: 1 })]);
    await new Promise<void>((r) => (one.app.closed ? r() : one.app.once('close', () => r())));
    const two = await relayed();
    expect(client.held!.pid).not.toBe(pid);
    two.app.destroy();
    await two.relay.done;
    client.close();
  }, 30_000);

  it('its unit\'s one capability is enough to take a relay; without CAP_SYS_PTRACE it refuses, and the relay is spliced where it is', async () => {
    const run = async (privileges: string[], name: string) => {
      const socket = path.join(dir, `${name}.sock`);
      // Started as its unit starts it (setpriv gives it the unit's capabilities), not by the client.
      const keeper = spawn('setpriv', [...privileges, process.execPath, CLI, 'relay-keeper', '--socket', socket, '--idle-exit-ms', '0'], { stdio: 'ignore' });
      try {
        const client = new RelayKeeperClient({ socket, logFile: path.join(dir, `${name}.log`) });
        const deadline = Date.now() + 5000;
        while (!(await client.attach())) {
          if (Date.now() > deadline || keeper.exitCode !== null) throw new Error(`the keeper under setpriv did not come up (${keeper.exitCode})`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const { relay, app } = await keptRelay(client);
        expect(await ask(app, cmd('PING'), 1)).toBe('+PONG\r\n');
        await until('the handover', () => (relay.stats.spliced ? true : undefined), HANDOVER_MS);
        await new Promise((r) => setTimeout(r, 100));
        expect(await ask(app, cmd('ECHO', name), 1)).toBe(`$${name.length}\r\n${name}\r\n`);
        const kept = relay.stats.kept;
        app.destroy();
        await relay.done;
        client.close();
        return kept;
      } finally {
        keeper.kill('SIGKILL');
      }
    };
    expect(await run(unitPrivileges(KEEPER_UNIT_FILE), 'unit')).toBe(true);
    expect(await run(['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all'], 'nocaps')).toBe(false);
  }, 20_000);

  it('the keeper refuses fds that are not the named connection, and a take it cannot parse with its id; nothing taken', async () => {
    const socket = path.join(dir, 'keeper4.sock');
    const keeper = spawn(process.execPath, [CLI, 'relay-keeper', '--socket', socket, '--idle-exit-ms', '0'], { stdio: 'ignore' });
    try {
      const client = new RelayKeeperClient({ socket, logFile: path.join(dir, 'keeper4.log'), start: false });
      while (!(await client.attach())) await new Promise((r) => setTimeout(r, 50));
      client.close();
      const { restored, app } = await socketPair();
      const raw = net.connect(socket);
      const lines: string[] = [];
      createInterface({ input: raw }).on('line', (l) => lines.push(l));
      const fd = (restored as unknown as { _handle: { fd: number } })._handle.fd;
      // The restored socket's peer is the app's port, not 198.18.0.3:50000.
      raw.write(keeperLine({ ...take, id: 'wrong.peer', pid: process.pid, clientFd: fd, upstreamFd: fd }));
      raw.write(keeperLine({ ...take, id: 'bad.bytes', toClient: '!!' } as KeeperRequest));
      await until('two answers', () => (lines.length >= 2 ? true : undefined));
      expect(JSON.parse(lines[0]!)).toEqual({ op: 'refused', id: 'wrong.peer', reason: `fd ${fd} of pid ${process.pid} is not the client socket: its peer is 127.0.0.1:${app.localPort}, not 198.18.0.3:50000` });
      expect(JSON.parse(lines[1]!)).toEqual({ op: 'error', id: 'bad.bytes', reason: 'relay keeper request: toClient must be base64' });
      raw.destroy();
      // Still the test's own socket, working.
      restored.write('still here');
      await new Promise((r) => app.once('data', r));
      app.destroy();
      restored.destroy();
    } finally {
      keeper.kill('SIGKILL');
    }
  }, 20_000);
});

describe('a keeper replaced by a new one (--replace)', () => {
  /** `takeover relay-keeper --replace` as a process (its own unit's capabilities or fewer: `privileges`, setpriv's). */
  const replacing = (socket: string, privileges: string[] = []) => {
    const argv = [process.execPath, CLI, 'relay-keeper', '--socket', socket, '--replace', '--idle-exit-ms', '0'];
    const child = spawn(privileges.length > 0 ? 'setpriv' : argv[0]!, privileges.length > 0 ? [...privileges, ...argv] : argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { child, exited, stderr: () => stderr };
  };

  it('takes every relay over, the bytes in flight included; the old keeper exits; the agent follows, nothing lost or ended', async () => {
    const socket = path.join(dir, 'replace.sock');
    const client = new RelayKeeperClient({ socket, logFile: path.join(dir, 'replace.log'), idleExitMs: 500 });
    const lost: unknown[] = [];
    const replaced: Array<{ from: number; pid: number; relays: number }> = [];
    const ended: unknown[] = [];
    client.on('lost', (e) => lost.push(e));
    client.on('replaced', (e) => replaced.push(e));
    client.on('ended', (e) => ended.push(e));
    // A value big enough to fill the socket buffers and a pipe of the relay to a client that does not read.
    const big = Buffer.alloc(8 << 20);
    for (let i = 0; i < big.length; i++) big[i] = 97 + ((i * 7 + (i >> 13)) % 26);
    await redis!.command(['SET', 'replace:big', big.toString('latin1')]);
    const one = await keptRelay(client, { bytes: cmd('SELECT', '5'), replies: 1 });
    const two = await keptRelay(client);
    for (const r of [one, two]) {
      expect(await ask(r.app, cmd('PING'), 1)).toBe('+PONG\r\n');
      await until('the handover', () => (r.relay.stats.kept ? true : undefined), HANDOVER_MS);
    }
    const oldPid = client.held!.pid;
    // The reply to `two`'s GET goes into the keeper's relay while its client reads nothing.
    const chunks: Buffer[] = [];
    two.app.pause();
    two.app.on('data', (d: Buffer) => chunks.push(d));
    two.app.write(cmd('GET', 'replace:big'));
    await new Promise((r) => setTimeout(r, 300));

    const next = replacing(socket);
    let third: ReturnType<typeof replacing> | undefined;
    try {
      await until('the agent follows the new keeper', () => (replaced.length > 0 ? true : undefined), HANDOVER_MS);
      expect(replaced).toEqual([{ from: oldPid, pid: next.child.pid, relays: 2 }]);
      expect(client.held!.pid).toBe(next.child.pid);
      expect(client.held!.relays.map((r) => r.client).sort()).toEqual([`127.0.0.1:${one.app.localPort}`, `127.0.0.1:${two.app.localPort}`].sort());
      await until('the old keeper gone', () => (processGone(oldPid) ? true : undefined));
      const oldLog = readFileSync(path.join(dir, 'replace.log'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg: string; carried?: number });
      expect(oldLog.at(-1)!.msg).toMatch(/^relay keeper stopped \(replaced by pid \d+\): 0 connection\(s\) closed/);
      // Bytes were in the old keeper's pipe (a relay to a client that reads nothing holds one full).
      expect(oldLog.find((e) => e.carried !== undefined)!.carried).toBeGreaterThan(0);
      // The whole value, in order: what the old keeper's pipe and socket buffers held went on.
      const want = Buffer.concat([Buffer.from(`$${big.length}\r\n`), big, Buffer.from('\r\n')]);
      two.app.resume();
      await until('the whole reply', () => (chunks.reduce((n, c) => n + c.length, 0) >= want.length ? true : undefined), 10_000);
      expect(Buffer.concat(chunks).equals(want)).toBe(true);
      two.app.removeAllListeners('data');
      // Database 5 still (the session's SELECT), through the new keeper; the other relay too.
      expect(await ask(one.app, Buffer.concat([cmd('SET', 'replace:k', 'v'), cmd('SELECT', '0'), cmd('EXISTS', 'replace:k')]), 3)).toBe('+OK\r\n+OK\r\n:0\r\n');
      expect(await ask(two.app, cmd('PING'), 1)).toBe('+PONG\r\n');
      expect(lost).toEqual([]);
      expect(ended).toEqual([]);
      expect(one.relay.stats.kept && two.relay.stats.kept).toBe(true);
      // Replaced again (each replacement listens on a name of its own until it renames it into
      // place: the keeper it replaces, itself once a replacement, unlinks only its own name).
      third = replacing(socket);
      await until('the agent follows the third keeper', () => (replaced.length > 1 ? true : undefined), HANDOVER_MS);
      expect(replaced[1]).toEqual({ from: next.child.pid, pid: third.child.pid, relays: 2 });
      await until('the second keeper gone', () => (processGone(next.child.pid!) ? true : undefined));
      expect(await ask(one.app, cmd('PING'), 1)).toBe('+PONG\r\n');
      // Its end still reaches the relay that handed it over (the same id in the new keeper), its
      // bytes counted across both keepers.
      two.app.end();
      const end = await two.relay.done;
      expect(end.reason).toBe('client ended');
      expect(end.stats.clientBytes).toBe(2 * cmd('PING').length + cmd('GET', 'replace:big').length);
      expect(end.stats.upstreamBytes).toBe(2 * '+PONG\r\n'.length + want.length);
      one.app.destroy();
      await one.relay.done;
    } finally {
      next.child.kill('SIGKILL');
      third?.child.kill('SIGKILL');
      client.close();
    }
  }, 60_000);

  it('a replacement gets the agent\'s close of a relay on its way, refuses that relay (it ends), then leaves before it answered for the other: that one runs in the old keeper again, from where it stopped', async () => {
    const socket = path.join(dir, 'replace3.sock');
    const client = new RelayKeeperClient({ socket, logFile: path.join(dir, 'replace3.log'), idleExitMs: 500 });
    const events: unknown[] = [];
    for (const e of ['lost', 'replaced', 'ended'] as const) client.on(e, (x: unknown) => events.push([e, x]));
    const one = await keptRelay(client);
    const two = await keptRelay(client);
    for (const r of [one, two]) {
      expect(await ask(r.app, cmd('PING'), 1)).toBe('+PONG\r\n');
      await until('the handover', () => (r.relay.stats.kept ? true : undefined), HANDOVER_MS);
    }
    const pid = client.held!.pid;
    const onePeer = `127.0.0.1:${one.app.localPort}`;
    // A fake replacement on the wire: it asks, refuses the first take, and goes away.
    const fake = net.connect(socket);
    const lines: string[] = [];
    createInterface({ input: fake }).on('line', (l) => lines.push(l));
    fake.write(keeperLine({ op: 'list' }));
    await until('the list', () => (lines.length > 0 ? true : undefined));
    fake.write(keeperLine({ op: 'replace', pid: process.pid }));
    await until('two takes', () => (lines.filter((l) => JSON.parse(l).op === 'take').length === 2 ? true : undefined));
    const takes = lines.map((l) => JSON.parse(l) as { op: string; id: string }).filter((m) => m.op === 'take');
    // The agent closes a relay on its way: the old keeper passes the close on to the replacement.
    one.relay.close('closed by the agent');
    await until('the close passed on', () => lines.map((l) => JSON.parse(l) as { op: string; ids?: string[] }).find((m) => m.op === 'close'));
    expect(JSON.parse(lines.at(-1)!)).toEqual({ op: 'close', ids: [takes[0]!.id], reason: 'closed by the agent' });
    fake.write(keeperLine({ op: 'refused', id: takes[0]!.id, reason: 'a test refusal' }));
    await new Promise((r) => setTimeout(r, 100));
    fake.destroy();
    await new Promise((r) => setTimeout(r, 200));
    // The refused one ended, said to the agent; the other is relayed by the old keeper again,
    // which still listens, lists it, and ends it as before.
    expect((await one.relay.done).reason).toBe('closed by the agent');
    const refusedEnd = { reason: `relay keeper: its replacement (pid ${process.pid}) refused it: a test refusal` };
    expect(await ask(two.app, cmd('ECHO', 'two'), 1)).toBe('$3\r\ntwo\r\n');
    const again = new RelayKeeperClient({ socket, logFile: path.join(dir, 'replace3.log'), start: false });
    expect(await again.attach()).toBe(true);
    expect(again.held!.pid).toBe(pid);
    expect(again.held!.relays.map((r) => r.client)).toEqual([`127.0.0.1:${two.app.localPort}`]);
    again.close();
    expect(events).toEqual([['ended', expect.objectContaining({ client: onePeer, mine: true, reason: refusedEnd.reason })]]);
    expect(readFileSync(path.join(dir, 'replace3.log'), 'utf8')).toMatch(/relayed here again: its replacement \(pid \d+\) left before it answered/);
    two.app.end();
    expect((await two.relay.done).reason).toBe('client ended');
    one.app.destroy();
    client.close();
    process.kill(pid, 'SIGTERM');
  }, 30_000);

  it('refuses, changing nothing: no keeper on the socket; no CAP_SYS_PTRACE to copy its sockets', async () => {
    const socket = path.join(dir, 'replace2.sock');
    const none = replacing(socket);
    expect(await none.exited).toBe(1);
    expect(none.stderr()).toMatch(/^takeover: relay keeper: cannot replace the keeper on .*replace2\.sock: no keeper answers \(ENOENT\)/);

    const client = new RelayKeeperClient({ socket, logFile: path.join(dir, 'replace2.log'), idleExitMs: 500 });
    const events: unknown[] = [];
    for (const e of ['lost', 'replaced', 'ended'] as const) client.on(e, (x: unknown) => events.push([e, x]));
    const { relay, app } = await keptRelay(client);
    expect(await ask(app, cmd('PING'), 1)).toBe('+PONG\r\n');
    await until('the handover', () => (relay.stats.kept ? true : undefined), HANDOVER_MS);
    const pid = client.held!.pid;
    const weak = replacing(socket, ['--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all']);
    expect(await weak.exited).toBe(1);
    expect(weak.stderr()).toMatch(/cannot replace the keeper on .*: .*EPERM.*\(copying its sockets out needs CAP_SYS_PTRACE\)/);
    // The old keeper holds its relay as before, on its socket; nothing was said to the agent.
    expect(await ask(app, cmd('ECHO', 'still'), 1)).toBe('$5\r\nstill\r\n');
    const again = new RelayKeeperClient({ socket, logFile: path.join(dir, 'replace2.log'), start: false });
    expect(await again.attach()).toBe(true);
    expect(again.held).toMatchObject({ pid, relays: [{ client: `127.0.0.1:${app.localPort}` }] });
    again.close();
    expect(events).toEqual([]);
    app.destroy();
    await relay.done;
    client.close();
    process.kill(pid, 'SIGTERM');

    // A keeper systemd started (INVOCATION_ID in its environment): not replaced from outside its unit.
    const unitSocket = path.join(dir, 'replace-unit.sock');
    const inUnit = spawn(process.execPath, [CLI, 'relay-keeper', '--socket', unitSocket, '--idle-exit-ms', '0'], { stdio: 'ignore', env: { ...process.env, INVOCATION_ID: '0123456789abcdef' } });
    try {
      const probe = new RelayKeeperClient({ socket: unitSocket, logFile: path.join(dir, 'replace-unit.log'), start: false });
      for (const deadline = Date.now() + 5000; !(await probe.attach()); await new Promise((r) => setTimeout(r, 50))) {
        if (Date.now() > deadline) throw new Error('the keeper did not come up');
      }
      probe.close();
      const refused = replacing(unitSocket);
      expect(await refused.exited).toBe(1);
      expect(refused.stderr()).toMatch(/cannot replace the keeper on .*: it runs under systemd \(.*\); a replacement started outside its unit would die with it/);
      expect(inUnit.exitCode).toBeNull();
    } finally {
      inUnit.kill('SIGKILL');
    }
  }, 30_000);
});

describe('a stopping keeper', () => {
  it('refuses a take already on its way (the agent then relays it itself) before it ends the connection', async () => {
    const socket = path.join(dir, 'grace.sock');
    const keeper = await RelayKeeper.start({ socket, log: pino({ level: 'silent' }), idleExitMs: 0 });
    const raw = net.connect(socket);
    await once(raw, 'connect');
    const lines: string[] = [];
    createInterface({ input: raw }).on('line', (l) => lines.push(l));
    const ended = once(raw, 'end');
    const stopped = keeper.stop('test');
    raw.write(keeperLine({ ...take, id: 'late.take' }));
    await stopped;
    await ended;
    expect(lines.map((l) => JSON.parse(l))).toEqual([{ op: 'refused', id: 'late.take', reason: 'the relay keeper is stopping' }]);
    raw.destroy();
  });
});

describe('the agent\'s end when no keeper can take a relay', () => {
  /** keptRelay, its client's PING answered first (only sent when `answered` is false: a handover nobody answers may hold it). */
  const relayWith = async (client: RelayKeeperClient, answered = true) => {
    const { relay, app } = await keptRelay(client);
    if (answered) expect(await ask(app, cmd('PING'), 1)).toBe('+PONG\r\n');
    else app.write(cmd('PING'));
    return { relay, app };
  };

  /** A fake keeper on `socket`: answers each line with answer(line) (nothing when undefined). */
  const fakeKeeper = async (socket: string, answer: (line: string) => string | undefined) => {
    const seen: string[] = [];
    const server = net.createServer((s) => createInterface({ input: s }).on('line', (l) => {
      seen.push(l);
      const a = answer(l);
      if (a !== undefined) s.write(`${a}\n`);
    }));
    await new Promise<void>((r) => server.listen(socket, () => r()));
    return { seen, close: () => new Promise<void>((r) => server.close(() => r())) };
  };

  it('start: false and nobody listening: the relay is spliced in this process, the refusal said', async () => {
    const client = new RelayKeeperClient({ socket: path.join(dir, 'nobody.sock'), logFile: path.join(dir, 'nobody.log'), start: false });
    const refused: string[] = [];
    client.on('refused', (e) => refused.push(e.reason));
    const { relay, app } = await relayWith(client);
    await until('spliced here', () => (relay.stats.spliced ? true : undefined));
    expect(await ask(app, cmd('ECHO', 'here'), 1)).toBe('$4\r\nhere\r\n');
    expect(relay.stats.kept).toBe(false);
    expect(refused).toEqual([expect.stringMatching(/no relay keeper answers on .*nobody\.sock: .*ENOENT.*\(relayKeeper\.start is false: the agent starts none\)/)]);
    app.destroy();
    await relay.done;
  });

  it('a keeper that cannot be started is not tried again for every relay (5 s back-off)', async () => {
    // Its socket's directory is missing: the keeper started exits at once (listen ENOENT).
    const client = new RelayKeeperClient({ socket: path.join(dir, 'no-such-dir', 'k.sock'), logFile: path.join(dir, 'k.log') });
    const started: unknown[] = [];
    client.on('started', (e) => started.push(e));
    const h = client.handOff({ client: '127.0.0.1:1', service: '198.18.0.100:6379', upstream: `127.0.0.1:${port}`, peer: 'a' });
    const first = await h.connect().catch((e: Error) => e);
    expect(first).toMatchObject({ code: 'EKEEPERSTART' });
    expect((first as Error).message).toMatch(/the relay keeper did not come up on .*k\.sock \(exited 1; its log: /);
    expect(readFileSync(path.join(dir, 'k.log'), 'utf8')).toContain('no-such-dir (the directory of --socket');
    const again = await h.connect().catch((e: Error) => e);
    expect(again).toMatchObject({ code: 'EKEEPERSTART' });
    expect((again as Error).message).toBe((first as Error).message);
    // One keeper started, not two.
    expect(started).toHaveLength(1);
  });

  it('a keeper of another wire version is not used; one that never lists is given up on; one that never answers a take: the relay ends and the keeper is told to close it', async () => {
    // (A field this version does not know: its version is read leniently all the same.)
    const other = await fakeKeeper(path.join(dir, 'v2.sock'), () => JSON.stringify({ op: 'relays', version: 2, pid: 77, relays: [], more: false, shards: 4 }));
    const v2 = new RelayKeeperClient({ socket: path.join(dir, 'v2.sock'), logFile: path.join(dir, 'v2.log'), answerTimeoutMs: 300 });
    const unusable: string[] = [];
    v2.on('unusable', (e) => unusable.push(e.reason));
    const lost: unknown[] = [];
    v2.on('lost', (e) => lost.push(e));
    expect(await v2.attach()).toBe(false);
    expect(unusable).toEqual([expect.stringMatching(/\(pid 77\) speaks version 2 of the wire, this process 1/)]);
    // It never was this client's keeper: no loss to report.
    expect(lost).toEqual([]);
    const refused: string[] = [];
    v2.on('refused', (e) => refused.push(e.reason));
    const a = await relayWith(v2);
    await until('spliced here', () => (a.relay.stats.spliced ? true : undefined));
    expect(a.relay.stats.kept).toBe(false);
    expect(refused[0]).toMatch(/speaks version 2 of the wire, this process 1/);
    a.app.destroy();
    await other.close();

    const silent = await fakeKeeper(path.join(dir, 'silent.sock'), () => undefined);
    const started = Date.now();
    expect(await new RelayKeeperClient({ socket: path.join(dir, 'silent.sock'), logFile: path.join(dir, 's.log'), answerTimeoutMs: 300 }).attach()).toBe(false);
    expect(Date.now() - started).toBeLessThan(2000);
    await silent.close();

    const mute = await fakeKeeper(path.join(dir, 'mute.sock'), (l) => (l.includes('"list"') ? JSON.stringify({ op: 'relays', version: 1, pid: 78, relays: [], more: false }) : undefined));
    const m = new RelayKeeperClient({ socket: path.join(dir, 'mute.sock'), logFile: path.join(dir, 'm.log'), answerTimeoutMs: 300 });
    // (Its PING may be answered or not: the handover, which nobody answers, can come first.)
    const b = await relayWith(m, false);
    const end = await b.relay.done;
    expect(end.reason).toBe('the relay keeper did not answer in 300 ms');
    const take = JSON.parse(mute.seen.find((l) => l.includes('"take"'))!) as { id: string };
    await until('the close', () => (mute.seen.some((l) => l.includes('"close"') && l.includes(take.id)) ? true : undefined));
    expect(m.held!.relays).toEqual([]);
    m.close();
    await mute.close();
  });
});
