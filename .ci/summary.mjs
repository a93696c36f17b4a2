#!/usr/bin/env node
// The closing line of `npm test` (.ci/test.sh), from vitest's JSON report and its exit status:
// "N passed, N failed, N skipped", the line CI reads, with the run's final status as ours.
//
// vitest's own totals under-report: a failing beforeAll leaves its tests "skipped" and no test
// "failed"; a file that fails to import, or has no tests, has no tests at all; an afterAll that
// throws fails its suite while every test passed; an unhandled error or a failing global
// teardown is in no report (only in vitest's exit status). Here each of those is a failure:
//   failed = failed tests
//          + files that failed of their own (testResults[].message: import, file-level hook)
//          + describe blocks that failed of their own (numFailedTestSuites less the suites a
//            failed test or file explains; a failing nested block also fails the blocks around
//            it, and vitest counts each of them: so do we)
//          + 1 when vitest exited non-zero and nothing above explains it.
// In CI (CI=true or CI=1) a skipped test is a failed one: nothing may be left out unnoticed.
//
// Usage: node .ci/summary.mjs REPORT.json VITEST_EXIT_STATUS
// Prints what it counted as failed outside the tests (and, in CI, what was skipped), then the
// closing line; exits with vitest's status, or 1 when it counted a failure that vitest did not.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Counts a vitest 4 JSON report (null when vitest wrote none).
 * @param {object | null} report the parsed --reporter=json output
 * @param {{ exitStatus: number, ci: boolean, cwd?: string }} run vitest's exit status; whether this is CI
 * @returns {{ passed: number, failed: number, skipped: number, notes: string[], line: string, status: number }}
 */
export function summarize(report, run) {
  const notes = [];
  const rel = (file) => (run.cwd ? path.relative(run.cwd, file) || file : file);
  if (!report || !Array.isArray(report.testResults)) {
    return { passed: 0, failed: 1, skipped: 0, notes, line: '0 passed, 1 failed, 0 skipped (vitest wrote no report)', status: run.exitStatus || 1 };
  }
  let passed = 0;
  let failedTests = 0;
  const skippedNames = [];
  let ownFailures = 0;
  // Suites whose failure a failed test or a failed file explains: the file, and each describe
  // block around a failed test.
  const explained = new Set();
  for (const file of report.testResults) {
    for (const t of file.assertionResults ?? []) {
      if (t.status === 'passed') passed++;
      else if (t.status === 'failed') {
        failedTests++;
        const titles = t.ancestorTitles ?? [];
        for (let i = 1; i <= titles.length; i++) explained.add(JSON.stringify([file.name, ...titles.slice(0, i)]));
      } else skippedNames.push(`${rel(file.name)} > ${t.fullName} (${t.status})`); // skipped, todo, pending: did not run
    }
    if (file.status === 'failed') {
      explained.add(JSON.stringify([file.name]));
      if (file.message) {
        ownFailures++;
        notes.push(`failed outside its tests: ${rel(file.name)}: ${firstLine(file.message)}`);
      }
    }
  }
  const blocks = Math.max(0, (report.numFailedTestSuites ?? 0) - explained.size);
  if (blocks > 0) {
    ownFailures += blocks;
    // The report names no describe block: the files where one may be.
    const where = report.testResults.filter((f) => f.status === 'failed' && !f.message).map((f) => rel(f.name));
    notes.push(`failed outside their tests: ${blocks} describe block${blocks > 1 ? 's' : ''} (a hook: see vitest's output above), in ${where.length > 1 ? 'one or more of ' : ''}${where.join(', ')}`);
  }
  let failed = failedTests + ownFailures;
  if (run.exitStatus !== 0 && failed === 0) {
    failed = 1;
    notes.push(`vitest exited ${run.exitStatus} and its report has no failure: an unhandled error, a failing global setup or teardown, or no test file found (see vitest's output above)`);
  }
  const skipped = skippedNames.length;
  let line = `${passed} passed, ${failed} failed, ${skipped} skipped`;
  if (run.ci && skipped > 0) {
    failed += skipped;
    line = `${passed} passed, ${failed} failed, ${skipped} skipped (in CI a skipped test is a failed one)`;
    for (const name of skippedNames.slice(0, 20)) notes.push(`skipped: ${name}`);
    if (skipped > 20) notes.push(`skipped: ... and ${skipped - 20} more`);
  }
  return { passed, failed, skipped, notes, line, status: run.exitStatus !== 0 ? run.exitStatus : failed > 0 ? 1 : 0 };
}

function firstLine(text) {
  return String(text).split('\n')[0];
}

/** CI=true (GitHub, GitLab, most) or CI=1. */
export function isCi(env) {
  return env.CI === 'true' || env.CI === '1';
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [file, statusArg] = process.argv.slice(2);
  const exitStatus = Number(statusArg);
  if (!file || statusArg === undefined || !Number.isInteger(exitStatus) || exitStatus < 0) {
    console.error('usage: node .ci/summary.mjs REPORT.json VITEST_EXIT_STATUS');
    process.exit(2);
  }
  let report = null;
  try {
    report = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    // no report, or a truncated one: counted as one failure below
  }
  const s = summarize(report, { exitStatus, ci: isCi(process.env), cwd: process.cwd() });
  for (const n of s.notes) console.log(n);
  console.log(s.line);
  process.exit(s.status);
}
