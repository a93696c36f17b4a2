// Runs inside the test guest against real targets: one LIO LUN seen through two tcm_loop
// nexuses (node A = the first, node B = the second) and a scsi_debug disk (no PR support).
// Each check prints one `TKO {"check", "ok", ...}` line; the host-side test asserts on them.
// Everything goes through the project's own addon (SG_IO) and SCSI/fencing code.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Agent } from '../../../src/agent/agent.js';
import { validateConfig } from '../../../src/agent/config.js';
import { read10, testUnitReady, write10 } from '../../../src/scsi/cdb.js';
import { identify } from '../../../src/scsi/inquiry.js';
import { PersistentReservations } from '../../../src/scsi/reservations.js';
import { DeviceTransport, ScsiDevice, NoPersistentReservationsError } from '../../../src/scsi/transport.js';
import { block, check, outcome, report, until } from './report.js';
import { initiatorOf, iscsiByInitiator, sgNodes, targetName as portName } from './nexus.js';
import { Fencer, OwnKeyWatch, PR_TYPE } from '../../../src/fence/fencer.js';
import { fenceKey, formatKey } from '../../../src/fence/fence-keys.js';
import { DiskHeartbeatWatcher, DiskHeartbeatWriter, type DiskVerdict } from '../../../src/monitor/disk-heartbeat.js';
import { ClusterStore } from '../../../src/cluster/cluster-store.js';
import { FileBackend } from '../../../src/cluster/file-backend.js';
import { CuttableBackend } from './cut-store.js';

const transports: DeviceTransport[] = [];
const open = (path: string) => {
  const t = new DeviceTransport(path);
  transports.push(t);
  return new ScsiDevice(t, 5000);
};

// Which sg node is which target.
const sgs = sgNodes();
const ids = new Map<string, Awaited<ReturnType<typeof identify>>>();
for (const p of sgs) ids.set(p, await identify(open(p)));
const targetName = (p: string) => portName(ids.get(p)!.designators);
const lio = sgs.filter((p) => ids.get(p)!.vendor === 'LIO-ORG' && targetName(p).startsWith('naa.'));
const debug = sgs.find((p) => ids.get(p)!.vendor === 'Linux');
const [pathA, pathB] = lio as [string, string];
// The iSCSI nexuses: initiator ...:a, then ...:b.
const iscsi = iscsiByInitiator(sgs);
const [pathIA, pathIB] = iscsi as [string, string];
let A = open(pathA);
let B = open(pathB);
let prA = new PersistentReservations(A);
let prB = new PersistentReservations(B);
const kA = 0xa1a1a1a1n;
const kB = 0xb2b2b2b2n;

await check('identity: four nexuses (two tcm_loop, two iSCSI), one logical unit', async () => {
  const all = [...lio, ...iscsi].map((p) => ids.get(p)!);
  return {
    ok: lio.length === 2 && iscsi.length === 2 && all.every((i) => i.serial === all[0]!.serial) && all[0]!.serial !== undefined && initiatorOf(pathIA).endsWith(':a') && initiatorOf(pathIB).endsWith(':b'),
    tcmLoop: lio, iscsi: iscsi.map((p) => `${p} ${initiatorOf(p)}`), serial: all[0]!.serial, designators: all[0]!.designators.length,
  };
});

/** Two agents in this guest, a and b, heartbeating on loopback ports; `extra` adds config sections. */
const agentConfig = (node: string, me: number, peer: string, them: number, extra: Record<string, unknown>) =>
  validateConfig({
    cluster: 'vm', node, database: 'd', key: 'a key of sixteen+ bytes', control: `/tmp/${node}-${me}.sock`,
    incarnationFile: `/tmp/${node}-${me}.incarnation`, // the guest's /var/lib is read-only
    heartbeat: { intervalMs: 100, misses: 2, links: [{ id: 0, address: '127.0.0.1', port: me }] },
    peers: [{ node: peer, links: [{ id: 0, address: '127.0.0.1', port: them }] }],
    notify: { host: '127.0.0.1', port: 0 },
    ...extra,
  });

/** Leaves the LUN with no registration and no reservation. */
async function reset(): Promise<void> {
  await prA.registerAndIgnore(kA);
  await prA.clear(kA);
}

await check('register and read keys from both nexuses', async () => {
  await reset();
  await prA.registerAndIgnore(kA);
  await prB.registerAndIgnore(kB);
  const fromA = await prA.readKeys();
  const fromB = await prB.readKeys();
  const keys = fromA.keys.map(String).sort();
  return { ok: keys.join() === [kA, kB].map(String).sort().join() && fromB.generation === fromA.generation, keys: fromA.keys, generation: fromA.generation };
});

await check('every reservation type: what the other, registered nexus may do', async () => {
  const matrix: Record<string, { bWrite: string; bRead: string; bReserve: string }> = {};
  for (const type of [1, 3, 5, 6, 7, 8]) {
    await prA.reserve(kA, type);
    const r = await prA.readReservation();
    matrix[type] = {
      bWrite: await outcome(() => B.execute({ cdb: write10(8), dataOut: block(0xbb) })),
      bRead: await outcome(() => B.execute({ cdb: read10(8), dataIn: 512 })),
      bReserve: await outcome(() => prB.reserve(kB, type)),
    };
    if (r.reservation?.type !== type) return { ok: false, type, reservation: r };
    // All-registrants types have no single holder: A releases for everyone.
    await prA.release(kA, type);
  }
  // SPC-4 5.13.10 (B registered): WE/EA keep B out; RO and AR types let registrants write.
  const expected: typeof matrix = {
    1: { bWrite: 'conflict', bRead: 'ok', bReserve: 'conflict' },
    3: { bWrite: 'conflict', bRead: 'conflict', bReserve: 'conflict' },
    5: { bWrite: 'ok', bRead: 'ok', bReserve: 'conflict' },
    6: { bWrite: 'ok', bRead: 'ok', bReserve: 'conflict' },
    7: { bWrite: 'ok', bRead: 'ok', bReserve: 'ok' },
    8: { bWrite: 'ok', bRead: 'ok', bReserve: 'ok' },
  };
  return { ok: JSON.stringify(matrix) === JSON.stringify(expected), matrix };
});

await check('report capabilities, APTPL, read full status', async () => {
  const caps = await prA.reportCapabilities();
  await prA.registerAndIgnore(kA, { aptpl: true });
  const after = await prA.reportCapabilities();
  await prA.reserve(kA, PR_TYPE.writeExclusiveRegistrantsOnly);
  const full = await prA.readFullStatus();
  const holder = full.entries.find((e) => e.holder);
  await prA.release(kA, PR_TYPE.writeExclusiveRegistrantsOnly);
  await prA.registerAndIgnore(kA); // APTPL off again
  return { ok: caps.ptplC && after.ptplA && holder?.key === kA && full.entries.length === 2, types: caps.types, ptplA: after.ptplA, fullStatus: full.entries.length };
});

/** a holds Write Exclusive – Registrants Only; b preempts it (`how`); what each may do after. */
async function afterPreempt(a: ScsiDevice, b: ScsiDevice, how: (pb: PersistentReservations) => Promise<void>) {
  await reset();
  const [pa, pb] = [new PersistentReservations(a), new PersistentReservations(b)];
  await pa.registerAndIgnore(kA);
  await pb.registerAndIgnore(kB);
  await pa.reserve(kA, PR_TYPE.writeExclusiveRegistrantsOnly);
  const aBefore = await outcome(() => a.execute({ cdb: write10(9), dataOut: block(0xaa) }));
  const t0 = performance.now();
  await how(pb);
  const preemptMs = performance.now() - t0;
  const uaBefore = a.unitAttentions;
  const aWrite = await outcome(() => a.execute({ cdb: write10(9), dataOut: block(0xab) }));
  const aRead = await outcome(() => a.execute({ cdb: read10(9), dataIn: 512 }));
  const bWrite = await outcome(() => b.execute({ cdb: write10(9), dataOut: block(0xbb) }));
  const keys = await pb.readKeys();
  const r = await pb.readReservation();
  return {
    ok: aBefore === 'ok' && aWrite === 'conflict' && aRead === 'ok' && bWrite === 'ok' && keys.keys.length === 1 && keys.keys[0] === kB && r.reservation?.key === kB && a.unitAttentions > uaBefore,
    preemptMs, aBefore, aWrite, aRead, bWrite, keys: keys.keys, unitAttentionsOnA: a.unitAttentions - uaBefore,
  };
}

// Through tcm_loop, LIO never completes PREEMPT AND ABORT (Debian's 6.1 and 6.12 kernels alike;
// sg_persist --preempt-abort hangs the same way): PREEMPT there, PREEMPT AND ABORT over iSCSI.
await check('preempt: the preempted nexus cannot write, can read, and gets its unit attention handled', () =>
  afterPreempt(A, B, (pb) => pb.preempt(kB, kA, PR_TYPE.writeExclusiveRegistrantsOnly)));

await check('PREEMPT AND ABORT over iSCSI: the preempted nexus cannot write, can read, and gets its unit attention handled', () =>
  afterPreempt(open(pathIA), open(pathIB), (pb) => pb.preemptAndAbort(kB, kA, PR_TYPE.writeExclusiveRegistrantsOnly)));

await check('SPC-2 RESERVE(6): the other nexus gets RESERVATION CONFLICT, also for TEST UNIT READY', async () => {
  await reset();
  await prA.reserveLegacy(6);
  const bTur = await outcome(() => B.execute({ cdb: testUnitReady() }));
  const bWrite = await outcome(() => B.execute({ cdb: write10(10), dataOut: block(1) }));
  await prA.releaseLegacy(6);
  const bTurAfter = await outcome(() => B.execute({ cdb: testUnitReady() }));
  await prA.reserveLegacy(10);
  const bTur10 = await outcome(() => B.execute({ cdb: testUnitReady() }));
  await prA.releaseLegacy(10);
  return { ok: bTur === 'conflict' && bWrite === 'conflict' && bTurAfter === 'ok' && bTur10 === 'conflict', bTur, bWrite, bTurAfter, bTur10 };
});

await check('disk heartbeat: a live primary is never declared dead; a stopped one is, within the timeout', async () => {
  await reset();
  const intervalMs = 100;
  const timeoutMs = 400;
  const writer = new DiskHeartbeatWriter({ reserve: () => prA.reserveLegacy(6), release: () => prA.releaseLegacy(6) }, { intervalMs });
  const watcher = new DiskHeartbeatWatcher(async () => ((await outcome(() => B.execute({ cdb: testUnitReady() }))) === 'conflict' ? 'reserved' : 'free'), { intervalMs, timeoutMs });
  const verdicts: DiskVerdict[] = [];
  watcher.on('verdict', (v) => verdicts.push(v));
  writer.start();
  watcher.start();
  await new Promise((r) => setTimeout(r, 2000));
  const whileAlive = verdicts.map((v) => v.kind);
  const stoppedAt = performance.timeOrigin + performance.now();
  await writer.stop();
  const deadline = Date.now() + 5000;
  while (!verdicts.some((v) => v.kind === 'dead') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  watcher.stop();
  const dead = verdicts.find((v) => v.kind === 'dead');
  const declaredMs = dead ? dead.at - stoppedAt : undefined;
  return { ok: whileAlive.join() === 'alive' && dead !== undefined && declaredMs! <= timeoutMs + intervalMs + 100, whileAlive, changes: watcher.judge.changes, writerPulses: writer.pulses, declaredMs, writerFailures: writer.failures, watcherFailures: watcher.failures };
});

await check('fencing end to end over iSCSI: B fences A with PREEMPT AND ABORT; A cannot write, notices, and rejoins', async () => {
  await reset();
  const A = open(pathIA);
  const fa = new Fencer({ cluster: 'vm', node: 'a', nodes: ['a', 'b'], devices: [new PersistentReservations(A)] });
  const fb = new Fencer({ cluster: 'vm', node: 'b', nodes: ['a', 'b'], devices: [new PersistentReservations(open(pathIB))] });
  const joined = [...(await fa.join()), ...(await fb.join())].every((r) => r.ok);
  const watch = new OwnKeyWatch(fa, 50);
  const watchErrors: string[] = [];
  watch.on('error', (e) => watchErrors.push(String(e.error))); // a READ KEYS that failed (a starved guest's iSCSI session): in the result, not a crash
  let noticedAt: number | undefined;
  watch.on('fenced', (e) => (noticedAt ??= e.at));
  watch.start();
  const before = await outcome(() => A.execute({ cdb: write10(11), dataOut: block(2) }));
  const selfRefused = await fb.fence('b').then(() => false, (e: Error & { code?: string }) => e.code === 'ERR_FENCE_SELF');
  const t0 = performance.now();
  const rep = await fb.fence('a');
  const fenceMs = performance.now() - t0;
  const fencedAt = performance.timeOrigin + performance.now();
  const after = await outcome(() => A.execute({ cdb: write10(11), dataOut: block(3) }));
  const readAfter = await outcome(() => A.execute({ cdb: read10(11), dataIn: 512 }));
  const deadline = Date.now() + 3000;
  while (noticedAt === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  watch.stop();
  const rejoined = (await fa.join()).every((r) => r.ok);
  const afterRejoin = await outcome(() => A.execute({ cdb: write10(11), dataOut: block(4) }));
  // A checks its key every 50 ms: noticed within one period + 100 ms for its READ KEYS and the
  // emulated guest's timers.
  const noticedMs = noticedAt === undefined ? undefined : noticedAt - fencedAt;
  return {
    ok: joined && before === 'ok' && selfRefused && rep.ok && rep.devices[0]?.method === 'preempt-and-abort' && after === 'conflict' && readAfter === 'ok' && noticedMs !== undefined && noticedMs <= 50 + 100 && rejoined && afterRejoin === 'ok',
    report: rep, fenceMs, before, after, readAfter, noticedMs, afterRejoin, watchErrors,
  };
});

await check('the agent with a disk witness (seed 002): LAN silence alone is disputed; dead once the disk agrees too', async () => {
  await reset();
  for (const t of transports) t.close(); // the agents open the devices themselves
  transports.length = 0;
  const disk = { intervalMs: 100, timeoutMs: 500 };
  const a = await Agent.create(agentConfig('a', 7401, 'b', 7402, { disk: { ...disk, device: pathA, pulse: true } }));
  const b = await Agent.create(agentConfig('b', 7402, 'a', 7401, { disk: { ...disk, device: pathB, watch: 'a' } }));
  const published: string[] = [];
  const disputed: string[] = [];
  const clock = () => performance.timeOrigin + performance.now(); // the verdicts' clock
  let downAt: number | undefined;
  // From a's LAN silence on. Before it, the emulated guest's start may publish a death and a
  // return (a's first heartbeats late while the disk had not yet seen its pulse): not this check's.
  let silent = false;
  let dead: Extract<DiskVerdict, { kind: 'dead' }> | undefined;
  const timeline: Array<[number, string]> = []; // in the result, in ms from the verdict that counts
  const mark = (what: string) => timeline.push([clock(), what]);
  b.on('detector', (e) => mark(`detector ${e.kind}`));
  b.on('suppressed', (s) => mark(`suppressed ${s.why}`));
  b.on('published', (e) => {
    mark(`published ${e.type}:${e.status}`);
    published.push(`${e.type}:${e.status}`);
    if (e.type === 'node' && e.status === 'DOWN' && silent) downAt ??= clock();
  });
  b.on('disputed', (d) => (disputed.push(d.witness), mark(`disputed ${d.witness}`)));
  // The verdict that counts is the first dead one after the last alive: b's watcher may call a
  // dead before a's pulse has started (no change seen for the timeout), then alive once it runs.
  b.on('disk', (v) => {
    mark(`disk ${v.kind}`);
    dead = v.kind === 'alive' ? undefined : (dead ?? v);
  });
  try {
    await b.start();
    await a.start();
    const up = await until(() => published.includes('node:UP') && b.status().peers[0]?.up === true && b.diskWatcher!.judge.state === 'alive', 10_000);
    silent = true;
    a.heartbeat.stop(); // the LAN goes silent; the disk pulse goes on
    const disputedInTime = await until(() => disputed.includes('disk'), 5000);
    await new Promise((r) => setTimeout(r, 800));
    const downWhileDiskAlive = downAt !== undefined;
    const stopping = clock();
    mark('a.stop begins');
    await a.stop(); // now the disk pulse stops too (its writer's last RELEASE comes within this)
    const stopMs = clock() - stopping;
    mark('a.stop ends');
    const down = await until(() => downAt !== undefined, 5000);
    // docs/AGENT.md: dead ~550 ms after the pulse stops, i.e. after the last change b's watcher
    // saw. The bound: the watcher's timeout (500 ms) + one sample (every intervalMs / 2) + the
    // witness asked again (every 100 ms) + 100 ms of margin, as the disk heartbeat check allows.
    const declaredAfterPulseStoppedMs = downAt !== undefined && dead ? downAt - dead.lastChangeAt : undefined;
    const inTime = declaredAfterPulseStoppedMs !== undefined && declaredAfterPulseStoppedMs <= disk.timeoutMs + disk.intervalMs / 2 + 100 + 100;
    return {
      ok: up && disputedInTime && !downWhileDiskAlive && down && inTime, up, disputedInTime, downWhileDiskAlive, down, declaredAfterPulseStoppedMs,
      // where the time went: a.stop(), the watcher's verdict after the last change, the witness after the verdict
      stopMs, deadAfterLastChangeMs: dead ? dead.at - dead.lastChangeAt : undefined, downAfterDeadMs: downAt !== undefined && dead ? downAt - dead.at : undefined, status: b.status().disk,
      timeline: timeline.map(([t, what]) => `${(t - (dead?.at ?? 0)).toFixed(0)} ${what}`),
    };
  } finally {
    await a.stop();
    await b.stop();
  }
});

A = open(pathA);
B = open(pathB);
prA = new PersistentReservations(A);
prB = new PersistentReservations(B);

await check('the cluster manager with a disk witness (seed 002): a cut off from the LAN and the store but pulsing on the disk is not failed over; once its pulse stops, b is HOST', async () => {
  await reset();
  const dir = mkdtempSync('/tmp/tko-apps-witness-');
  const store = { file: `${dir}/apps.json`, leaseMs: 1000 };
  const apps = [{ tag: 'w', type: 'cluster-capable', primary: 'a', backups: ['b'], command: { load: ['sleep', '1000'], stopGraceMs: 1000 } }];
  const disk = { intervalMs: 100, timeoutMs: 500 };
  const aStore = new CuttableBackend(new FileBackend(store.file));
  const a = await Agent.create(agentConfig('a', 7421, 'b', 7422, { disk: { ...disk, device: pathA, pulse: true }, store, apps, stateDir: `${dir}/a` }), { openStore: async () => new ClusterStore(aStore) });
  const b = await Agent.create(agentConfig('b', 7422, 'a', 7421, { disk: { ...disk, device: pathB, watch: 'a' }, store, apps, stateDir: `${dir}/b` }));
  const published: string[] = [];
  b.on('published', (e) => published.push(`${e.type}:${e.status}:${e.instance ?? e.node ?? ''}`));
  const seen = () => b.status().apps?.[0];
  const hostIs = (n: string) => seen()?.app.host === n && seen()?.app.state === 'up';
  try {
    await b.start();
    await a.start();
    const upOnA = await until(() => hostIs('a') && a.status().apps?.[0]?.local === 'running' && b.diskWatcher!.judge.state === 'alive', 20_000);
    // a loses the LAN and the store (its lease runs out; it stops the application itself), its disk pulse goes on.
    a.heartbeat.stop();
    aStore.cut();
    const aStopped = await until(() => a.status().apps?.[0]?.local === 'stopped', 5000);
    await new Promise((r) => setTimeout(r, 3 * store.leaseMs));
    const whileDiskAlive = { host: seen()?.app.host, bLocal: seen()?.local, bNote: seen()?.note, published: [...published] };
    const noFailover = whileDiskAlive.host === 'a' && whileDiskAlive.bLocal === 'stopped' && !published.some((p) => p.startsWith('node:DOWN') || p.includes('w@'));
    // Now a dies for good: its disk pulse stops too, the witness agrees, b fails it over.
    await a.stop();
    const stoppedAt = performance.now();
    const upOnB = await until(() => hostIs('b') && seen()?.local === 'running', 15_000);
    const failoverMs = performance.now() - stoppedAt;
    const memberEvents = published.filter((p) => p.includes('w@'));
    return {
      ok: upOnA && aStopped && noFailover && upOnB && memberEvents.filter((p) => p === 'service_member:DOWN:w@a').length === 1 && memberEvents.filter((p) => p === 'service_member:UP:w@b').length === 1,
      upOnA, aStopped, whileDiskAlive, noFailover, upOnB, failoverMs, published: [...published], b: seen(),
    };
  } finally {
    await a.stop();
    await b.stop();
  }
});

await check('the agent fences a peer that only looks dead (LAN silent, still running); the fenced agent stops the instance it runs', async () => {
  await reset();
  const fencing = (device: string) => ({ fencing: { devices: [device], checkMs: 100 } });
  const a = await Agent.create(agentConfig('a', 7411, 'b', 7412, { ...fencing(pathIA), instances: [{ name: 'db-a', node: 'a', command: ['sleep', '1000'] }], services: [{ name: 'sales', members: ['db-a'] }] }));
  const b = await Agent.create(agentConfig('b', 7412, 'a', 7411, fencing(pathIB)));
  let downAt: number | undefined;
  const fences: Array<{ ok: boolean; method?: string; ms: number; doneAt: number }> = [];
  let fencedAt: number | undefined;
  b.on('detector', (e) => e.kind === 'node-down' && (downAt ??= e.at));
  b.on('fence', (f) => fences.push({ ok: f.ok, method: f.devices[0]?.method, ms: f.doneAt - f.startedAt, doneAt: f.doneAt }));
  a.on('fenced', (f) => (fencedAt ??= f.at));
  try {
    await b.start();
    await a.start();
    const up = await until(() => a.status().instances[0]?.state === 'up' && b.status().peers[0]?.up === true, 10_000);
    const pid = a.status().instances[0]?.pid;
    const keysBefore = (await new PersistentReservations(open(pathA)).readKeys()).keys.length;
    a.heartbeat.stop();
    const fenced = await until(() => fences.length > 0 && fencedAt !== undefined && a.status().instances[0]?.state === 'stopped', 5000);
    const aWrite = await outcome(() => open(pathIA).execute({ cdb: write10(13), dataOut: block(6) }));
    const instanceGone = pid !== undefined && spawnSync('kill', ['-0', String(pid)]).status !== 0;
    // a checks its own key every checkMs (100 ms): noticed within one period + 100 ms for its
    // READ KEYS and the emulated guest's timers.
    const noticedAfterFenceMs = fencedAt && fences[0] ? fencedAt - fences[0].doneAt : undefined;
    return {
      ok: up && keysBefore === 2 && fenced && fences[0]!.ok && fences[0]!.method === 'preempt-and-abort' && aWrite === 'conflict' && instanceGone && noticedAfterFenceMs !== undefined && noticedAfterFenceMs <= 100 + 100,
      up, keysBefore, fences, fenceAfterDecisionMs: downAt && fences[0] ? fences[0].doneAt - downAt : undefined, noticedAfterFenceMs, aWrite, instanceGone,
    };
  } finally {
    await a.stop();
    await b.stop();
  }
});

// The CLI as an operator runs it (compiled dist/, as installed): one process per command here,
// so only the exit-code contract and the JSON are checked.
await check('takeover scsi / fence CLI: exit 0, 3 on RESERVATION CONFLICT, JSON', async () => {
  await reset();
  const cli = (...args: string[]) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, ['dist/cli/main.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out: out.trim(), err: err.trim() }));
  });
  const members = ['--cluster', 'vm', '--nodes', 'a,b'];
  // Each node registers its own key through its own nexus: one process each, both at once (a
  // Node start under TCG is seconds).
  const [unA, unB] = await Promise.all([cli('unfence', '--devices', pathA, '--node', 'a', ...members, '--json'), cli('unfence', '--devices', pathB, '--node', 'b', ...members)]);
  // Whichever unfence ran first reserved the LUN (WERO); the other node's RESERVE is the one the
  // target refuses (SPC-4 RESERVE: a registrant that does not hold the reservation gets RESERVATION
  // CONFLICT). Read in-process: no Node start.
  const holder = (await new PersistentReservations(A).readReservation()).reservation?.key;
  const other = holder === fenceKey('vm', 'b') ? { node: 'a', path: pathA } : { node: 'b', path: pathB };
  // Neither changes the LUN (a refused RESERVE, a read): both at once too.
  const [conflict, keys] = await Promise.all([cli('scsi', 'reserve', other.path, '--key', formatKey(fenceKey('vm', other.node)), '--type', 'wero'), cli('scsi', 'keys', pathB, '--json')]);
  const fence = await cli('fence', 'a', '--devices', pathB, '--node', 'b', ...members, '--no-abort', '--json');
  const aWrite = await outcome(() => A.execute({ cdb: write10(12), dataOut: block(5) }));
  const parsedKeys = JSON.parse(keys.out) as { keys: string[] };
  const fenced = JSON.parse(fence.out) as { ok: boolean; devices: Array<{ outcome: string }> };
  return {
    ok: unA.code === 0 && unB.code === 0 && conflict.code === 3 && /RESERVATION CONFLICT/.test(conflict.err) && parsedKeys.keys.length === 2 && fence.code === 0 && fenced.devices[0]?.outcome === 'fenced' && aWrite === 'conflict',
    unA: unA.code, unB: unB.code, holder: holder === undefined ? undefined : formatKey(holder), conflict, keys: parsedKeys, fence: fenced, aWrite,
  };
});

await check('scsi_debug (no persistent reservations) is reported as such', async () => {
  if (!debug) return { ok: false, error: 'no scsi_debug device' };
  const pr = new PersistentReservations(open(debug));
  const err = await pr.readKeys().then(() => undefined, (e: Error) => e);
  const out = await pr.registerAndIgnore(1n).then(() => undefined, (e: Error) => e);
  return { ok: err instanceof NoPersistentReservationsError && out instanceof NoPersistentReservationsError, message: err?.message };
});

await check('a dead device path is bounded: a command on a closed transport fails at once', async () => {
  const t = new DeviceTransport(pathA);
  t.close();
  const r = await outcome(() => new ScsiDevice(t).execute({ cdb: testUnitReady(), timeoutMs: 100 }));
  return { ok: /closed/.test(r), r };
});

await reset();
for (const t of transports) t.close();

// Last: this wedges the LUN for good. Its own process, which cannot exit once wedged: the bundle
// of wedged-target.ts the host made before the boot (argv[2]; plain node, no tsx start under TCG).
await check('a target that hangs (PREEMPT AND ABORT through tcm_loop): the fence fails in bounded time and says why', async () => {
  const wedged = process.argv[2];
  if (!wedged) return { ok: false, error: 'no bundle of wedged-target.ts given (argv[2])' };
  const child = spawn(process.execPath, [wedged, pathA, pathB], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.unref();
  const line = await new Promise<string | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 60_000);
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (!l.startsWith('TKO ')) return;
      clearTimeout(timer);
      resolve(l);
    });
  });
  child.stdout!.destroy();
  const r = line ? (JSON.parse(line.slice(4)) as Record<string, unknown>) : { ok: false, error: 'no result within 60 s: the fence hung' };
  return { ...r, ok: r.ok === true };
});
report('done', true);
process.exit(0); // the wedged child keeps a blocked SG_IO; do not wait for it
