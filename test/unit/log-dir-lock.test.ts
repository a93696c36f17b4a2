// One writer per log directory (src/log/dir-lock.ts): a second writer, a mirror backup and a
// primary on the same directory, and a cut while a writer is open are refused with ELOGLOCKED,
// naming the holder, nothing read or changed; a holder that closes or is SIGKILLed frees the
// directory at once (the kernel drops a flock with its fd), so recovery never waits on a stale lock.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LogWriter } from '../../src/log/log-writer.js';
import { MirroredLog } from '../../src/log/mirrored-log.js';
import { MirrorBackup } from '../../src/log/mirror-backup.js';
import { cutLogBack } from '../../src/log/log-cut.js';
import { readLog } from '../../src/log/log-reader.js';
import { KEY, perTestScratch } from './mirror-helpers.js';

const scratch = perTestScratch('log-dir-lock-');
const { open, children } = scratch;

describe('log directory lock', () => {
  it('a second writer, a backup and a primary on one directory, and a cut under a writer: ELOGLOCKED naming the holder; free again once closed', async () => {
    const dir = path.join(scratch.root, 'log');
    const w = await LogWriter.open({ dir });
    await w.append(Buffer.from('one'));
    await expect(LogWriter.open({ dir })).rejects.toMatchObject({ code: 'ELOGLOCKED', message: expect.stringContaining(`pid ${process.pid}: a log writer`) });
    await expect(MirrorBackup.listen({ dir, host: '127.0.0.1', port: 0, key: KEY, node: 'b' })).rejects.toMatchObject({ code: 'ELOGLOCKED' });
    const w0 = await LogWriter.open({ dir: path.join(scratch.root, 'named'), holder: 'the test' });
    await expect(MirrorBackup.listen({ dir: path.join(scratch.root, 'named'), host: '127.0.0.1', port: 0, key: KEY, node: 'b' })).rejects.toMatchObject({ message: expect.stringContaining('the test') });
    await w0.close();
    await expect(MirroredLog.open({ dir, key: KEY, node: 'a', state: 'backup-only' })).rejects.toMatchObject({ code: 'ELOGLOCKED' });
    await expect(cutLogBack(dir, 0, path.join(scratch.root, 'kept'))).rejects.toMatchObject({ code: 'ELOGLOCKED' });
    await w.close();
    // Nothing was changed by the refused ones; the directory is free now.
    expect((await readLog(dir)).records.map(String)).toEqual(['one']);
    const b = await MirrorBackup.listen({ dir, host: '127.0.0.1', port: 0, key: KEY, node: 'b' });
    open.push(b);
    expect(b.heldLsn).toBe(1);
    await b.close();
    const w2 = await LogWriter.open({ dir });
    await w2.close();
  });

  it('a holder SIGKILLed frees the directory at once: no stale lock', async () => {
    const dir = path.join(scratch.root, 'killed');
    const script = `import { LogWriter } from ${JSON.stringify(path.resolve('src/log/log-writer.ts'))};
      const w = await LogWriter.open({ dir: ${JSON.stringify(dir)} });
      await w.append(Buffer.from('x'));
      process.stdout.write('held\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    await once(child.stdout, 'data');
    await expect(LogWriter.open({ dir })).rejects.toMatchObject({ code: 'ELOGLOCKED', message: expect.stringContaining(`pid ${child.pid}`) });
    child.kill('SIGKILL');
    await once(child, 'exit');
    const w = await LogWriter.open({ dir });
    expect(w.nextLsn).toBe(1);
    await w.close();
  });
});
