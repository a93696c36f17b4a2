// A short run of the ASan/UBSan fuzz driver of the parser and flow table (npm run fuzz runs the
// long one); any invariant violation or sanitizer report aborts it with a non-zero status.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'native', 'fuzz', 'run.sh');

it('fuzz driver: 300,000 mutated frames through parser and flow table, sanitizers clean', () => {
  const r = spawnSync('bash', [script, '300000', '30'], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/^300000 iterations in [\d.]+ s, \d+ accepted/);
}, 120_000);
