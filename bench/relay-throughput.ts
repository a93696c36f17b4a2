// A continued connection's throughput (issue 12): 100 MB transfers through the relay a continued
// connection runs on (relayConnection, no preamble), in userspace vs in the kernel (splice), vs
// the same transfers straight from the server (the baseline: what the client had before the
// takeover). Lab: the client on c; the server and both relays on b (the backup's shape: the
// relay and the promoted service on one host, joined over loopback). The same work on each side:
// TRANSFERS requests of 100 MB on one connection, ROUNDS rounds with the sides interleaved;
// medians pooled. Also the relay process's CPU time per 100 MB.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Lab } from '../src/lab/lab.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fx = (name: string) => path.join(here, 'fixtures', name);
const BYTES = 100 * 1000 * 1000;
const TRANSFERS = 3;
const ROUNDS = 3;
/** No side may take longer (ms): 3 transfers at 10 MB/s. */
const SIDE_TIMEOUT_MS = 40_000;

type Side = 'direct' | 'userspace' | 'splice';
const PORTS: Record<Side, number> = { direct: 7300, userspace: 7301, splice: 7302 };

export async function relayThroughput(out: (s: string) => void): Promise<void> {
  const lab = await Lab.create({ hosts: ['c', 'b'] });
  try {
    const source = lab.spawn('b', fx('bulk-source.ts'), ['--port', String(PORTS.direct)]);
    await source.waitFor('listening');
    const relays: Record<'userspace' | 'splice', ReturnType<Lab['spawn']>> = {
      userspace: lab.spawn('b', fx('relay-node.ts'), ['--port', String(PORTS.userspace), '--upstream', String(PORTS.direct), '--mode', 'userspace']),
      splice: lab.spawn('b', fx('relay-node.ts'), ['--port', String(PORTS.splice), '--upstream', String(PORTS.direct), '--mode', 'splice']),
    };
    await Promise.all(Object.values(relays).map((r) => r.waitFor('listening')));
    const ms: Record<Side, number[]> = { direct: [], userspace: [], splice: [] };
    const cpuMs: Record<'userspace' | 'splice', number> = { userspace: 0, splice: 0 };
    let spliced = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const side of ['direct', 'userspace', 'splice'] as const) {
        const relaySide = side === 'direct' ? undefined : side;
        const relay = relaySide ? relays[relaySide] : undefined;
        const cpu0 = relay ? ((await relay.request({ cmd: 'cpu' })) as { cpuMs: number }).cpuMs : 0;
        const reader = lab.spawn('c', fx('bulk-reader.ts'), ['--host', lab.host('b').ipv4, '--port', String(PORTS[side]), '--bytes', String(BYTES), '--count', String(TRANSFERS)]);
        const r = await Promise.race([reader.waitFor('result', SIDE_TIMEOUT_MS), reader.waitFor('failed', SIDE_TIMEOUT_MS).then((e) => Promise.reject(new Error(`relay-throughput ${side}: ${String(e.message)}`)))]);
        ms[side].push(...(r.ms as number[]));
        if (relay && relaySide) {
          const after = (await relay.request({ cmd: 'cpu' })) as { cpuMs: number; relays: Array<{ spliced: boolean }> };
          cpuMs[relaySide] += after.cpuMs - cpu0;
          if (side === 'splice') spliced = after.relays.filter((x) => x.spliced).length;
        }
      }
    }
    const rate = (t: number) => BYTES / 1e6 / (t / 1000);
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const rates = Object.fromEntries((Object.keys(ms) as Side[]).map((s) => [s, ms[s].map(rate)])) as Record<Side, number[]>;
    const m = Object.fromEntries((Object.keys(ms) as Side[]).map((s) => [s, median(rates[s])])) as Record<Side, number>;
    const range = (s: Side) => `${Math.min(...rates[s]).toFixed(0)}-${Math.max(...rates[s]).toFixed(0)}`;
    const perTransfer = (s: 'userspace' | 'splice') => (cpuMs[s] / (TRANSFERS * ROUNDS)).toFixed(0);
    out(`relay throughput, ${BYTES / 1e6} MB transfers (${TRANSFERS} x ${ROUNDS} per side, medians, MB/s): direct ${m.direct.toFixed(0)} (${range('direct')}), userspace relay ${m.userspace.toFixed(0)} (${range('userspace')}), splice relay ${m.splice.toFixed(0)} (${range('splice')}; ${spliced} of ${ROUNDS} connections spliced)`);
    out(`  relay CPU per 100 MB: userspace ${perTransfer('userspace')} ms, splice ${perTransfer('splice')} ms`);
    out(`  ratio splice / direct = ${(m.splice / m.direct).toFixed(2)}; userspace / direct = ${(m.userspace / m.direct).toFixed(2)}; splice / userspace = ${(m.splice / m.userspace).toFixed(2)}x`);
  } finally {
    await lab.destroy();
  }
}
