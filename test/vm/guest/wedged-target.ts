// Run last by device-suite.ts, in its own process: LIO through tcm_loop never completes PREEMPT
// AND ABORT, and from then on answers nothing on that LUN. The fence must fail in bounded time
// and say why, not hang, and the device then refuses more commands at once. This process cannot
// exit afterwards (its SG_IO thread stays blocked in the kernel), so it prints its result and
// the suite does not wait for it.
import { Fencer } from '../../../src/fence/fencer.js';
import { PersistentReservations } from '../../../src/scsi/reservations.js';
import { DeviceTransport, ScsiDevice, stuckAfterMs } from '../../../src/scsi/transport.js';
import { check } from './report.js';

const [pathA, pathB] = process.argv.slice(2) as [string, string];
const TIMEOUT_MS = 1000;
await check('a target that hangs (PREEMPT AND ABORT through tcm_loop): the fence fails in bounded time and says why', async () => {
  const [a, b] = [pathA, pathB].map((p) => new PersistentReservations(new ScsiDevice(new DeviceTransport(p), TIMEOUT_MS)));
  const fa = new Fencer({ cluster: 'wedge', node: 'a', nodes: ['a', 'b'], devices: [a!] });
  const fb = new Fencer({ cluster: 'wedge', node: 'b', nodes: ['a', 'b'], devices: [b!] });
  const joined = [...(await fa.join()), ...(await fb.join())].every((r) => r.ok);
  const t0 = performance.now();
  const rep = await fb.fence('a');
  const fenceMs = performance.now() - t0;
  const error = rep.devices[0]?.error ?? '';
  // The wedged device takes no more commands (each would block a worker thread for good).
  const t1 = performance.now();
  const next = await b!.readKeys().then(() => 'answered', (e: Error) => e.message);
  const nextMs = performance.now() - t1;
  // Read keys (answered: ~4 ms in this guest, bench/README.md), then PREEMPT AND ABORT (never
  // answered): one deadline (2 × timeout + 1 s) + 500 ms for the answered commands and the
  // emulated guest's timers.
  return {
    ok: joined && !rep.ok && /opcode 0x5f: no reply .* stuck in the driver or the target/.test(error) && fenceMs < stuckAfterMs(TIMEOUT_MS) + 500 && /still stuck in the kernel; no more are sent/.test(next) && nextMs < 100,
    fenceMs, error, next, nextMs,
  };
});
