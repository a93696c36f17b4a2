// Runs once around the whole suite: the suite needs root and must leave nothing behind.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { staleLabNamespaces, sweepStaleLabs } from '../src/lab/lab.js';

/** A directory for what the run's test processes share (test/pg-template.ts), removed at the end. */
let suiteDir: string | undefined;

export async function setup(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('the takeover suite runs as root: it builds network namespaces and uses raw sockets and TCP_REPAIR');
  }
  buildDistIfStale();
  await sweepStaleLabs();
  // The test processes are forked from this one after the setup: they inherit the variable.
  // Traversable by the postgres user, who writes the PostgreSQL template inside it. Named after
  // this process: a run killed before its teardown leaves one, which the next run removes.
  sweepStaleSuiteDirs();
  suiteDir = mkdtempSync(path.join(tmpdir(), `tko-suite-${process.pid}-`));
  chmodSync(suiteDir, 0o711);
  process.env.TKO_SUITE_DIR = suiteDir;
}

/** Removes the suite directories of runs whose process is gone. */
function sweepStaleSuiteDirs(): void {
  for (const name of readdirSync(tmpdir())) {
    const pid = /^tko-suite-(\d+)-/.exec(name)?.[1];
    if (!name.startsWith('tko-suite-') || (pid !== undefined && processExists(Number(pid)))) continue;
    rmSync(path.join(tmpdir(), name), { recursive: true, force: true });
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The CLI runs as the user runs it, from dist/ (test/cli-process.ts): dist/ is built again here
 * when a source is newer, so a run of vitest alone never tests a stale CLI. (From dist/ a CLI
 * process starts in ~0.6 s; from the sources through tsx, ~1.9 s, times hundreds of starts.)
 */
function buildDistIfStale(): void {
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
  const check = spawnSync('bash', ['.ci/needs-build.sh', 'dist/cli/main.js', 'src', 'tsconfig.json', 'tsconfig.build.json'], { cwd: root, encoding: 'utf8' });
  if (check.status === 1) return;
  if (check.status !== 0) throw new Error(`cannot tell whether dist/ is up to date: ${check.stderr}`);
  execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
}

export async function teardown(): Promise<void> {
  if (suiteDir) rmSync(suiteDir, { recursive: true, force: true });
  // Every test tears down what it made; a lab left now (its creator, a test worker, has exited)
  // is a bug in a test or the harness. Labs of other live runs on the machine are not ours.
  const left = await staleLabNamespaces();
  await sweepStaleLabs();
  if (left.length > 0) {
    // vitest 4.1 logs a global teardown's error but still exits 0 (fixed upstream in
    // vitest-dev/vitest#10794): the exit status is set here so that the run fails.
    process.exitCode = 1;
    throw new Error(`tests left network namespaces behind: ${left.join(', ')}`);
  }
}
