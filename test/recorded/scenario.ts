// The command sequence recorded on real targets (test/vm/record-targets.ts) and replayed by the
// unit tests (test/unit/scsi-recorded.test.ts): two nodes, a and b, on one LUN, through the
// project's own ScsiDevice, PersistentReservations and Fencer. It returns what the code made of
// the replies; the recording keeps that summary, and a replay must reproduce it exactly.
import { Fencer, PR_TYPE } from '../../src/fence/fencer.js';
import { fenceKey } from '../../src/fence/fence-keys.js';
import { read10, testUnitReady, write10 } from '../../src/scsi/cdb.js';
import { capacity, identify } from '../../src/scsi/inquiry.js';
import { PersistentReservations } from '../../src/scsi/reservations.js';
import { ScsiDevice, type ScsiTransport } from '../../src/scsi/transport.js';

export const CLUSTER = 'rec';

/** A value, or what went wrong: the error's class, code and message. */
async function settle<T>(p: Promise<T>): Promise<T | { error: string; code?: string; message: string }> {
  try {
    return await p;
  } catch (err) {
    const e = err as Error & { code?: string };
    return { error: e.name, ...(e.code ? { code: e.code } : {}), message: e.message };
  }
}

/** JSON-safe: bigints as hex strings, durations dropped (they differ from run to run). */
export function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : k === 'elapsedMs' || k === 'durationUs' ? undefined : x)));
}

export async function runScenario(ta: ScsiTransport, tb: ScsiTransport): Promise<Record<string, unknown>> {
  const a = new ScsiDevice(ta, 5000);
  const b = new ScsiDevice(tb, 5000);
  const [prA, prB] = [new PersistentReservations(a), new PersistentReservations(b)];
  const fa = new Fencer({ cluster: CLUSTER, node: 'a', nodes: ['a', 'b'], devices: [prA] });
  const fb = new Fencer({ cluster: CLUSTER, node: 'b', nodes: ['a', 'b'], devices: [prB] });
  const [kA, kB] = [fenceKey(CLUSTER, 'a'), fenceKey(CLUSTER, 'b')];
  const block = Buffer.alloc(512, 0x5a);
  const write = (d: ScsiDevice) => settle(d.execute({ cdb: write10(20), dataOut: block }).then(() => 'ok'));
  const s: Record<string, unknown> = {};

  s.identity = await identify(a);
  s.capacity = await capacity(a);
  // A clean start whatever an earlier run left: register, then CLEAR drops everything.
  await prA.registerAndIgnore(kA);
  await prA.clear(kA);
  s.keysEmpty = await prA.readKeys();
  s.reservationNone = await prA.readReservation();
  s.capabilities = await settle(prA.reportCapabilities());
  s.join = [await fa.join(), await fb.join()];
  s.keys = await prB.readKeys();
  s.reservation = await prB.readReservation();
  s.fullStatus = await settle(prA.readFullStatus());
  s.bReserveOther = await settle(prB.reserve(kB, PR_TYPE.writeExclusive));
  s.aWriteHolder = await write(a);
  s.fence = await fb.fence('a');
  s.aWriteFenced = await write(a); // its unit attention first, retried after TEST UNIT READY
  s.aUnitAttentions = a.unitAttentions;
  s.aReadFenced = await settle(a.execute({ cdb: read10(20), dataIn: 512 }).then(() => 'ok'));
  s.keysAfterFence = await prB.readKeys();
  s.reservationAfterFence = await prB.readReservation();
  s.rejoin = await fa.join();
  // SPC-2 RESERVE(6): the other initiator's TEST UNIT READY conflicts (the disk heartbeat's signal).
  await prB.clear(kB);
  await prA.reserveLegacy(6);
  s.bTurReserved6 = await settle(b.execute({ cdb: testUnitReady() }).then(() => 'ok'));
  await prA.releaseLegacy(6);
  s.bTurReleased = await settle(b.execute({ cdb: testUnitReady() }).then(() => 'ok'));
  await prA.registerAndIgnore(kA);
  await prA.clear(kA);
  return plain(s) as Record<string, unknown>;
}
