// The guest jobs' proof of which checkout they ran (test/vm/checkout.ts), without a guest: the
// shell line the job wrapper runs, against what the host expects of this checkout.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkoutMismatch, checkoutOf, REPORT_CHECKOUT } from '../vm/checkout.js';
import { REPO_ROOT } from '../vm/run-guest.js';

const work = mkdtempSync(path.join(tmpdir(), 'tko-vm-checkout-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const reportIn = (dir: string) => execFileSync('sh', ['-c', REPORT_CHECKOUT], { cwd: dir, encoding: 'utf8' }).trim().replace(/^TKO-CHECKOUT /, '');

describe('which checkout a guest job ran', () => {
  const expected = checkoutOf(REPO_ROOT);

  it('the job wrapper reports this checkout and its commit, as the host computes them', () => {
    expect(expected).toMatch(/ [0-9a-f]{40}$/);
    expect(reportIn(REPO_ROOT)).toBe(expected);
    expect(checkoutMismatch(reportIn(REPO_ROOT), expected)).toBeUndefined();
  });

  it('the same checkout reached through a symlink is the same', () => {
    const link = path.join(work, 'link');
    symlinkSync(REPO_ROOT, link);
    expect(reportIn(link)).toBe(expected);
  });

  it('an empty directory at the path (the checkout hidden by the guest\'s own /tmp) or another directory is a mismatch', () => {
    const empty = path.join(work, 'empty');
    mkdirSync(empty);
    expect(reportIn(empty)).toBe(`${empty} none`);
    expect(checkoutMismatch(reportIn(empty), expected)).toBe(`the guest job ran checkout "${empty} none", not this one, "${expected}"`);
    expect(checkoutMismatch(undefined, expected)).toBe(`the guest job did not report its checkout (expected ${expected})`);
  });
});
