// The cluster manager's decisions (seed 002 FIG. 6, 7A, 7B), pure: for one application object
// and what one node knows, the next step.
import { describe, expect, it } from 'vitest';
import { type AppObjectInput, validateApp } from '../../src/cluster/app-object.js';
import { type LocalState, nextStep, readiness, registration } from '../../src/cluster/app-decisions.js';

const app = (over: Partial<AppObjectInput> = {}) => validateApp({ tag: 'db', type: 'cluster-capable', command: { load: ['/bin/true'] }, host: 'a', primary: 'a', backups: ['b', 'c'], state: 'up', since: 1, ...over });
const view = (me: string, alive: string[], local: LocalState = 'stopped', leased: string[] = [], heard = alive) => ({ me, alive: new Set(alive), heard: new Set(heard), leased: new Set(leased), local });

describe('registration on load (seed 002 FIG. 6)', () => {
  it('each branch: not registered, unloaded by an operator, phoenixing primary, both failed, a backup', () => {
    expect(registration(undefined, 'a')).toEqual({ kind: 'create' });
    expect(registration(app({ host: null, state: 'unloaded' }), 'a')).toEqual({ kind: 'become-host' });
    expect(registration(app({ host: 'b' }), 'a')).toEqual({ kind: 'phoenix', host: 'b' });
    expect(registration(app({ host: 'a' }), 'a')).toEqual({ kind: 'resume' });
    expect(registration(app({ host: 'a' }), 'b')).toEqual({ kind: 'standby', host: 'a' });
  });
});

describe('failover (FIG. 7A)', () => {
  it('the first live server after the dead HOST claims it; the others wait; nobody while the HOST is alive', () => {
    expect(nextStep(app(), view('b', ['b', 'c']))).toEqual({ kind: 'claim', why: 'a failed', failover: true });
    expect(nextStep(app(), view('c', ['b', 'c']))).toMatchObject({ kind: 'wait', why: 'a is dead: b comes first' });
    expect(nextStep(app(), view('c', ['c']))).toEqual({ kind: 'claim', why: 'a failed', failover: true });
    expect(nextStep(app(), view('b', ['a', 'b']))).toMatchObject({ kind: 'none' });
    // A backup HOST that dies goes back to the live PRIMARY first.
    expect(nextStep(app({ host: 'b' }), view('a', ['a', 'c']))).toEqual({ kind: 'claim', why: 'b failed', failover: true });
  });

  it('a HOST silent on the LAN whose lease in the store is live is not failed over', () => {
    expect(nextStep(app(), view('b', ['b'], 'stopped', ['a', 'b']))).toMatchObject({ kind: 'wait', why: expect.stringContaining('lease in the store is live') });
  });

  it('the HOST starts it, marks it up once it runs, and hands it on when it cannot keep it running', () => {
    expect(nextStep(app({ host: 'b', state: 'loading' }), view('b', ['b']))).toEqual({ kind: 'start' });
    expect(nextStep(app({ host: 'b', state: 'loading' }), view('b', ['b'], 'starting'))).toMatchObject({ kind: 'none' });
    expect(nextStep(app({ host: 'b', state: 'loading' }), view('b', ['b'], 'running'))).toEqual({ kind: 'mark-up' });
    expect(nextStep(app({ host: 'b', state: 'loading' }), view('b', ['b', 'c'], 'not-restarting'))).toMatchObject({ kind: 'hand-on', to: 'c' });
    expect(nextStep(app({ host: 'b', state: 'loading' }), view('b', ['b'], 'not-restarting'))).toMatchObject({ kind: 'hand-on', to: null });
    // Not back to a server that failed it already (no ping-pong), nor to a node not heard yet (its agent may not run).
    expect(nextStep(app({ host: 'b', state: 'loading', failedOn: ['a'] }), view('b', ['a', 'b', 'c'], 'not-restarting'))).toMatchObject({ kind: 'hand-on', to: 'c' });
    expect(nextStep(app({ host: 'c', state: 'loading', failedOn: ['a', 'b'] }), view('c', ['a', 'b', 'c'], 'not-restarting'))).toMatchObject({ kind: 'hand-on', to: null });
    expect(nextStep(app({ host: 'a', state: 'loading' }), view('a', ['a', 'b', 'c'], 'not-restarting', [], ['a', 'c']))).toMatchObject({ kind: 'hand-on', to: 'c' });
  });

  it('a node that runs it but is not HOST stops it (a HOST moved while it was cut off)', () => {
    expect(nextStep(app({ host: 'b' }), view('a', ['a', 'b'], 'running'))).toEqual({ kind: 'stop', why: 'b is HOST' });
    expect(nextStep(app({ host: null, state: 'unloaded' }), view('a', ['a'], 'running'))).toMatchObject({ kind: 'stop' });
  });
});

describe('failback (FIG. 7B) and operator requests', () => {
  it('AUTO-RECOVER on: the backup HOST releases to the live primary, which claims it; not after an operator put it there', () => {
    expect(nextStep(app({ host: 'b', failedOver: true }), view('b', ['a', 'b'], 'running'))).toMatchObject({ kind: 'release', to: 'a' });
    expect(nextStep(app({ host: 'b', failedOver: false }), view('b', ['a', 'b'], 'running'))).toMatchObject({ kind: 'none' });
    expect(nextStep(app({ host: 'b', state: 'released', releasedTo: 'a' }), view('a', ['a', 'b']))).toEqual({ kind: 'claim', why: 'released by b', failover: false });
    expect(nextStep(app({ host: 'b', state: 'released', releasedTo: 'a' }), view('b', ['a', 'b']))).toMatchObject({ kind: 'wait' });
    // Released to a node that died meanwhile: taken back.
    expect(nextStep(app({ host: 'b', state: 'released', releasedTo: 'a' }), view('b', ['b']))).toMatchObject({ kind: 'claim' });
  });

  it('AUTO-RECOVER off: the backup keeps it until an operator asks, then releases', () => {
    expect(nextStep(app({ host: 'b', autoRecover: false, failedOver: true }), view('b', ['a', 'b'], 'running'))).toMatchObject({ kind: 'wait', why: expect.stringContaining('takeover app failback db') });
    expect(nextStep(app({ host: 'b', autoRecover: false, request: { kind: 'move', to: 'a', by: 'op', at: 1 } }), view('b', ['a', 'b'], 'running'))).toMatchObject({ kind: 'release', to: 'a' });
  });

  it('unload: the HOST stops it and nobody starts it again', () => {
    expect(nextStep(app({ request: { kind: 'unload', by: 'op', at: 1 } }), view('a', ['a', 'b'], 'running'))).toMatchObject({ kind: 'unload' });
    expect(nextStep(app({ host: null, state: 'unloaded' }), view('b', ['b']))).toMatchObject({ kind: 'none' });
  });
});

describe('readiness (the object\'s `ready`)', () => {
  const probe = 'tcp 192.0.2.10:5432';
  const ready = { tcp: 5432, timeoutMs: 3000, intervalMs: 100 };
  const unready = (runningMs: number, lastError?: string) => ({ runningMs, probe, ...(lastError ? { lastError } : {}) });
  const loadingOnB = (over: Partial<AppObjectInput> = {}) => app({ host: 'b', state: 'loading', ready, ...over });

  it('a process that runs without passing its probe stays loading until timeoutMs, then is a failed start', () => {
    const v = (u: ReturnType<typeof unready>) => ({ ...view('b', ['b'], 'starting'), unready: u });
    expect(nextStep(loadingOnB(), v(unready(0)))).toEqual({ kind: 'wait', why: `not ready yet, 0 of 3000 ms after its start (${probe})` });
    expect(nextStep(loadingOnB(), v(unready(2999.6, 'connect ECONNREFUSED 192.0.2.10:5432')))).toEqual({ kind: 'wait', why: `not ready yet, 2999 of 3000 ms after its start (${probe}: connect ECONNREFUSED 192.0.2.10:5432)` });
    expect(nextStep(loadingOnB(), v(unready(3000, 'connect ECONNREFUSED 192.0.2.10:5432')))).toEqual({ kind: 'fail-start', why: `not ready 3000 ms after its start (${probe}: connect ECONNREFUSED 192.0.2.10:5432)` });
    // A restart of a process that was up (the store still says up) is held to the same bound.
    expect(nextStep(loadingOnB({ state: 'up' }), v(unready(4000)))).toMatchObject({ kind: 'fail-start' });
  });

  it('once the probe passed (local running) it is marked up; without `ready` a running process is up at once, as before', () => {
    expect(nextStep(loadingOnB(), view('b', ['b'], 'running'))).toEqual({ kind: 'mark-up' });
    expect(nextStep(app({ host: 'b', state: 'loading' }), { ...view('b', ['b'], 'running'), unready: unready(10_000) })).toEqual({ kind: 'mark-up' });
    // Between two processes (the restart policy's backoff) there is nothing to probe.
    expect(nextStep(loadingOnB(), view('b', ['b'], 'starting'))).toEqual({ kind: 'none', why: 'loading' });
  });

  it('what comes before readiness still does: an unload, a move, NOT_RESTARTING (saying why the last start failed)', () => {
    const v = (local: LocalState) => ({ ...view('b', ['a', 'b', 'c'], local), unready: unready(10_000), lastUnready: `not ready 3000 ms after its start (${probe})` });
    expect(nextStep(loadingOnB({ request: { kind: 'unload', by: 'op', at: 1 } }), v('starting'))).toMatchObject({ kind: 'unload' });
    expect(nextStep(loadingOnB({ request: { kind: 'move', to: 'c', by: 'op', at: 1 } }), v('starting'))).toMatchObject({ kind: 'release', to: 'c' });
    expect(nextStep(loadingOnB(), v('not-restarting'))).toEqual({ kind: 'hand-on', to: 'a', why: `it could not be kept running on b (not ready 3000 ms after its start (${probe}))` });
  });

  it('readiness() alone: the bound is the spec\'s timeoutMs', () => {
    expect(readiness({ ...ready, timeoutMs: 100 }, unready(99))).toMatchObject({ kind: 'wait' });
    expect(readiness({ ...ready, timeoutMs: 100 }, unready(100))).toMatchObject({ kind: 'fail-start' });
  });
});
