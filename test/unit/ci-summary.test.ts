// The closing line of `npm test` (.ci/summary.mjs) against vitest's real JSON reports of each
// kind of failure, recorded from throwaway test files by .ci/record-vitest-reports.mjs.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { isCi, summarize } from '../../.ci/summary.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const recordings = path.join(root, '.ci', 'vitest-reports');
const work = mkdtempSync(path.join(tmpdir(), 'tko-ci-summary-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Recording {
  vitestVersion: string;
  exitStatus: number;
  report: unknown;
}
const recording = (kind: string) => JSON.parse(readFileSync(path.join(recordings, `${kind}.json`), 'utf8')) as Recording;

const summary = (kind: string, ci: boolean) => {
  const r = recording(kind);
  return summarize(r.report, { exitStatus: r.exitStatus, ci });
};

// kind: [closing line outside CI, closing line in CI]
const EXPECTED: Record<string, [string, string]> = {
  'all-pass': ['2 passed, 0 failed, 0 skipped', '2 passed, 0 failed, 0 skipped'],
  'test-fails': ['1 passed, 1 failed, 0 skipped', '1 passed, 1 failed, 0 skipped'],
  // vitest's own totals here: 0 failed tests, 3 skipped.
  'describe-before-all-fails': ['1 passed, 1 failed, 3 skipped', '1 passed, 4 failed, 3 skipped (in CI a skipped test is a failed one)'],
  'file-before-all-fails': ['0 passed, 1 failed, 2 skipped', '0 passed, 3 failed, 2 skipped (in CI a skipped test is a failed one)'],
  // vitest fails both blocks, the inner one's and the outer one around it.
  'nested-before-all-fails': ['1 passed, 2 failed, 2 skipped', '1 passed, 4 failed, 2 skipped (in CI a skipped test is a failed one)'],
  'test-and-before-all-fail': ['1 passed, 2 failed, 1 skipped', '1 passed, 3 failed, 1 skipped (in CI a skipped test is a failed one)'],
  'import-fails': ['1 passed, 1 failed, 0 skipped', '1 passed, 1 failed, 0 skipped'],
  'no-tests': ['1 passed, 1 failed, 0 skipped', '1 passed, 1 failed, 0 skipped'],
  'no-test-files': ['0 passed, 1 failed, 0 skipped', '0 passed, 1 failed, 0 skipped'],
  'after-all-fails': ['2 passed, 1 failed, 0 skipped', '2 passed, 1 failed, 0 skipped'],
  'describe-after-all-fails': ['2 passed, 1 failed, 0 skipped', '2 passed, 1 failed, 0 skipped'],
  'after-each-fails': ['0 passed, 1 failed, 0 skipped', '0 passed, 1 failed, 0 skipped'],
  skipped: ['1 passed, 0 failed, 3 skipped', '1 passed, 3 failed, 3 skipped (in CI a skipped test is a failed one)'],
  'unhandled-error': ['2 passed, 1 failed, 0 skipped', '2 passed, 1 failed, 0 skipped'],
  'global-teardown-fails': ['1 passed, 1 failed, 0 skipped', '1 passed, 1 failed, 0 skipped'],
};

describe('the closing line of npm test', () => {
  it('the recordings are of the installed vitest (re-record with node .ci/record-vitest-reports.mjs after an upgrade)', () => {
    const installed = (createRequire(import.meta.url)(path.join(root, 'node_modules', 'vitest', 'package.json')) as { version: string }).version;
    const minor = (v: string) => v.split('.').slice(0, 2).join('.');
    for (const kind of Object.keys(EXPECTED)) expect(minor(recording(kind).vitestVersion), kind).toBe(minor(installed));
  });

  it.each(Object.entries(EXPECTED))('%s', (kind, [plain, ci]) => {
    const vitestStatus = recording(kind).exitStatus;
    const a = summary(kind, false);
    expect(a.line).toBe(plain);
    const b = summary(kind, true);
    expect(b.line).toBe(ci);
    // Red whenever the line counts a failure, green only when it counts none; vitest's own
    // status is kept when it has one.
    for (const r of [a, b]) expect(r.status).toBe(r.failed > 0 ? vitestStatus || 1 : 0);
  });

  it('says what failed outside the tests, and in CI what was skipped', () => {
    expect(summary('import-fails', false).notes).toEqual(['failed outside its tests: <dir>/b.test.js: the module failed to load']);
    expect(summary('file-before-all-fails', false).notes).toEqual(['failed outside its tests: <dir>/a.test.js: setup of the file failed']);
    expect(summary('describe-before-all-fails', false).notes).toEqual([
      "failed outside their tests: 1 describe block (a hook: see vitest's output above), in <dir>/a.test.js",
    ]);
    expect(summary('describe-before-all-fails', true).notes.filter((n) => n.startsWith('skipped:'))).toEqual([
      'skipped: <dir>/a.test.js > group first (skipped)',
      'skipped: <dir>/a.test.js > group second (skipped)',
      'skipped: <dir>/a.test.js > group third (skipped)',
    ]);
    expect(summary('global-teardown-fails', false).notes).toEqual([
      "vitest exited 1 and its report has no failure: an unhandled error, a failing global setup or teardown, or no test file found (see vitest's output above)",
    ]);
  });

  it('CI is CI=true or CI=1', () => {
    expect([isCi({ CI: 'true' }), isCi({ CI: '1' }), isCi({ CI: 'false' }), isCi({ CI: '' }), isCi({})]).toEqual([true, true, false, false, false]);
  });

  // The script as .ci/test.sh runs it: notes, then the closing line last; its status is the run's.
  const script = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [path.join(root, '.ci', 'summary.mjs'), ...args], { env: { ...process.env, CI: '', ...env }, encoding: 'utf8' });

  it('the script prints the notes, then the closing line, and exits with the run\'s status', () => {
    const file = path.join(work, 'report.json');
    writeFileSync(file, JSON.stringify(recording('describe-before-all-fails').report));
    const r = script([file, '1'], { CI: 'true' });
    const lines = r.stdout.trim().split('\n');
    expect(lines.at(-1)).toBe('1 passed, 4 failed, 3 skipped (in CI a skipped test is a failed one)');
    expect(lines[0]).toMatch(/^failed outside their tests: 1 describe block/);
    expect(r.status).toBe(1);
    writeFileSync(file, JSON.stringify(recording('skipped').report));
    expect(script([file, '0']).status).toBe(0);
    expect(script([file, '0'], { CI: 'true' }).status).toBe(1);
  });

  it('a missing or cut report is one failure, and a wrong call is a usage error', () => {
    const cut = path.join(work, 'cut.json');
    writeFileSync(cut, '{"numFailedTestSuites": 0, "testResul');
    const r = script([cut, '0']);
    expect(r.stdout.trim()).toBe('0 passed, 1 failed, 0 skipped (vitest wrote no report)');
    expect(r.status).toBe(1);
    const missing = script([path.join(work, 'none.json'), '137']);
    expect(missing.stdout.trim()).toBe('0 passed, 1 failed, 0 skipped (vitest wrote no report)');
    expect(missing.status).toBe(137);
    const usage = script([cut]);
    expect(usage.status).toBe(2);
    expect(usage.stderr).toMatch(/^usage: /);
  });
});
