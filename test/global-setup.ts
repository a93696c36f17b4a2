// Runs once around the whole suite: the suite needs root and must leave nothing behind.
import { staleLabNamespaces, sweepStaleLabs } from '../src/lab/lab.js';

export async function setup(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('the takeover suite runs as root: it builds network namespaces and uses raw sockets and TCP_REPAIR');
  }
  await sweepStaleLabs();
}

export async function teardown(): Promise<void> {
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
