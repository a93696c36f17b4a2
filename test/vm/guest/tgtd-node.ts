// One of two cluster nodes, each in its own qemu guest, sharing one disk on the host's tgtd over
// iSCSI (test/vm/tgtd-cluster.test.ts). `primary` (node a) joins and writes; `backup` (node b)
// waits until it sees a registered and holding the reservation, joins, and fences a. tgtd does
// not implement PREEMPT AND ABORT (ILLEGAL REQUEST 24/00): the fencer falls back to PREEMPT and
// its report says so. The two guests coordinate only through the disk, as two servers would. The primary
// keeps writing until the target refuses it, and its own-key watch must notice the fence.
import { Fencer, OwnKeyWatch, PR_TYPE } from '../../../src/fence/fencer.js';
import { fenceKey } from '../../../src/fence/fence-keys.js';
import { read10, write10 } from '../../../src/scsi/cdb.js';
import { identify } from '../../../src/scsi/inquiry.js';
import { PersistentReservations } from '../../../src/scsi/reservations.js';
import { DeviceTransport, ScsiDevice } from '../../../src/scsi/transport.js';
import { block, check, outcome, report, sleep } from './report.js';
import { sgNodes } from './nexus.js';

const role = process.argv[2];
if (role !== 'primary' && role !== 'backup') throw new Error(`usage: tgtd-node.ts primary|backup, not ${role}`);
const CLUSTER = 'tgt';
const NODES = ['a', 'b'];
const LBA = 100;

// tgtd's LUN 0 is a controller; the disk is the one with peripheral type 0.
const transports: DeviceTransport[] = [];
let disk: ScsiDevice | undefined;
let identity: Awaited<ReturnType<typeof identify>> | undefined;
for (const sg of sgNodes()) {
  const t = new DeviceTransport(sg);
  transports.push(t);
  const dev = new ScsiDevice(t, 5000);
  const id = await identify(dev);
  if (id.peripheralType === 0) [disk, identity] = [dev, id];
}
if (!disk || !identity) {
  report(`${role}: the shared disk`, false, { error: 'no disk LUN on the iSCSI session', sgs: transports.length });
  process.exit(1);
}
const dev = disk;
const pr = new PersistentReservations(dev);
report(`${role}: the shared disk`, identity.vendor === 'IET', { vendor: identity.vendor, product: identity.product, serial: identity.serial });

const write = (fill: number) => outcome(() => dev.execute({ cdb: write10(LBA), dataOut: block(fill) }));

if (role === 'primary') {
  const fencer = new Fencer({ cluster: CLUSTER, node: 'a', nodes: NODES, devices: [pr] });
  await check('primary: joins and writes', async () => {
    const joined = await fencer.join();
    return { ok: joined.every((r) => r.ok) && (await write(0xaa)) === 'ok', joined };
  });
  await check('primary: its next write after the fence gets RESERVATION CONFLICT, and it notices', async () => {
    // The watchdog's role: a node that finds its own key gone must stop writing.
    const watch = new OwnKeyWatch(fencer, 50);
    let noticedAt: number | undefined;
    watch.on('fenced', (e) => (noticedAt ??= e.at));
    watch.start();
    // Write until the target refuses; the backup fences at a time of its own choosing.
    let writes = 0;
    let last = 'ok';
    const deadline = Date.now() + 120_000;
    while (last === 'ok' && Date.now() < deadline) {
      last = await write(0xaa);
      if (last === 'ok') writes++;
      await sleep(20);
    }
    const refusedAt = performance.timeOrigin + performance.now();
    const again = await write(0xab);
    const read = await outcome(() => dev.execute({ cdb: read10(LBA), dataIn: 512 }));
    const until = Date.now() + 3000;
    while (noticedAt === undefined && Date.now() < until) await sleep(10);
    watch.stop();
    return {
      ok: writes > 0 && last === 'conflict' && again === 'conflict' && read === 'ok' && noticedAt !== undefined,
      writesBeforeFence: writes, refused: last, again, read, noticedMsFromRefusal: noticedAt === undefined ? undefined : noticedAt - refusedAt,
    };
  });
} else {
  const fencer = new Fencer({ cluster: CLUSTER, node: 'b', nodes: NODES, devices: [pr] });
  const keyA = fenceKey(CLUSTER, 'a');
  const keyB = fenceKey(CLUSTER, 'b');
  await check('backup: sees the primary registered and holding the reservation', async () => {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const [keys, r] = [await pr.readKeys(), await pr.readReservation()];
      if (keys.keys.includes(keyA) && r.reservation?.key === keyA) return { ok: true, keys: keys.keys, reservation: r.reservation };
      if (Date.now() > deadline) return { ok: false, keys: keys.keys, reservation: r.reservation };
      await sleep(100);
    }
  });
  await check('backup: fences the primary (PREEMPT: tgtd rejects PREEMPT AND ABORT, and the report says so), then holds the disk', async () => {
    const joined = await fencer.join();
    await sleep(500); // the primary goes on writing meanwhile
    const t0 = performance.now();
    const rep = await fencer.fence('a');
    const fenceMs = performance.now() - t0;
    const keys = await pr.readKeys();
    const r = await pr.readReservation();
    const bWrite = await write(0xbb);
    return {
      ok: joined.every((j) => j.ok) && rep.ok && rep.devices[0]?.outcome === 'fenced' && rep.devices[0].method === 'preempt' && /rejected PREEMPT AND ABORT/.test(rep.devices[0].note ?? '') && keys.keys.length === 1 && keys.keys[0] === keyB && r.reservation?.key === keyB && r.reservation.type === PR_TYPE.writeExclusiveRegistrantsOnly && bWrite === 'ok',
      fenceMs, report: rep, keys: keys.keys, reservation: r.reservation, bWrite,
    };
  });
}
for (const t of transports) t.close();
report('done', true);
