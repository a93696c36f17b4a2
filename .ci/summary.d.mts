// Types of .ci/summary.mjs, for its unit test (test/unit/ci-summary.test.ts).
export interface Summary {
  passed: number;
  failed: number;
  skipped: number;
  /** What was counted as failed outside the tests (and, in CI, what was skipped), one line each. */
  notes: string[];
  /** "N passed, N failed, N skipped", with a reason in parentheses when there is one. */
  line: string;
  /** The run's final status: vitest's when non-zero, else 1 when a failure was counted, else 0. */
  status: number;
}
/** Counts a vitest 4 JSON report (null when vitest wrote none). */
export function summarize(report: unknown, run: { exitStatus: number; ci: boolean; cwd?: string }): Summary;
/** CI=true or CI=1. */
export function isCi(env: Record<string, string | undefined>): boolean;
