// A short run of the ASan/UBSan fuzz driver of the parser and flow table (native/fuzz; `npm run
// fuzz` runs the long one). Any invariant violation or sanitizer report aborts the driver with a
// non-zero status. run.sh caches the binary in native/fuzz/out and recompiles (~6 s) only when
// a source is newer.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'native', 'fuzz', 'run.sh');

it('fuzz driver: 20,000 frames through parser and flow table, invariants hold, sanitizers clean', () => {
  const r = spawnSync('bash', [script, '20000'], { encoding: 'utf8', timeout: 40_000 });
  if (r.status !== 0) console.error(r.stderr);
  expect(r.error).toBeUndefined();
  expect(r.status).toBe(0);
  const m = /^20000 iterations in [\d.]+ s \(seed \d+\): (\d+) accepted \((\d+) verified, (\d+) of them mutated\)/.exec(r.stdout);
  expect(m, r.stdout).not.toBeNull();
  // The run exercised something: frames got through, mutated ones too.
  expect(Number(m![1])).toBeGreaterThan(1000);
  expect(Number(m![3])).toBeGreaterThan(100);
  expect(r.stderr).not.toMatch(/AddressSanitizer|runtime error|invariant violated/);
}, 45_000);
