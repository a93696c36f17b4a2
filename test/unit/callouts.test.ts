// Callouts and the uptime log: every executable runs per event with the event in its arguments
// and environment, in parallel up to the limit, killed past its timeout, never holding the
// caller; the uptime log adds downtime up apart for planned and unplanned.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CalloutRunner, type CalloutResult } from '../../src/agent/callouts.js';
import { niceOf } from '../../src/monitor/cpu-priority.js';
import { readUptimeLog, summarizeUptime, UptimeLog } from '../../src/agent/uptime-log.js';
import type { ServiceEvent } from '../../src/events/service-event.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-callouts-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const event = (status: ServiceEvent['status'], reason: string, timestamp: string, incarnation = 1): ServiceEvent => ({
  type: 'service_member', status, reason, timestamp, incarnation, service: 'sales', database: 'db', instance: 'i1', node: 'a', cardinality: 1,
});

/** Gone, or a zombie waiting for its reaper: SIGKILL has done its work. */
function dead(pid: number): boolean {
  const stat = `/proc/${pid}/stat`;
  if (!existsSync(stat)) return true;
  const state = readFileSync(stat, 'utf8').replace(/^.*\) /s, '')[0];
  return state === 'Z' || state === 'X';
}

/** Whether the process is dead within `ms` (SIGKILL is sent at once but taken when the process next runs). */
async function diesWithin(pid: number, ms: number): Promise<boolean> {
  const until = performance.now() + ms;
  while (!dead(pid)) {
    if (performance.now() > until) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

/** The pids a callout wrote to `file` (one a line), each killed here if it still runs (so a failing test leaves nothing). */
const written: string[] = [];
function pidsIn(file: string): number[] {
  written.push(file);
  return readFileSync(file, 'utf8').trim().split('\n').map(Number);
}
afterEach(() => {
  for (const f of written.splice(0)) {
    if (!existsSync(f)) continue;
    for (const pid of readFileSync(f, 'utf8').trim().split('\n').map(Number)) if (pid > 1 && !dead(pid)) process.kill(pid, 'SIGKILL');
  }
});

function script(name: string, body: string): string {
  const file = path.join(dir, 'callouts', name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

describe('callouts', () => {
  beforeEach(() => {
    rmSync(path.join(dir, 'callouts'), { recursive: true, force: true });
    mkdirSync(path.join(dir, 'callouts'));
  });

  it('each executable gets the FAN line as args and the fields in env; non-executables are skipped', async () => {
    const out = path.join(dir, 'out');
    script('10-args', `echo "$@" >> ${out}.args`);
    script('20-env', `echo "$TAKEOVER_TYPE $TAKEOVER_STATUS $TAKEOVER_SERVICE $TAKEOVER_CARDINALITY" >> ${out}.env; echo "$TAKEOVER_EVENT" >> ${out}.json`);
    writeFileSync(path.join(dir, 'callouts', 'README'), 'not a callout');
    const r = new CalloutRunner({ dir: path.join(dir, 'callouts'), timeoutMs: 5000, maxParallel: 4 });
    const results: CalloutResult[] = [];
    r.on('result', (x) => results.push(x));
    const e = event('DOWN', 'failure', '2026-11-22T10:00:00.000Z');
    await r.run(e);
    await r.idle();
    // The two run in parallel, so their results arrive in the order they finish.
    expect(results.map((x) => [path.basename(x.file), x.code, x.timedOut]).sort()).toEqual([['10-args', 0, false], ['20-env', 0, false]]);
    expect(readFileSync(`${out}.args`, 'utf8').trim()).toBe('SERVICEMEMBER VERSION=1.0 service=sales database=db instance=i1 host=a status=down reason=failure card=1 incarn=1 timestamp=2026-11-22T10:00:00.000Z');
    expect(readFileSync(`${out}.env`, 'utf8').trim()).toBe('service_member DOWN sales 1');
    expect(JSON.parse(readFileSync(`${out}.json`, 'utf8'))).toEqual(e);
  });

  it('callouts start at childNice (the nice the agent was started with), not the agent\'s', async () => {
    const out = path.join(dir, 'nice');
    script('10-nice', `cut -d" " -f19 /proc/$$/stat > ${out}`);
    const own = niceOf();
    const r = new CalloutRunner({ dir: path.join(dir, 'callouts'), timeoutMs: 5000, maxParallel: 4, childNice: own + 3 });
    await r.run(event('DOWN', 'failure', '2026-11-22T10:00:00.000Z'));
    await r.idle();
    expect(readFileSync(out, 'utf8').trim()).toBe(String(own + 3));
    expect(niceOf()).toBe(own);
  });

  it('a hung callout is killed at its timeout with its children; others run in parallel; run() never waits for them', async () => {
    const pids = path.join(dir, 'hang.pids');
    script('hang', `sleep 31.7 & echo $! > ${pids}; echo $$ >> ${pids}; sleep 31.7`);
    script('fast', 'exit 3');
    const r = new CalloutRunner({ dir: path.join(dir, 'callouts'), timeoutMs: 300, maxParallel: 2 });
    const results: CalloutResult[] = [];
    r.on('result', (x) => results.push(x));
    const t0 = performance.now();
    await r.run(event('DOWN', 'failure', '2026-11-22T10:00:00.000Z'));
    expect(performance.now() - t0).toBeLessThan(100); // queued, not run
    await r.idle();
    const byName = Object.fromEntries(results.map((x) => [path.basename(x.file), x]));
    expect(byName.fast).toMatchObject({ code: 3, timedOut: false });
    expect(byName.hang).toMatchObject({ timedOut: true, signal: 'SIGKILL' });
    expect(byName.hang!.elapsedMs).toBeGreaterThanOrEqual(290);
    // Killed at its 300 ms timeout: + 100 ms for the timer, the kill and the exit's reaping on
    // a loaded 2-core machine (a callout the timeout missed would run for 31.7 s).
    expect(byName.hang!.elapsedMs).toBeLessThan(300 + 100);
    const [child, callout] = pidsIn(pids);
    expect(dead(callout!)).toBe(true);
    expect(await diesWithin(child!, 1000)).toBe(true); // the background child died too
  });

  it('a callout that exits leaving a background child: the child is killed at the timeout, and the run lasts until then', async () => {
    const pids = path.join(dir, 'orphan.pids');
    script('orphan', `sleep 30 & echo $! > ${pids}; exit 0`);
    const r = new CalloutRunner({ dir: path.join(dir, 'callouts'), timeoutMs: 300, maxParallel: 1 });
    const results: CalloutResult[] = [];
    r.on('result', (x) => results.push(x));
    await r.run(event('DOWN', 'failure', '2026-11-22T10:00:00.000Z'));
    await r.idle(); // what the agent's stop waits for
    const [child] = pidsIn(pids);
    expect(await diesWithin(child!, 1000)).toBe(true);
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ code: 0, signal: null, timedOut: true, orphansKilled: true });
    expect(results[0]!.elapsedMs).toBeGreaterThanOrEqual(290);
    // Ended at its 300 ms timeout (+ 100 ms for the timer, the group's kill and the reaping on a
    // loaded 2-core machine, as above): not by the child's own end at 30 s.
    expect(results[0]!.elapsedMs).toBeLessThan(300 + 100);
  });

  it('a background child that ends before the timeout ends the run then, not at the timeout', async () => {
    const pids = path.join(dir, 'short.pids');
    script('short', `sleep 0.2 & echo $! > ${pids}; exit 0`);
    const r = new CalloutRunner({ dir: path.join(dir, 'callouts'), timeoutMs: 5000, maxParallel: 1 });
    const results: CalloutResult[] = [];
    r.on('result', (x) => results.push(x));
    await r.run(event('DOWN', 'failure', '2026-11-22T10:00:00.000Z'));
    await r.idle();
    expect(dead(pidsIn(pids)[0]!)).toBe(true);
    expect(results[0]).toMatchObject({ code: 0, timedOut: false, orphansKilled: false });
    expect(results[0]!.elapsedMs).toBeGreaterThanOrEqual(190); // the child's life is part of the run
    expect(results[0]!.elapsedMs).toBeLessThan(5000); // ended with the child, not by the timeout
  });

  it('past maxParallel runs wait; past maxQueued the oldest are dropped and counted', async () => {
    script('slow', 'sleep 0.2');
    const r = new CalloutRunner({ dir: path.join(dir, 'callouts'), timeoutMs: 5000, maxParallel: 1, maxQueued: 2 });
    const results: CalloutResult[] = [];
    r.on('result', (x) => results.push(x));
    for (let i = 1; i <= 5; i++) await r.run(event('DOWN', 'failure', '2026-11-22T10:00:00.000Z', i));
    await r.idle();
    // The first started at once; of the four queued behind it, the two oldest were dropped.
    expect(results.map((x) => x.event.incarnation)).toEqual([1, 4, 5]);
    expect(r.dropped).toBe(2);
  });

  it('a missing directory is reported as a result, not thrown', async () => {
    const r = new CalloutRunner({ dir: path.join(dir, 'nope'), timeoutMs: 100, maxParallel: 1 });
    const results: CalloutResult[] = [];
    r.on('result', (x) => results.push(x));
    await r.run(event('UP', 'boot', '2026-11-22T10:00:00.000Z'));
    expect(results[0]!.error).toMatch(/ENOENT/);
  });
});

describe('uptime log', () => {
  it('appends JSON lines in order and sums planned and unplanned downtime apart', async () => {
    const file = path.join(dir, 'uptime.jsonl');
    const log = new UptimeLog(file);
    const evs = [
      event('UP', 'boot', '2026-11-22T10:00:00.000Z', 1),
      event('DOWN', 'failure', '2026-11-22T10:01:00.000Z', 2),
      event('UP', 'boot', '2026-11-22T10:01:30.000Z', 3),
      event('GOING_DOWN', 'user', '2026-11-22T10:02:00.000Z', 4),
      event('DOWN', 'user', '2026-11-22T10:02:01.000Z', 5),
      event('COMING_UP', 'user', '2026-11-22T10:05:00.000Z', 6),
      event('UP', 'user', '2026-11-22T10:05:00.000Z', 7),
      event('DOWN', 'hang', '2026-11-22T10:06:00.000Z', 8),
    ];
    for (const e of evs) void log.append(e);
    await log.append(event('UP', 'boot', '2026-11-22T10:06:10.000Z', 9));
    const records = await readUptimeLog(file);
    expect(records.map((r) => [r.status, r.planned])).toEqual([
      ['UP', false], ['DOWN', false], ['UP', false], ['GOING_DOWN', true], ['DOWN', true], ['COMING_UP', true], ['UP', true], ['DOWN', false], ['UP', false],
    ]);
    const sum = summarizeUptime(records).get('service_member:sales/i1@a')!;
    expect(sum).toEqual({ plannedMs: 180_000, unplannedMs: 40_000, down: false });
    expect(log.failures).toBe(0);
  });

  it('a write failure is counted, never thrown into the agent; a corrupt line is named', async () => {
    const log = new UptimeLog(path.join(dir, 'no', 'such', 'dir.jsonl'));
    await log.append(event('UP', 'boot', '2026-11-22T10:00:00.000Z'));
    expect(log.failures).toBe(1);
    writeFileSync(path.join(dir, 'bad.jsonl'), '{"status":"UP"}\nnot json\n');
    await expect(readUptimeLog(path.join(dir, 'bad.jsonl'))).rejects.toThrow(/line 2 is not JSON/);
  });
});
