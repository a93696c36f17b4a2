// The exactly-once test (seed 004): 100,000 orders from 10 ReliableClients to an
// order-matching pair of node processes (test/reliable-node-child.ts) while the primary is hit
// 20 times at seeded points of the load, the roles swapping on each death:
//   - kill -9 (the process dies, its sockets close);
//   - node silent (SIGSTOP: its sockets stay open; the clients leave it on their reply timeout;
//     the test, standing for the failure detector, fences it with SIGKILL once it has been quiet);
//   - replication link cut (the mirror's TCP link goes silent both ways: the primary carries on
//     in primary-only, acknowledging on its own disk; no takeover; when the link returns the
//     backup catches up and the normal state resumes).
// After each death the backup takes over (replay, recovery signal) and the dead node is
// restarted as its backup: it cuts what it wrote past the fork point and catches up (step 465).
// Checked at the end: every client got exactly one reply per message, each message is in the
// surviving log exactly once with the reply the client got, the book served equals a
// single-server replay of the log, both nodes' logs are equal; no replay ever recomputed a
// different reply. Times printed: kill to serving, kill to normal again, link cut to normal.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { readLog } from '../../src/log/log-reader.js';
import { ReliableClient } from '../../src/reliable/reliable-client.js';
import { decodeRecord } from '../../src/reliable/reliable-record.js';
import { ReliableState } from '../../src/reliable/reliable-state.js';
import { encodeOrder, orderMatchingApp, type OrderBook } from '../../docs/examples/order-matching/order-book.js';
import { KEY, LinkProxy, perTestScratch, seededRandom, sleep, until } from './mirror-helpers.js';
import { freePort } from '../free-port.js';
import { bundledScript } from '../../src/lab/node-child.js';

// The node process, started ~17 times (each restart is on the path to the next event): bundled
// once into plain JS (bundledScript), ~0.4 s less per start than through tsx.
const CHILD_SOURCE = 'test/reliable-node-child.ts';
const scratch = perTestScratch('reliable-chaos-');
const { open, children } = scratch;

type Name = 'a' | 'b';
interface Node {
  name: Name;
  child: ChildProcessWithoutNullStreams;
  exited: Promise<void>;
  events: Array<Record<string, unknown>>;
  state: string;
  stderr: string;
}

const CLIENTS = 10;
const PER_CLIENT = 10_000;
const WINDOW = 4;
const EVENTS = 20;

/** The first LSN at which two logs (both from LSN 0) differ, with both records decoded; null when equal. */
function firstDifference(primary: Buffer[], backup: Buffer[]): string | null {
  const n = Math.max(primary.length, backup.length);
  const show = (r: Buffer | undefined) => {
    if (!r) return 'none';
    try {
      const d = decodeRecord(r);
      return `${d.clientId}/${d.msgId} ack<${d.ackBelow} ${d.request.toString()} -> ${d.reply.toString()}`;
    } catch {
      return r.toString('hex');
    }
  };
  for (let i = 0; i < n; i++) {
    if (primary[i] && backup[i] && primary[i]!.equals(backup[i]!)) continue;
    let run = 0;
    for (let j = i; j < n && !(primary[j] && backup[j] && primary[j]!.equals(backup[j]!)); j++) run++;
    return `first at LSN ${i} (${run} differing in a row from there): primary ${show(primary[i])}; backup ${show(backup[i])}`;
  }
  return null;
}

/** One death's fork decisions, from both nodes' event lines (test/reliable-node-child.ts). */
function forkDecision(i: number, kind: string, newPrimary: Node, servingAt: number, serving: Record<string, unknown>, returning: Node): string {
  const after = newPrimary.events.slice(servingAt);
  const primarySaw = after.filter((e) => e.ev === 'link').map((e) => (e.type === 'attached' ? `attached from ${e.fromLsn as number} (next ${e.nextLsn as number})` : `refused ${e.refusal as string} (next ${e.nextLsn as number}): ${e.reason as string}`));
  const ready = returning.events.find((e) => e.ev === 'ready');
  const backupSaw = returning.events.filter((e) => ['attached', 'refused', 'resynced'].includes(e.ev as string)).map((e) => (e.ev === 'attached' ? `attached from ${e.fromLsn as number}` : e.ev === 'resynced' ? `cut ${e.cut as number} (held ${e.heldLsn as number})` : `refused ${e.refusal as string}: ${e.reason as string}`));
  return `event ${i} ${kind}: ${newPrimary.name} forked at LSN ${serving.recoveredLsn as number}; ${returning.name} came back holding ${ready?.heldLsn as number}; ${newPrimary.name} said [${primarySaw.join('; ')}]; ${returning.name} did [${backupSaw.join('; ')}]`;
}

describe('reliable pair under repeated failures', () => {
  it('100,000 orders from 10 clients; the primary SIGKILLed, SIGSTOPped or cut off from its backup 20 times at seeded points: exactly once, one reply each, the book equals a replay', async () => {
    const { int, rnd } = seededRandom(2026);
    const childScript = bundledScript(CHILD_SOURCE, 'test-');
    const dirs = { a: path.join(scratch.root, 'a'), b: path.join(scratch.root, 'b') };
    const mirrorPorts = { a: await freePort(), b: await freePort() };
    const clientPorts = { a: await freePort(), b: await freePort() };
    // The replication link to each node's mirror port: what a link cut silences.
    const links = { a: await LinkProxy.start(mirrorPorts.a), b: await LinkProxy.start(mirrorPorts.b) };
    open.push(links.a, links.b);

    function start(name: Name, role: 'primary' | 'backup'): Node {
      const peer: Name = name === 'a' ? 'b' : 'a';
      const config = { node: `node-${name}`, dir: dirs[name], role, mirrorPort: mirrorPorts[name], peerMirrorPort: links[peer].port, clientPort: clientPorts[name], keyHex: KEY.toString('hex') };
      const child = spawn(process.execPath, [childScript, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] });
      children.push(child);
      const node: Node = { name, child, exited: new Promise((r) => child.once('exit', () => r())), events: [], state: '', stderr: '' };
      createInterface({ input: child.stdout }).on('line', (line) => {
        const e = JSON.parse(line) as Record<string, unknown>;
        node.events.push(e);
        if (e.ev === 'state') node.state = e.state as string;
      });
      child.stderr.on('data', (d: Buffer) => (node.stderr += d.toString()));
      return node;
    }
    const has = (n: Node, ev: string) => n.events.some((e) => e.ev === ev);
    const errorsOf = (n: Node) => n.events.filter((e) => e.ev === 'error');

    let backup = start('b', 'backup');
    await until(() => has(backup, 'ready') || backup.child.exitCode !== null, 20_000, () => `b ready (${backup.stderr})`);
    let primary = start('a', 'primary');
    await until(() => primary.state === 'normal' || primary.child.exitCode !== null, 20_000, () => `a normal (${primary.stderr})`);

    // The load: each client keeps WINDOW orders in flight until it has sent PER_CLIENT.
    const clients: ReliableClient[] = [];
    for (let c = 0; c < CLIENTS; c++) {
      const client = await ReliableClient.connect({ servers: [{ host: '127.0.0.1', port: clientPorts.a }, { host: '127.0.0.1', port: clientPorts.b }], clientId: `chaos-c${c}`, backoff: { minMs: 5, maxMs: 40 }, replyTimeoutMs: 400, greetingTimeoutMs: 400 });
      open.push(client);
      clients.push(client);
    }
    // The events below fire at seeded counts of replies; at full speed the load would outrun them
    // (a death and its node's return take ~1.5 s, the load ~10,000 orders a second), and the
    // later ones would hit an idle pair. So sends stop LEAD orders past the point of the event
    // the test waits for: the load runs on through each takeover until that gate, and resumes
    // once the next event is awaited; every event meets orders in flight (asserted).
    const total = CLIENTS * PER_CLIENT;
    const stride = total / (EVENTS + 1);
    const points = Array.from({ length: EVENTS }, (_, i) => Math.floor(stride * (i + 0.5 + rnd())));
    const LEAD = Math.floor(stride / 2);
    let sent = 0;
    let gate = points[0]! + LEAD;
    let openGate = () => {};
    let gateMoved = new Promise<void>((r) => (openGate = r));
    const moveGate = (to: number) => {
      gate = to;
      const open = openGate;
      gateMoved = new Promise<void>((r) => (openGate = r));
      open();
    };
    let answered = 0;
    const got = new Map<string, Buffer>();
    const replies = new Map<string, number>();
    const loads = clients.map(async (client, c) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: WINDOW }, async () => {
          while (next < PER_CLIENT) {
            while (sent >= gate) await gateMoved;
            if (next >= PER_CLIENT) break;
            next++;
            sent++;
            const msgId = client.nextMsgId;
            const reply = await client.request(encodeOrder({ side: int(2) ? 'buy' : 'sell', price: 95 + int(11), qty: 1 + int(20) }));
            const k = `${client.clientId}/${msgId}`;
            replies.set(k, (replies.get(k) ?? 0) + 1);
            got.set(k, reply);
            answered++;
          }
        }),
      );
      return c;
    });

    // The 20 events at seeded points, spread over the load; each kind at least 5 times.
    const kinds = Array.from({ length: EVENTS }, (_, i) => (['SIGKILL', 'SIGSTOP', 'link-cut'] as const)[i < 15 ? i % 3 : int(3)]!);
    for (let i = kinds.length - 1; i > 0; i--) {
      const j = int(i + 1);
      [kinds[i], kinds[j]] = [kinds[j]!, kinds[i]!];
    }
    const lines: string[] = [];
    /** Orders sent and not answered when each event struck. */
    const inFlight: number[] = [];
    // Per death: where the new primary forked, what the returning node held and what each side
    // decided at its HELLO; printed with the timings, and in the message if the logs end unequal.
    const decisions: string[] = [];
    let cutRecords = 0;
    for (let i = 0; i < EVENTS; i++) {
      const at = points[i]!;
      // Never up to the next event's point: that one must wait for replies the load is sending.
      moveGate(Math.min(at + LEAD, (points[i + 1] ?? Number.POSITIVE_INFINITY) - 1));
      await until(() => answered >= at, 60_000, () => `${at} replies before event ${i} (${answered} so far; primary ${primary.name}: ${primary.stderr} ${JSON.stringify(errorsOf(primary))})`);
      const kind = kinds[i]!;
      const t0 = performance.now();
      inFlight.push(sent - answered);
      if (kind === 'link-cut') {
        links[backup.name].silence(true);
        await until(() => primary.state === 'primary-only', 5000, `event ${i}: ${primary.name} primary-only after the link cut`);
        const tAlone = performance.now();
        await sleep(200 + int(300));
        links[backup.name].silence(false);
        await until(() => primary.state === 'normal', 10_000, `event ${i}: ${primary.name} normal again`);
        lines.push(`${i} link cut: primary-only after ${(tAlone - t0).toFixed(0)} ms, normal again ${(performance.now() - t0).toFixed(0)} ms after the cut (link restored after ${(performance.now() - tAlone).toFixed(0)} ms alone)`);
        continue;
      }
      // A death: SIGKILL, or SIGSTOP and, once quiet, the fence (SIGKILL) the detector would order.
      primary.child.kill(kind);
      if (kind === 'SIGSTOP') {
        await sleep(300);
        primary.child.kill('SIGKILL');
      }
      await primary.exited;
      const servingBefore = backup.events.length;
      backup.child.stdin.write('takeover\n');
      await until(() => backup.events.slice(servingBefore).some((e) => e.ev === 'serving' || e.ev === 'error'), 20_000, `event ${i}: ${backup.name} serving`);
      const serving = backup.events.slice(servingBefore).find((e) => e.ev === 'serving');
      expect(serving, JSON.stringify(errorsOf(backup))).toBeDefined();
      expect(serving!.mismatches).toBe(0);
      const tServing = performance.now();
      const returning = start(primary.name, 'backup');
      const newPrimary = backup;
      await until(() => newPrimary.state === 'normal' || returning.child.exitCode !== null, 20_000, () => `event ${i}: ${newPrimary.name} normal with ${returning.name} back (${returning.stderr})`);
      const cut = returning.events.find((e) => e.ev === 'resynced');
      cutRecords += (cut?.cut as number | undefined) ?? 0;
      decisions.push(forkDecision(i, kind, newPrimary, servingBefore, serving!, returning));
      lines.push(`${i} ${kind} ${primary.name}: ${newPrimary.name} serving after ${(tServing - t0).toFixed(0)} ms (takeover ${(serving!.takeoverMs as number).toFixed(0)} ms, ${serving!.replayed} records replayed), normal with ${returning.name} back after ${(performance.now() - t0).toFixed(0)} ms, ${(cut?.cut as number | undefined) ?? 0} records cut`);
      primary = newPrimary;
      backup = returning;
    }
    moveGate(Number.POSITIVE_INFINITY);
    await Promise.race([Promise.all(loads), sleep(120_000).then(() => Promise.reject(new Error(`the load did not finish: ${answered} of ${total}`)))]);
    for (const l of [...lines, ...decisions]) console.log(l);
    console.log(`orders in flight at each event: ${inFlight.join(', ')}`);
    // Every event struck a pair under load, not an idle one: each client's whole window in flight.
    expect(inFlight, inFlight.join(', ')).toEqual(inFlight.map(() => CLIENTS * WINDOW));
    console.log(`${total} orders, ${clients.reduce((n, c) => n + c.stats.resent, 0)} resent, ${clients.reduce((n, c) => n + c.stats.recoveredSignals, 0)} recovery signals, ${cutRecords} records cut from returning primaries`);

    // Exactly one reply per message, to every client.
    expect(answered).toBe(total);
    expect(replies.size).toBe(total);
    expect([...replies.values()].every((n) => n === 1)).toBe(true);
    for (const c of clients) expect(c.outstandingCount).toBe(0);
    // The served book, then both logs.
    const snapAt = primary.events.length;
    primary.child.stdin.write('snapshot\n');
    await until(() => primary.events.slice(snapAt).some((e) => e.ev === 'snapshot'), 5000, 'snapshot');
    const snap = primary.events.slice(snapAt).find((e) => e.ev === 'snapshot')!;
    for (const c of clients) await c.close();
    await until(() => primary.state === 'normal', 5000, 'normal at the end');
    // Closed, not killed: in the normal state the last commits are in the backup's memory and
    // on no disk yet (each side checkpoints every 100 ms); close() flushes both.
    primary.child.stdin.write('close\n');
    await primary.exited;
    backup.child.stdin.write('close\n');
    await backup.exited;
    expect([primary.child.exitCode, backup.child.exitCode]).toEqual([0, 0]);

    const { records } = await readLog(dirs[primary.name]);
    const mirror = await readLog(dirs[backup.name]);
    const differs = firstDifference(records, mirror.records);
    const diagnosis = [`logs differ: ${differs} (${primary.name} primary, ${records.length} records; ${backup.name} backup, ${mirror.records.length})`, ...decisions].join('\n');
    expect(mirror.records.length, diagnosis).toBe(records.length);
    expect(differs, diagnosis).toBeNull();
    const seen = new Map<string, number>();
    const replay = new ReliableState<OrderBook>(orderMatchingApp);
    for (const [lsn, rec] of records.entries()) {
      const r = decodeRecord(rec);
      const k = `${r.clientId}/${r.msgId}`;
      seen.set(k, (seen.get(k) ?? 0) + 1);
      expect(got.get(k)?.equals(r.reply), k).toBe(true);
      replay.replay(lsn, rec);
    }
    expect(records.length).toBe(total);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    expect(replay.stats.replayMismatches).toBe(0);
    expect(snap.book).toEqual(JSON.parse(JSON.stringify(replay.state.snapshot())));
    expect(snap.mismatches).toBe(0);
    expect(errorsOf(primary)).toEqual([]);
  }, 600_000);
});
