// `npm run demo` as the README gives it: the CLI as a process, on a learning bridge, with real
// agents; the backup releases both clients from its replicated copy of the server's connections.
// It says what it does while it sets up, and its last line's time is the time it took.
import { describe, expect, it } from 'vitest';
import { runCli } from '../cli-process.js';

// The demo's whole run, from the process's start to its exit: most of it is six Node processes
// starting (the CLI, server, two agents, two clients) and the lab being built and removed; the
// failure itself takes ~0.35 s. Measured on this 2-vCPU host while other suites shared it (load
// ~10): 4.5 s from dist/ (`npm run demo`), 7.9-9.3 s from the sources through tsx, as here, where
// every process compiles them. The bound leaves 30% over the slowest of those, and more on a host
// running this suite alone.
const DEMO_BOUND_MS = 12_000;
// Between the demo's last line ('done', stamped with the time since its start) and its exit.
const EXIT_MARGIN_MS = 500;

const STEPS = [
  /^building the lab: namespaces client, server and backup/,
  /^lab \S+: client [\d.]+, server [\d.]+ serving [\d.]+:7000, backup [\d.]+$/,
  /^starting the server on [\d.]+:7000, the agents on server and backup, and two clients$/,
  /^agents up: the backup hears the server on both links/,
  /^two clients connect to [\d.]+:7000/,
  /^the backup's copy lists both connections$/,
  /^removing the lab$/,
  /^done$/,
];

/** The demo's progress lines: [seconds since its start] what it does. */
function progress(text: string): Array<{ ms: number; what: string }> {
  return [...text.matchAll(/^\[(\d+\.\d\d) s\] (.*)$/gm)].map((m) => ({ ms: Number(m[1]) * 1000, what: m[2]! }));
}

async function timedDemo(args: string[]) {
  const t0 = performance.now();
  const r = await runCli(['demo', ...args]);
  return { ...r, ms: performance.now() - t0 };
}

function expectProgress(text: string, wallMs: number): void {
  const steps = progress(text);
  expect(steps.map((s) => s.what)).toEqual(STEPS.map((re) => expect.stringMatching(re)));
  for (let i = 1; i < steps.length; i++) expect(steps[i]!.ms).toBeGreaterThanOrEqual(steps[i - 1]!.ms);
  expect(wallMs - steps.at(-1)!.ms).toBeLessThan(EXIT_MARGIN_MS);
  expect(wallMs).toBeLessThan(DEMO_BOUND_MS);
}

describe('takeover demo', () => {
  it('says what it does as it sets up, each step stamped; it takes the time its lines show, within the bound', async () => {
    const r = await timedDemo([]);
    expect(r.code, r.stderr).toBe(0);
    expectProgress(r.stdout, r.ms);
    expect(r.stdout).toMatch(/^t=0 +server node dies silently/m);
    expect(r.stderr).toBe('');
  }, 60_000);

  it.each([
    ['rst', 'ECONNRESET', 'reset'],
    ['fin', undefined, 'closed'],
  ])('--method %s: both clients released from the backup\'s copy, exit 0', async (method, code, outcome) => {
    const r = await timedDemo(['--method', method, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expectProgress(r.stderr, r.ms); // stdout is the JSON document alone
    const out = JSON.parse(r.stdout);
    expect(out.replicated).toBe(2);
    expect(out.results).toHaveLength(2);
    for (const res of out.results) expect(res).toMatchObject({ seqSource: 'tracked', outcome, ok: true });
    for (const c of out.clients) expect(c).toMatchObject(code ? { event: 'error', code } : { event: 'end' });
    // Released within the detection bound (3 intervals of 100 ms and the 25 ms skew after the
    // last heartbeat) + 50 ms.
    for (const c of out.clients) expect(c.atMs).toBeLessThan(325 + 50 + 100);
  }, 60_000);

  it('--cluster: a whole failover and failback of a service on the embedded store, exit 0', async () => {
    const r = await timedDemo(['--cluster', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { crashedAt: number; detectedAt: number; claimedAt: number; clientReleasedAt: number; history: Array<{ to: { host: string; state: string }; why: string }> };
    expect(r.stderr).toMatch(/a client asks .*: served by .* \(server\)\n[\s\S]*served by .* \(backup\)\n[\s\S]*served by .* \(server\)\n/);
    expect(out.history.map((h) => `${h.to.host} ${h.to.state}`)).toEqual(['server loading', 'server up', 'backup loading', 'backup up', 'backup released', 'server loading', 'server up']);
    expect(out.history[2]!.why).toBe('server failed');
    // The backup becomes HOST once the dead server's lease (1 s) ran out, and releases the
    // blocked client then: within the lease, the detection and a second of margin.
    expect(out.claimedAt - out.crashedAt).toBeLessThan(1000 + 325 + 1000);
    expect(out.clientReleasedAt - out.crashedAt).toBeLessThan(1000 + 325 + 1000);
    // Two agents started twice, a crash, a lease, a failback: what the lines show, and then some.
    expect(r.ms).toBeLessThan(25_000);
  }, 60_000);
});
