// Issue 12's exactly-once check through the agents, as operators run it (seed 003 [0055]: a
// request the primary committed is not replayed; the log locations decide). As continue-agent:
// `takeover agent` on the Redis primary a and the backup b (a learning bridge, a's port mirrored
// to b), b's replica the upstream, `REPLICAOF NO ONE` sent by b's agent; here the takeover also
// has `matchWrites`: b's agent probes a's replication stream every 50 ms, and at the takeover
// reads back from its promoted replica the stream it applied, to decide for each connection
// whether a's unanswered INCR ran (then its reply is lost: it is answered from the promoted
// replica, the INCR's value there, not replayed) or not (replayed). Clients on c count with
// INCR on keys of their own; a dies silently (nft drop, ARP included) mid-load. Checked
// against the promoted replica's values:
//   - no INCR is ever applied twice (a continued client's replies step by exactly 1, or 0 where
//     an acknowledged INCR was lost);
//   - a continued client's last reply is the replica's value: nothing it saw acknowledged is
//     missing there (the check ran lost ones again), nothing it did not see was applied;
//   - the check ran again every acknowledged write it found lost;
//   - only connections the check (or the mirror's losses) refused see an error.
// The load (each client waits 3 ms after a reply, as an application's think time) runs longer
// than the request log keeps answered writes, so every key is judged from probes taken during
// the load. A key no probe can place is reset (counted and printed), never replayed blindly.
// Running lost writes again is tested against real Redis in redis-replay-check.test.ts.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { runCli } from '../cli-process.js';
import { agentsLab, shadowFollowing, startContinueAgents } from './agents-lab.js';
import { incrSteps } from './incr-steps.js';
import { startRedisPair } from './redis.js';
import type { CounterReport } from './fixtures/resp-counter-client.js';
import { until } from './replication-cluster.js';

const clientFixture = fileURLToPath(new URL('fixtures/resp-counter-client.ts', import.meta.url));
/** Connections sending INCR back to back, and idle ones (one INCR, another after the takeover). */
const BUSY = 8;
const IDLE = 40;
/** Load before the death, ms. */
const LOAD_MS = 3000;
/**
 * What a busy client waits after each reply before its next INCR, ms: an application's think
 * time (3), or none (0: back to back, an INCR every ~0.2 ms). The capture times each probe
 * itself (its PUBLISH and reply pass the mirror), a window of tens of µs: with b's own clock
 * window (its event loop's round trip) no gap of a back-to-back writer was wide enough.
 */
const THINK_MS = 3;

/** The scenario; returns the check's counts once every assertion passed. */
async function matchScenario(name: string, thinkMs: number, allDecided: boolean, matchWrites: { marginMs?: number } = {}) {
  const m = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-continue-match-');
  const { lab, vip, dir } = m;
  const { master, replica, stop } = await startRedisPair(lab);
  try {
    const { ifname } = await lab.mirrorPort('a', 'b');
    const { log: logOf } = startContinueAgents(m, master.port, {
      protocol: 'resp',
      mirror: ifname,
      upstream: { port: replica.port },
      promote: { resp: ['REPLICAOF', 'NO', 'ONE'] },
      matchWrites,
    });
    const log = () => logOf('b');
    await until('b hears a', async () => (log().some((e) => e.msg === 'node-up') ? true : undefined), 15_000);
    await shadowFollowing(m, 'b');
    const clients = lab.spawn('c', clientFixture);
    await clients.waitFor('ready');
    await clients.request({ cmd: 'start', address: vip, port: master.port, connections: BUSY, idle: IDLE, prefix: 'm', thinkMs });
    // Longer than the request log keeps answered writes (2 s): the probes taken before the load
    // are gone, and every key is judged from probes taken while it was written back to back.
    await new Promise((r) => setTimeout(r, LOAD_MS));
    // What an operator sees before a failure: the shadow, and the probe of a's stream running.
    const status = await runCli(['status', '--control', path.join(dir, 'b.sock')], { netns: lab.host('b').ns });
    expect(status.stdout).toMatch(/mirror, stream probe up \([0-9]+ probes\)/);

    await lab.killSilently('a');
    const taken = await until('the takeover in b\'s log', async () => log().find((e) => e.msg === 'peer taken over'), 10_000);
    await new Promise((r) => setTimeout(r, 500));
    const poked = (await clients.request({ cmd: 'poke' })) as { idle: number; answered: number; failed: number; wrong: number };
    const after = (await clients.request({ cmd: 'stop' })) as CounterReport[];
    const check = taken.continued.replayCheck as { judged: number; refused: number; lostAcknowledged: number; reapplied: number; reapplyFailed: number; notKept: number; ranUnanswered: number; answered: number; ranAnswered: number; streamCommands: number; probes: number; capturedProbes: number; decidedMs: number };
    console.log(`continue-match ${name}: ${JSON.stringify({ connections: taken.continued.connections, reset: taken.continued.reset, resetBy: taken.continued.resetBy, captureDrops: taken.continued.captureDrops, replayCheck: check, timings: taken.continued.timings })}`);
    expect(taken.continueError).toBeUndefined();
    expect(check).toBeDefined();
    // Every restored connection was judged.
    expect(check.judged, `the replay check failed: ${String(taken.continued.replayCheckError)}`).toBe(taken.continued.connections + check.refused);
    // The probes went to the service address: the mirror copied them, and the capture timed them.
    expect(check.capturedProbes).toBeGreaterThan(0);
    // The probe's own connection to it was neither continued nor reset: only the clients were.
    expect(taken.continued.connections + taken.continued.reset, 'connections continued or reset').toBe(BUSY + IDLE);
    // Probes fall between a key's writes: with think time the check decides every busy
    // connection. Back to back, a key with no clean probe, or one whose count the stream
    // contradicts, is reset: safe, not continued. How many are decided then depends on the
    // timing (from 8 of 8 to 0 of 7 in runs on 2026-12-02): measured here, not asserted
    // (docs/CONTINUE.md); what is asserted is that none is applied twice or lost.
    const undecidedBy = Object.entries(taken.continued.resetBy as Record<string, number>).filter(([why]) => /cannot be placed|other connection|holds .* more than/.test(why));
    const notJudged = Object.entries(taken.continued.resetBy as Record<string, number>).filter(([why]) => !/unanswered|replication stream/.test(why)).reduce((n, [, k]) => n + k, 0);
    console.log(`continue-match ${name}: undecided ${undecidedBy.reduce((n, [, k]) => n + k, 0)} of ${BUSY} busy, ${notJudged} reset before the check for the mirror's losses (capture drops ${taken.continued.captureDrops}); probes ${check.probes}, timed by the capture ${check.capturedProbes}`);
    const undecided = undecidedBy.reduce((n, [, k]) => n + k, 0);
    // How many commands were read back is printed, not asserted: a CI run (2026-12-02) read
    // none with every key decided, its output cut (the replica's copy ending at the latest probe
    // would do that). A read-back that lost commands fails below all the same: the acknowledged
    // writes it misses would count as lost and run again, doubled on the replica.
    if (allDecided) expect(undecidedBy, 'connections the stream could not decide for').toEqual([]);

    let doubled = 0;
    let lostSeen = 0;
    let ranSeen = 0;
    let failedBusy = 0;
    const mismatched: string[] = [];
    for (const c of after) {
      const onReplica = Number(await replica.cli(['-n', '2', 'GET', c.key]));
      const steps = incrSteps(c.values);
      expect(steps.other, c.key).toEqual([]);
      doubled += steps.doubled;
      lostSeen += steps.lost;
      const last = c.values.at(-1) ?? 0;
      if (c.errors.length > 0 || c.ended || c.closed) {
        failedBusy++;
        // Reset: the replica may hold one INCR more (ran, reply lost) or fewer (acknowledged, lost).
        if (onReplica > last) ranSeen += onReplica - last;
        else lostSeen += last - onReplica;
      } else if (onReplica !== last) {
        const continued = log().find((e) => e.msg === 'continued connection' && String(e.client).endsWith(`:${c.port}`));
        console.log(`continue-match ${name}: ${c.key} (port ${c.port}): sent ${c.sent}, replies ${c.values.length}, last ${last}, on the replica ${onReplica}; b continued it: ${JSON.stringify(continued)}`);
        mismatched.push(c.key);
      }
    }
    if (lostSeen !== check.lostAcknowledged || ranSeen !== check.ranUnanswered - check.ranAnswered || doubled > 0) {
      console.log(`continue-match ${name}: first resets ${JSON.stringify(taken.continued.firstReset)}; busy ${JSON.stringify(after.map((c) => ({ key: c.key, port: c.port, sent: c.sent, replies: c.values.length, last: c.values.at(-1), errors: c.errors })))}`);
    }
    console.log(`continue-match ${name}: busy ${BUSY}: ${failedBusy} reset; INCR doubled ${doubled}, acknowledged-then-lost ${lostSeen} (the check found ${check.lostAcknowledged} lost and ran ${check.reapplied} again), ran-unanswered ${ranSeen} on reset connections (check found ${check.ranUnanswered}, answered ${check.ranAnswered} from the replica)`);
    expect(doubled).toBe(0);
    expect(mismatched, 'continued clients whose last reply is not the replica\'s value').toEqual([]);
    // A connection reset for a mirror's loss (a hole) was never judged: its INCRs are not the check's to count.
    const otherResets = Object.entries(taken.continued.resetBy as Record<string, number>).filter(([why]) => !/unanswered|replication stream/.test(why));
    // Every lost one the check found was run again (none too large to keep, none refused).
    expect(check).toMatchObject({ reapplied: check.lostAcknowledged, reapplyFailed: 0, notKept: 0 });
    // Those the check answered from the replica went on (their last reply is the replica's value,
    // checked above); the others it found ran were reset, and show it. A connection reset for a
    // mirror's loss, or one the check could not decide, may have run its unanswered INCR too,
    // uncounted (a loaded host: 6 of 8 "holds more than the capture saw sent" in one run).
    const ranFound = check.ranUnanswered - check.ranAnswered;
    if (otherResets.length === 0 && undecided === 0) expect(ranSeen).toBe(ranFound);
    else {
      console.log(`continue-match ${name}: resets the check did not count: ${JSON.stringify([...otherResets, ...undecidedBy])}`);
      expect(ranSeen).toBeGreaterThanOrEqual(ranFound);
    }
    // Only refused connections (the check's, or a mirror loss's) failed.
    expect(failedBusy + poked.failed).toBeLessThanOrEqual(taken.continued.reset);
    expect(poked).toMatchObject({ idle: IDLE, wrong: 0 });
    expect((await replica.replication()).role).toBe('master');
    return check;
  } finally {
    await stop();
  }
}

it('the backup\'s agent replays only the writes the dead primary never ran, read from the replication stream', async () => {
  await matchScenario('(death mid-load)', THINK_MS, true);
}, 60_000);

// The mirror times the probes; the default margin (0.5 ms: a mirror that may stamp frames that
// much out of the order they passed it) leaves no probe clean between INCRs ~0.2 ms apart. This
// lab's capture stamps each copy when the switch's tc mirred hands it over (net.core.
// netdev_tstamp_prequeue, on by default: before any per-CPU backlog), so frames of different
// connections keep their order to a few µs: marginMs 0.1, as an operator whose capture stamps
// at the mirror (or in the NIC) would set it (docs/CONTINUE.md, matchWrites).
it('writers with no gap between a reply and their next INCR: each is decided from the stream or reset, none applied twice or lost; the mirror times the probes (marginMs 0.1)', async () => {
  await matchScenario('(back to back)', 0, false, { marginMs: 0.1 });
}, 60_000);
