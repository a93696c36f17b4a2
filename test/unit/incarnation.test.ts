// The persisted incarnation: it grows at every start whatever the clock does.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nextIncarnation } from '../../src/agent/incarnation.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'tko-inc-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('nextIncarnation', () => {
  it('grows at every start, also when the clock steps back, and honours a floor', async () => {
    const file = path.join(mkdtempSync(path.join(scratch, 'inc-')), 'state', 'c.n2.incarnation');
    expect(await nextIncarnation(file, 0, 5_000_000)).toBe(5_000_000);
    expect(readFileSync(file, 'utf8')).toBe('5000000\n');
    // The clock stepped back a second: the next life is still newer than the last.
    expect(await nextIncarnation(file, 0, 4_999_000)).toBe(5_000_001);
    expect(await nextIncarnation(file, 4_000_000, 4_999_500)).toBe(5_000_002);
    expect(await nextIncarnation(file, 9_000_000, 4_999_500)).toBe(9_000_000);
    expect(await nextIncarnation(file, 0, 9_500_000)).toBe(9_500_000);
  });

  it('a file that does not hold a number stops the start, naming the file', async () => {
    const dir = mkdtempSync(path.join(scratch, 'inc-'));
    const file = path.join(dir, 'c.n1.incarnation');
    writeFileSync(file, 'garbage');
    await expect(nextIncarnation(file)).rejects.toThrow(`the incarnation file ${file} does not hold a number`);
    expect(readFileSync(file, 'utf8')).toBe('garbage');
  });
});
