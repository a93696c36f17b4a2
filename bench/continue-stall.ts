// Client-visible stall after the failure detection (issue 12): Redis clients of a primary that
// dies silently, continued on the backup's promoted replica (ours: `takeover agent` with a
// `continue` section, as test/lab/continue-agent.test.ts runs it), vs the usual way: the same
// agent without `continue` takes the address over and resets the dead primary's connections,
// the replica is promoted when the agent declares the node down (as a notify script would), and
// the clients reconnect to the address (5 ms doubling to 40 ms) and go on. A third side runs
// ours with `continue.matchWrites` (the replay decided from the replication stream, exactly
// once): the relays wait for that check before they replay, and its time shows here.
//
// Lab: a (Redis primary on the service address), b (its replica, the backup's agent; a's switch
// port mirrored to b), c (CLIENTS clients, each INCR back to back on one connection). Heartbeats
// 100 ms x 3 misses on both sides. Per client: the longest gap between two replies; the stall
// after detection is the gap's end minus b's node-down time (one machine, one clock). ROUNDS
// fresh labs per side, samples pooled.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';
import type { LabEvent, NodeChild } from '../src/lab/node-child.js';
import { startCli } from '../test/cli-process.js';
import { startRedis } from '../test/lab/redis.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const CLIENTS = 50;
const ROUNDS = 3;

type Side = 'continue' | 'continue-match' | 'reconnect';
interface ClientReport { gapFrom: number; gapTo: number; gapMs: number; replies: number; reconnects: number; errors: string[] }

let nextReq = 1;
async function op(child: NodeChild, cmd: Record<string, unknown>): Promise<any> {
  const reqId = nextReq++;
  child.send({ ...cmd, reqId });
  const r: LabEvent = await child.waitFor('result', 20_000, (e) => e.reqId === reqId);
  if (!r.ok) throw new Error(`${String(cmd.cmd)}: ${String(r.message)}`);
  return r.value;
}

async function until<T>(what: string, f: () => T | undefined, ms: number, stepMs = 5): Promise<T> {
  for (const end = Date.now() + ms; Date.now() < end; ) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`continue-stall: ${what} not within ${ms} ms`);
}

/** One round: a fresh lab, the kill, each client's stall after b's node-down. */
async function round(side: Side): Promise<{ afterDetection: number[]; gaps: number[]; failed: number; detectionMs: number; reconnects: number; errors: string[]; note: string }> {
  const lab = await Lab.create({ hosts: ['a', 'b', 'c'] });
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-stall-'));
  const agents: Array<ReturnType<typeof startCli>> = [];
  const vip = `198.18.${lab.subnet}.100`;
  let master: Awaited<ReturnType<typeof startRedis>> | undefined;
  let replica: Awaited<ReturnType<typeof startRedis>> | undefined;
  try {
    await lab.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    master = await startRedis(lab, 'a', { maxClients: 1100 });
    replica = await startRedis(lab, 'b', { maxClients: 1100, replicaOf: { host: lab.host('a').ipv4, port: master.port } });
    await replica.waitReplicaUp();
    const { ifname } = await lab.mirrorPort('a', 'b');
    const links = (h: string) => [{ id: 0, address: lab.host(h).ipv4, port: 7400 }];
    for (const n of ['a', 'b']) {
      const takeover = {
        address: vip, port: master.port, interface: 'eth0', prefixLength: 24,
        ...(side !== 'reconnect' ? { continue: { protocol: 'resp', mirror: ifname, upstream: { port: replica.port }, promote: { resp: ['REPLICAOF', 'NO', 'ONE'] }, ...(side === 'continue-match' ? { matchWrites: {} } : {}) } } : {}),
      };
      const config = {
        cluster: 'bench', node: n, database: 'db', key: 'the bench cluster key', control: path.join(dir, `${n}.sock`),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover }],
        quorum: { twoNode: true },
      };
      writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
      agents.push(startCli(['agent', '--config', path.join(dir, `${n}.json`)], { netns: lab.host(n).ns }));
    }
    const log = () => agents[1]!.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    await until('b hears a', () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000, 50);
    await new Promise((r) => setTimeout(r, 500)); // the shadow follows connections opened after it started
    const clients = lab.spawn('c', fx('resp-stall-client.ts'), side === 'reconnect' ? ['--reconnect'] : []);
    await clients.waitFor('ready', 20_000);
    await op(clients, { cmd: 'start', address: vip, port: master.port, clients: CLIENTS, prefix: 'k' });
    await new Promise((r) => setTimeout(r, 500));
    const killedAt = Date.now();
    await lab.killSilently('a');
    const down = await until('node-down in b\'s log', () => log().find((e) => e.msg === 'node-down'), 10_000);
    const at = (down.detector as { at: number; lastHeardAt: number }).at;
    const detectionMs = at - (down.detector as { lastHeardAt: number }).lastHeardAt;
    let note = '';
    if (side === 'reconnect') {
      // What a notify script would do on the node-down: promote the replica.
      await replica.cli(['REPLICAOF', 'NO', 'ONE']);
      note = `promote command returned ${(Date.now() - at).toFixed(0)} ms after node-down`;
    }
    const taken = await until('the takeover in b\'s log', () => log().find((e) => e.msg === 'peer taken over'), 10_000);
    if (side !== 'reconnect') {
      const c = taken.continued as { connections: number; reset: number; timings: Record<string, number>; replayCheck?: Record<string, number>; replayCheckError?: string; resetBy?: Record<string, number> } | undefined;
      const steps = c ? Object.entries(c.timings).map(([k, v]) => `${k.replace(/Ms$/, '')} ${v.toFixed(0)}`).join(', ') : '';
      note = c ? `continued ${c.connections}, reset ${c.reset} (continueConnections, ms since its start: ${steps})` : 'nothing continued';
      if (c?.replayCheck) {
        const k = c.replayCheck;
        note += `; replay check decided at ${k.decidedMs?.toFixed(0)} ms (promotion ${k.promotedMs}, INFO ${k.infoMs}, plan ${k.planMs}, stream read ${k.readMs}, verdicts ${k.decideMs}, writes run again + answers ${k.applyMs} ms; ${k.loggedWrites} writes logged): refused ${k.refused}, answered ${k.answered}, lost acknowledged ${k.lostAcknowledged} (run again ${k.reapplied}), ran unanswered ${k.ranUnanswered}, probes ${k.probes}`;
        if (c.reset > 0) note += `, resets ${JSON.stringify(c.resetBy)}`;
      }
      if (c?.replayCheckError) note += `, replay check error: ${c.replayCheckError}`;
      if (taken.continueError) note += `, continue error: ${String(taken.continueError)}`;
    }
    if (typeof taken.time === 'number') note += `, takeover logged ${(taken.time - at).toFixed(0)} ms after node-down`;
    await new Promise((r) => setTimeout(r, 1500));
    const reports = (await op(clients, { cmd: 'stop' })) as ClientReport[];
    // A client with no reply after the kill never resumed (its connection failed): counted apart,
    // and b's agent log kept for a look.
    const resumed = reports.filter((r) => r.gapTo > killedAt);
    if (resumed.length < reports.length) {
      const kept = path.join(tmpdir(), `tko-stall-${side}-${Date.now()}.log`);
      writeFileSync(kept, agents[1]!.stdout());
      note += `; b's agent log kept in ${kept}`;
    }
    return {
      afterDetection: resumed.map((r) => r.gapTo - at),
      gaps: resumed.map((r) => r.gapMs),
      failed: reports.length - resumed.length,
      detectionMs,
      reconnects: reports.reduce((n, r) => n + r.reconnects, 0),
      errors: [...new Set(reports.flatMap((r) => r.errors))],
      note,
    };
  } finally {
    for (const a of agents) a.child.kill('SIGKILL');
    await replica?.stop();
    await master?.stop();
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const dist = (xs: number[]) => xs.length === 0 ? 'none' : `p50 ${pct(xs, 50).toFixed(0)}, p99 ${pct(xs, 99).toFixed(0)}, max ${pct(xs, 100).toFixed(0)} ms`;

export async function continueStall(out: (s: string) => void): Promise<void> {
  out(`client-visible stall, Redis primary dies silently under ${CLIENTS} clients (INCR back to back), backup at 100 ms x 3 misses, ${ROUNDS} rounds per side pooled:`);
  const med: Record<Side, number> = { continue: NaN, 'continue-match': NaN, reconnect: NaN };
  for (const side of ['continue', 'continue-match', 'reconnect'] as const) {
    const after: number[] = [];
    const gaps: number[] = [];
    const lines: string[] = [];
    let failed = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const r = await round(side);
      after.push(...r.afterDetection);
      gaps.push(...r.gaps);
      failed += r.failed;
      lines.push(`${CLIENTS - r.failed}/${CLIENTS} resumed; detection ${r.detectionMs.toFixed(0)} ms, ${r.note}, reconnects ${r.reconnects}${r.errors.length ? `, errors seen ${r.errors.join('|')}` : ''}`);
    }
    med[side] = pct(after, 50);
    const name = {
      continue: 'ours (continued on the promoted replica, no reconnect)',
      'continue-match': 'ours with matchWrites (continued, each replay decided from the replication stream first)',
      reconnect: 'baseline (address taken, connections reset, replica promoted at node-down, clients reconnect)',
    }[side];
    out(`  ${name}: ${after.length}/${CLIENTS * ROUNDS} clients resumed${failed ? ` (${failed} never did: their connection failed)` : ''}; stall after detection ${dist(after)}; whole gap (last reply before -> first after) ${dist(gaps)}`);
    for (const l of lines) out(`    ${l}`);
  }
  out(`  ratio baseline / ours, stall after detection (p50) = ${(med.reconnect / med.continue).toFixed(2)}x; baseline / ours with matchWrites = ${(med.reconnect / med['continue-match']).toFixed(2)}x`);
}
