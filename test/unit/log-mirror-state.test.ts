// The primary's mirror states (src/log/mirror-state.ts), exhaustively: every state with every
// kind of event, the writer's policy and the flush on leaving normal, and random walks that keep
// the invariants.
import { describe, expect, it } from 'vitest';
import { INITIAL_MIRROR_STATE, ackRuleOf, nextMirrorState, syncPolicyOf, type LinkLossReason, type MirrorEvent, type MirrorState } from '../../src/log/mirror-state.js';
import { seededRandom } from './mirror-helpers.js';

const STATES: MirrorState[] = ['normal', 'catching-up', 'primary-only', 'backup-only'];
const LOSSES: LinkLossReason[] = ['closed', 'ack-timeout', 'auth', 'protocol', 'refused', 'closing'];
const EVENTS: MirrorEvent[] = [
  { type: 'backup-attached', fromLsn: 5 },
  { type: 'backup-ack', heldLsn: 10, ackedLsn: 10 }, // covers every acknowledged commit
  { type: 'backup-ack', heldLsn: 11, ackedLsn: 10 },
  { type: 'backup-ack', heldLsn: 9, ackedLsn: 10 }, // behind
  ...LOSSES.map((reason) => ({ type: 'link-lost', reason }) as MirrorEvent),
];

/** The table the module must implement: [state, event] -> [next state, ignored]. */
// backup-only (a backup that took over) is alone as primary-only is: its returning old primary
// attaches as its backup and catches up (seed 004 steps 460-465).
function expected(state: MirrorState, e: MirrorEvent): [MirrorState, boolean] {
  const alone = state === 'primary-only' || state === 'backup-only';
  switch (e.type) {
    case 'backup-attached':
      return alone ? ['catching-up', false] : [state, true];
    case 'backup-ack':
      if (alone) return [state, true];
      if (state === 'catching-up') return [e.heldLsn >= e.ackedLsn ? 'normal' : 'catching-up', false];
      return ['normal', false];
    case 'link-lost':
      return [alone ? state : 'primary-only', false];
  }
}

describe('mirror states', () => {
  it('opens primary-only: no backup yet, every commit flushed before its ack', () => {
    expect(INITIAL_MIRROR_STATE).toBe('primary-only');
    expect(syncPolicyOf('primary-only')).toBe('each-commit');
    expect(ackRuleOf('primary-only')).toBe('locally-durable');
  });

  it('acknowledges on the backup only in normal, and checkpoints only there', () => {
    expect(STATES.map(ackRuleOf)).toEqual(['backup-holds', 'locally-durable', 'locally-durable', 'locally-durable']);
    expect(STATES.map(syncPolicyOf)).toEqual(['checkpoint', 'each-commit', 'each-commit', 'each-commit']);
  });

  for (const state of STATES) {
    for (const e of EVENTS) {
      const label = `${state} + ${e.type}${e.type === 'link-lost' ? ` (${e.reason})` : e.type === 'backup-ack' ? ` held ${e.heldLsn} acked ${e.ackedLsn}` : ''}`;
      it(label, () => {
        const t = nextMirrorState(state, e);
        const [to, ignored] = expected(state, e);
        expect(t.from).toBe(state);
        expect(t.to).toBe(to);
        expect(t.ignored).toBe(ignored);
        expect(t.changed).toBe(to !== state);
        expect(t.sync).toBe(syncPolicyOf(to));
        // Seed 425/427: leaving normal flushes at once; nothing else asks for a flush.
        expect(t.flushNow).toBe(state === 'normal' && to !== 'normal');
        expect(t.why.length).toBeGreaterThan(0);
      });
    }
  }

  it('random walks: normal is only entered from catching-up on an ACK covering every acknowledged commit, only left for primary-only', () => {
    const { int } = seededRandom(42);
    for (let walk = 0; walk < 200; walk++) {
      // Half the walks start where a takeover leaves the new primary.
      let s: MirrorState = walk % 2 ? 'backup-only' : INITIAL_MIRROR_STATE;
      let flushes = 0;
      let leftNormal = 0;
      for (let step = 0; step < 50; step++) {
        const e: MirrorEvent = [
          { type: 'backup-attached', fromLsn: int(10) } as const,
          { type: 'backup-ack', heldLsn: int(20), ackedLsn: int(20) } as const,
          { type: 'link-lost', reason: LOSSES[int(LOSSES.length)]! } as const,
        ][int(3)]!;
        const t = nextMirrorState(s, e);
        if (t.to === 'normal' && s !== 'normal') {
          expect(s).toBe('catching-up');
          expect(e.type === 'backup-ack' && e.heldLsn >= e.ackedLsn).toBe(true);
        }
        if (s === 'normal' && t.to !== 'normal') {
          leftNormal++;
          expect(t.to).toBe('primary-only');
        }
        if (t.flushNow) flushes++;
        // Nothing enters backup-only: only a takeover opens a log in it.
        if (t.to === 'backup-only') expect(s).toBe('backup-only');
        s = t.to;
      }
      expect(flushes).toBe(leftNormal);
    }
  });
});
