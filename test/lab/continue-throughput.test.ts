// Issue 12: a continued connection's throughput. The primary a serves Redis on the service
// address, the backup b runs its replica and an agent whose takeover of a continues a's
// connections (a learning bridge; the switch mirrors a's port to b: as continue-agent.test.ts).
// A client on c reads a 100 MB value with GET, a few times; a dies silently; b's agent continues
// the connection (restored socket -> relay -> promoted replica: the relay's steady state is spliced
// in the kernel; the restored socket keeps window scaling and timestamps, compared with ss); the
// same client, on the same connection, reads the value again. Printed: the rates before and after
// and their ratio. The bound asserted is the one docs/CONTINUE.md promises. A second test loses
// frames of a reply in b's capture before the takeover.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { agentsLab, shadowFollowing, startContinueAgents, type AgentsLab } from './agents-lab.js';
import { startRedisPair } from './redis.js';
import { until } from './replication-cluster.js';
import { runCli } from '../cli-process.js';

const bulkFixture = fileURLToPath(new URL('fixtures/resp-bulk-reader.ts', import.meta.url));
const BYTES = 100 * 1000 * 1000;
/** GETs of the whole value on each side of the takeover; the median rate of each side counts. */
const TRANSFERS = 5;
/**
 * After / before, at least. Measured with the splice relay on a 2-core machine shared with other
 * work, 12 runs: 0.64-1.46, median ~1.2 (after is often faster: before, b's shadow captures the
 * mirrored traffic on the same cores). The bound leaves room for that machine's worst moments;
 * the userspace relay measured 0.57-1.00 here (3 runs): the bench (bench/relay-throughput.ts)
 * is what separates the two.
 */
const MIN_RATIO = 0.5;

interface GetResult { transfers: Array<[number, number]>; mismatches: number; errors: string[]; closed: boolean }

/** The lab of both tests: the value written, the agents up, the bulk reader's connection opened through the service address. */
async function bulkLab(prefix: string) {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, prefix);
  const pair = await startRedisPair(m.lab);
  try {
    return { ...m, ...pair, ...(await bulkSetUp(m, pair)) };
  } catch (err) {
    await pair.stop(); // the tests stop it once this returned
    throw err;
  }
}

async function bulkSetUp(m: AgentsLab, pair: Awaited<ReturnType<typeof startRedisPair>>) {
  const { lab, vip } = m;
  // The value is written first, apart: the measured connection only reads (a shadow lets go of
  // a connection whose unanswered request passes 8 MiB).
  const bulk = lab.spawn('c', bulkFixture);
  await bulk.waitFor('ready');
  await bulk.request({ cmd: 'set', address: lab.host('a').ipv4, port: pair.master.port, key: 'big', bytes: BYTES }, 30_000);
  await until('the value on the replica', async () => ((await pair.replica.cli(['STRLEN', 'big'])) === String(BYTES) ? true : undefined), 30_000);
  const { ifname } = await lab.mirrorPort('a', 'b');
  const agents = startContinueAgents(m, pair.master.port, { protocol: 'resp', mirror: ifname, upstream: { port: pair.replica.port }, promote: ['redis-cli', '-p', String(pair.replica.port), 'REPLICAOF', 'NO', 'ONE'] });
  const log = () => agents.log('b');
  await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
  // Connections opened once b's shadow captures are the ones it can continue.
  await shadowFollowing(m, 'b');
  await bulk.request({ cmd: 'start', address: vip, port: pair.master.port, key: 'big', bytes: BYTES, loop: false }, 30_000);
  /** a dies silently; b's takeover, as its log says it, printed. */
  const takeover = async (name: string) => {
    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
    const { connections, reset, resetBy, firstReset, captureDrops, backlogDrops } = taken.continued;
    console.log(`${name}: takeover ${JSON.stringify({ connections, reset, resetBy, firstReset, captureDrops, backlogDrops })}`);
    expect(taken.continueError).toBeUndefined();
    return taken;
  };
  /**
   * GETs on the continued connection after the takeover; when they do not finish, the error says
   * what b did with the connection: its log from the takeover on, and its status' relays and
   * shadows (a continued client left waiting once in CI, on 2026-12-02, and did not again in 6
   * runs, 4 of them on a loaded host).
   */
  const getAfter = async (count: number): Promise<GetResult> => {
    const since = log().findIndex((e) => e.msg === 'peer taken over');
    try {
      return (await bulk.request({ cmd: 'get', count }, 60_000)) as GetResult;
    } catch (err) {
      const status = await runCli(['status', '--json', '--control', path.join(m.dir, 'b.sock')], { netns: lab.host('b').ns }).then((r) => r.stdout, (e: Error) => e.message);
      throw new Error(`${(err as Error).message}\nb's log from the takeover on: ${JSON.stringify(log().slice(Math.max(0, since)))}\nb's status: ${status}`);
    }
  };
  return { bulk, agent: agents.agent, takeover, getAfter };
}

it('a 100 MB transfer after the takeover runs at the rate it had before', async () => {
  const { lab, vip, master, replica, stop, bulk, takeover, getAfter } = await bulkLab('tko-continue-rate-');
  try {
    const rates = (r: GetResult) => r.transfers.map(([sent, end]) => BYTES / ((end - sent) / 1000) / 1e6);
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
    const before = (await bulk.request({ cmd: 'get', count: TRANSFERS }, 60_000)) as GetResult;
    expect(before).toMatchObject({ mismatches: 0, errors: [], closed: false });

    // The connection's options as a's kernel has them (ss -ti): the window scales, and the MSS in
    // use (12 bytes below the peer's 1460 with the timestamp option; this ss, iproute2 6.1, does
    // not print the ts and sack flags on this kernel, so the MSS is the sign of timestamps).
    const options = async (host: 'a' | 'b') => {
      const text = (await lab.exec(host, 'ss', ['-tinH', 'state', 'established', 'src', `${vip}:${master.port}`])).stdout;
      return { wscale: /\bwscale:(\d+,\d+)/.exec(text)?.[1], mss: /\bmss:(\d+)/.exec(text)?.[1] };
    };
    const onA = await options('a');
    expect(onA.wscale).toBeDefined();
    const taken = await takeover('continue throughput');
    expect(taken.continued).toMatchObject({ connections: 1, reset: 0 });
    // The continued socket on b kept them (TCP_REPAIR): window scaling and timestamps.
    expect(await options('b')).toEqual(onA);
    const after = await getAfter(TRANSFERS);
    expect(after).toMatchObject({ mismatches: 0, errors: [], closed: false });
    expect(after.transfers).toHaveLength(TRANSFERS);

    const rb = median(rates(before));
    const ra = median(rates(after));
    const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
    console.log(`continue throughput: ${BYTES / 1e6} MB GET, rate before ${rb.toFixed(0)} MB/s (${fmt(rates(before))}), after ${ra.toFixed(0)} MB/s (${fmt(rates(after))}): ratio ${(ra / rb).toFixed(2)}`);
    expect(ra / rb).toBeGreaterThanOrEqual(MIN_RATIO);
    expect((await replica.replication()).role).toBe('master');
  } finally {
    await stop();
  }
}, 180_000);

// A capture loss inside a large reply (docs/CONTINUE.md): b's agent is stopped (SIGSTOP, as a
// starved or paused process) while a 100 MB GET runs; the kernel fills its 64 MiB ring and
// drops the rest of the reply's frames, and the client's ACKs with them. The
// client acknowledged those bytes, so the shadow skips them (they lie inside the bulk string's
// payload) and the connection is still continued, not reset for the hole.
it('frames the capture lost inside a 100 MB reply (the backup\'s agent stopped during the GET) do not keep its connection from being continued', async () => {
  const { stop, bulk, agent, takeover, getAfter } = await bulkLab('tko-continue-loss-');
  try {
    const b = agent('b').child;
    // Stopped from before the GET until it ends: the ring takes its first 64 MiB and the kernel
    // drops the rest, whatever the transfer's rate (stopped 0.6 s from 20 ms into it, a slower
    // run once lost nothing).
    b.kill('SIGSTOP');
    let got: GetResult;
    try {
      got = (await bulk.request({ cmd: 'get', count: 1 }, 60_000)) as GetResult;
    } finally {
      b.kill('SIGCONT');
    }
    expect(got).toMatchObject({ mismatches: 0, errors: [], closed: false });
    // b's agent works through the full ring first (~0.2 s here): a request sent before it is
    // through is lost as well, a hole in what the client sent, which resets the connection.
    await new Promise((r) => setTimeout(r, 1500));
    // Another GET: the client's ACK of the whole first reply, with it, shows the hole will not fill.
    expect(await bulk.request({ cmd: 'get', count: 1 }, 60_000)).toMatchObject({ mismatches: 0, errors: [], closed: false });
    const taken = await takeover('capture loss mid-GET');
    expect(taken.continued.captureDrops, 'frames b\'s ring dropped').toBeGreaterThan(0);
    expect(taken.continued).toMatchObject({ connections: 1, reset: 0 });
    const after = await getAfter(2);
    expect(after).toMatchObject({ mismatches: 0, errors: [], closed: false });
    expect(after.transfers).toHaveLength(2);
  } finally {
    await stop();
  }
}, 180_000);
