// Runs once around the whole suite: the suite needs root and must leave nothing behind.
import { LAB_PREFIX, sweepStaleLabs } from '../src/lab/lab.js';
import { run } from '../src/lab/exec.js';

export async function setup(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('the takeover suite runs as root: it builds network namespaces and uses raw sockets and TCP_REPAIR');
  }
  await sweepStaleLabs();
}

export async function teardown(): Promise<void> {
  // Every test tears down what it made; a namespace left now is a bug in a test or the harness.
  const { stdout } = await run('ip', ['netns', 'list']);
  const left = stdout.split('\n').filter((l) => l.startsWith(LAB_PREFIX));
  await sweepStaleLabs();
  if (left.length > 0) throw new Error(`tests left network namespaces behind: ${left.join(', ')}`);
}
