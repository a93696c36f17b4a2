// An instance's stderr kept in a file: its last lines for the log and status, and a size bound
// that empties the file under a writer that appends (no hole, nothing but the oldest lost).
import { closeSync, mkdtempSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StderrFile } from '../../src/monitor/stderr-file.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-stderr-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('StderrFile', () => {
  it('keeps the last lines, without a line cut at the start of what it reads, and long lines shortened', async () => {
    const f = new StderrFile(path.join(dir, 'web1.stderr'), { tailBytes: 100 });
    expect(await f.tail()).toEqual([]); // no file yet
    const fd = f.openForChild();
    for (let i = 1; i <= 30; i++) writeSync(fd, `line ${i}\n`);
    expect(await f.tail(3)).toEqual(['line 28', 'line 29', 'line 30']);
    const all = await f.tail(100);
    expect(all.at(-1)).toBe('line 30');
    expect(all.every((l) => /^line \d+$/.test(l))).toBe(true); // the cut first line is dropped
    writeSync(fd, `${'x'.repeat(600)}\n`);
    expect(await new StderrFile(f.path).tail(1)).toEqual([`${'x'.repeat(512)}…`]);
    expect(await f.tail(1)).toEqual([`…${'x'.repeat(99)}`]); // longer than what is read: its end
    closeSync(fd);
  });

  it('past maxBytes the file is emptied and its tail kept; the appending writer goes on at the new end', async () => {
    const file = path.join(dir, 'web1.stderr');
    const f = new StderrFile(file, { maxBytes: 1000, tailBytes: 200 });
    const fd = f.openForChild();
    for (let i = 1; i <= 200; i++) writeSync(fd, `old ${i}\n`);
    await f.trim();
    expect(statSync(file).size).toBe(0);
    writeSync(fd, 'new 1\n');
    expect(statSync(file).size).toBe(6); // O_APPEND: no hole where the old bytes were
    expect((await f.tail(3))).toEqual(['old 199', 'old 200', 'new 1']);
    await f.trim(); // under the bound: nothing happens
    expect(statSync(file).size).toBe(6);
    closeSync(fd);
    const again = f.openForChild(); // a new run starts empty, with nothing carried over
    expect(await f.tail()).toEqual([]);
    closeSync(again);
  });
});
