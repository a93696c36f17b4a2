#!/usr/bin/env node
// Records what vitest's JSON reporter writes for each kind of failure .ci/summary.mjs must count,
// by running vitest on tiny throwaway test files in a temporary directory (never the project's
// suite), into .ci/vitest-reports/<kind>.json as { vitestVersion, exitStatus, report }.
// Run it again when vitest is upgraded: `node .ci/record-vitest-reports.mjs`; the unit test
// test/unit/ci-summary.test.ts reads the recordings.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, '.ci', 'vitest-reports');
const vitestBin = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
const vitestVersion = createRequire(import.meta.url)(path.join(root, 'node_modules', 'vitest', 'package.json')).version;

const head = "import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';\n";
/** Each kind: its files (name -> text); `config` is written as vitest.config.mjs when given. */
const kinds = {
  'all-pass': { 'a.test.js': `${head}it('one', () => {}); it('two', () => {});` },
  'test-fails': { 'a.test.js': `${head}it('passes', () => {}); it('fails', () => { expect(1).toBe(2); });` },
  'describe-before-all-fails': {
    'a.test.js': `${head}it('outside passes', () => {});
describe('group', () => {
  beforeAll(() => { throw new Error('setup of the group failed'); });
  it('first', () => {}); it('second', () => {}); it('third', () => {});
});`,
  },
  'file-before-all-fails': { 'a.test.js': `${head}beforeAll(() => { throw new Error('setup of the file failed'); });\nit('first', () => {}); it('second', () => {});` },
  'nested-before-all-fails': {
    'a.test.js': `${head}describe('outer', () => {
  it('outer passes', () => {});
  describe('inner', () => {
    beforeAll(() => { throw new Error('setup of the inner group failed'); });
    it('first', () => {}); it('second', () => {});
  });
});`,
  },
  'test-and-before-all-fail': {
    'a.test.js': `${head}describe('a', () => { it('fails', () => { expect(1).toBe(2); }); it('passes', () => {}); });
describe('b', () => {
  beforeAll(() => { throw new Error('setup of b failed'); });
  it('skipped by its setup', () => {});
});`,
  },
  'import-fails': {
    'a.test.js': `${head}it('passes', () => {});`,
    'b.test.js': `${head}throw new Error('the module failed to load');\nit('never collected', () => {});`,
  },
  'no-test-files': { 'helper.js': 'export const x = 1;\n' },
  'no-tests': { 'a.test.js': `${head}it('passes', () => {});`, 'b.test.js': `${head}// forgot the tests\n` },
  'after-all-fails': { 'a.test.js': `${head}afterAll(() => { throw new Error('teardown of the file failed'); });\nit('first', () => {}); it('second', () => {});` },
  'describe-after-all-fails': {
    'a.test.js': `${head}describe('group', () => {
  afterAll(() => { throw new Error('teardown of the group failed'); });
  it('first', () => {});
});
it('outside', () => {});`,
  },
  'after-each-fails': { 'a.test.js': `${head}afterEach(() => { throw new Error('cleanup after a test failed'); });\nit('only', () => {});` },
  skipped: {
    'a.test.js': `${head}it('runs', () => {}); it.skip('skipped', () => {}); it.todo('todo');
describe.skip('skipped group', () => { it('in it', () => {}); });`,
  },
  'unhandled-error': { 'a.test.js': `${head}it('passes, then its timer throws', () => { setTimeout(() => { throw new Error('thrown after the test'); }, 0); });\nit('waits', async () => { await new Promise((r) => setTimeout(r, 50)); });` },
  // vitest 4.1 logs a global teardown's error and still exits 0 (fixed upstream by
  // vitest-dev/vitest#10794); test/global-setup.ts therefore sets process.exitCode first, as here.
  'global-teardown-fails': {
    'a.test.js': `${head}it('passes', () => {});`,
    'global.mjs': "export function setup() {}\nexport function teardown() { process.exitCode = 1; throw new Error('global teardown failed'); }\n",
    config: "export default { test: { globalSetup: ['./global.mjs'] } };\n",
  },
};

/** The recording without what differs from run to run or machine to machine: paths, times. */
function normalize(text, dir) {
  const paths = [[dir, '<dir>'], [realpathSync(path.join(root, 'node_modules')), '<node_modules>'], [root, '<repo>']];
  for (const [from, to] of paths) text = text.split(from).join(to);
  return JSON.parse(text, (key, value) => (['startTime', 'endTime', 'duration'].includes(key) && typeof value === 'number' ? 0 : value));
}

mkdirSync(out, { recursive: true });
const work = mkdtempSync(path.join(tmpdir(), 'tko-vitest-kinds-'));
try {
  for (const [kind, files] of Object.entries(kinds)) {
    const dir = path.join(work, kind);
    mkdirSync(dir);
    symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
    writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
    writeFileSync(path.join(dir, 'vitest.config.mjs'), files.config ?? 'export default {};\n');
    for (const [name, text] of Object.entries(files)) if (name !== 'config') writeFileSync(path.join(dir, name), text);
    const reportFile = path.join(dir, 'report.json');
    const env = { ...process.env };
    delete env.CI; // vitest behaves differently in CI; the recordings are of a plain run
    const r = spawnSync(process.execPath, [vitestBin, 'run', '--root', dir, '--reporter=json', `--outputFile=${reportFile}`], { cwd: dir, env, encoding: 'utf8' });
    let report;
    try {
      report = normalize(readFileSync(reportFile, 'utf8'), dir);
    } catch {
      report = null; // vitest wrote no report: recorded as such
    }
    writeFileSync(path.join(out, `${kind}.json`), `${JSON.stringify({ vitestVersion, exitStatus: r.status, report }, null, 1)}\n`);
    console.log(`${kind}: exit ${r.status}, ${report ? `${report.numPassedTests} passed, ${report.numFailedTests} failed, ${report.numPendingTests} pending, ${report.numFailedTestSuites} failed suites` : 'no report'}`);
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
