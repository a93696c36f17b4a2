// The backup's verdict on losing its primary (seed 004 steps 415-425), every input, and the
// takeover guard (never two primaries without fencing).
import { describe, expect, it } from 'vitest';
import { decideMirrorFailure, needsThirdPath, takeoverGuard, type MirrorFailureInputs, type MirrorVerdict, type ThirdPathAnswer } from '../../src/log/mirror-failure.js';
import { MirrorError } from '../../src/log/mirror-errors.js';

const bools = [false, true] as const;
const answers: ThirdPathAnswer[] = ['alive', 'silent', 'none'];

/** The table of docs/MIRRORED-LOG.md, written out again independently of the module. */
function expected(i: Omit<Required<MirrorFailureInputs>, 'stale'>): MirrorVerdict {
  const anyHeartbeat = i.main || i.failsafe;
  if (!i.heard && !anyHeartbeat && !i.mirror && i.thirdPath !== 'alive') return 'not-heard-yet';
  if (i.mirror && i.main && i.failsafe) return 'normal';
  if (i.mirror) return 'one-link-lost';
  if (anyHeartbeat || i.thirdPath === 'alive') return 'link-failure';
  return 'primary-failure';
}

describe('decideMirrorFailure', () => {
  it('every combination of the inputs (96) gives the table verdict; a stale backup never takes over', () => {
    let n = 0;
    for (const heard of bools) for (const main of bools) for (const failsafe of bools) for (const mirror of bools) for (const thirdPath of answers) for (const stale of bools) {
      const i = { heard, main, failsafe, mirror, thirdPath, stale };
      const d = decideMirrorFailure(i);
      expect(d.verdict, JSON.stringify(i)).toBe(expected(i));
      expect(d.takeOver).toBe(d.verdict === 'primary-failure' && !stale);
      // reached and lost partition the three watched paths (plus the third path when it answered)
      expect([...d.reachedBy, ...d.lost].filter((p) => p !== 'third-path').sort()).toEqual(['failsafe', 'main', 'mirror']);
      expect(d.reachedBy.includes('third-path')).toBe(thirdPath === 'alive');
      expect(d.lost.includes('third-path')).toBe(thirdPath === 'silent');
      expect(d.why.length).toBeGreaterThan(0);
      n++;
    }
    expect(n).toBe(96);
  });

  it('the seed cases by name', () => {
    expect(decideMirrorFailure({ heard: true, main: true, failsafe: true, mirror: true })).toMatchObject({ verdict: 'normal', lost: [] });
    expect(decideMirrorFailure({ heard: true, main: false, failsafe: true, mirror: true })).toMatchObject({ verdict: 'one-link-lost', lost: ['main'], seed: '[0039]' });
    expect(decideMirrorFailure({ heard: true, main: true, failsafe: true, mirror: false })).toMatchObject({ verdict: 'link-failure', lost: ['mirror'], seed: '420' });
    expect(decideMirrorFailure({ heard: true, main: false, failsafe: false, mirror: false, thirdPath: 'alive' })).toMatchObject({ verdict: 'link-failure', reachedBy: ['third-path'] });
    expect(decideMirrorFailure({ heard: true, main: false, failsafe: false, mirror: false })).toMatchObject({ verdict: 'primary-failure', takeOver: true, seed: '420, 425' });
    expect(decideMirrorFailure({ heard: false, main: false, failsafe: false, mirror: false })).toMatchObject({ verdict: 'not-heard-yet', takeOver: false });
    const stale = decideMirrorFailure({ heard: true, main: false, failsafe: false, mirror: false, stale: true });
    expect(stale).toMatchObject({ verdict: 'primary-failure', takeOver: false });
    expect(stale.why).toMatch(/operator/);
  });

  it('the third path is asked only when every watched path of a heard primary is silent', () => {
    for (const heard of bools) for (const main of bools) for (const failsafe of bools) for (const mirror of bools) {
      expect(needsThirdPath({ heard, main, failsafe, mirror })).toBe(heard && !main && !failsafe && !mirror);
    }
  });
});

describe('takeoverGuard', () => {
  it('refuses without a hook or the unsafe flag, with EMIRRORUNFENCED and a message that says what to pass', () => {
    for (const s of [{}, { unsafeWithoutFencing: false }]) {
      let err: unknown;
      try {
        takeoverGuard(s);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MirrorError);
      expect((err as MirrorError).code).toBe('EMIRRORUNFENCED');
      expect((err as Error).message).toMatch(/beforeTakeover/);
      expect((err as Error).message).toMatch(/unsafeWithoutFencing: true/);
    }
  });
  it('allows a hook, or the unsafe flag', () => {
    expect(() => takeoverGuard({ beforeTakeover: async () => {} })).not.toThrow();
    expect(() => takeoverGuard({ unsafeWithoutFencing: true })).not.toThrow();
  });
});
