// The file operations the log uses, behind one small interface: the real ones (fs/promises, so
// nothing blocks the event loop) and, in tests, wrappers that inject ENOSPC or fsync errors.
import { open, readFile, readdir, mkdir, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';

/** An open segment file. Positions and lengths in bytes. */
export interface LogFile {
  /** Writes `data` at `position`; resolves with the bytes written (may be fewer: call again). */
  write(data: Uint8Array, position: number): Promise<number>;
  /** fdatasync(2): the data written so far, and the size, are durable when it resolves. */
  datasync(): Promise<void>;
  /** ftruncate(2) to `length` bytes. */
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

/** The log's file system access. Every call may reject with a Node system error (`code`). */
export interface FileOps {
  /** `create`: a new file (O_CREAT|O_EXCL, fails with EEXIST); `existing`: read-write, no create. */
  open(path: string, how: 'create' | 'existing'): Promise<LogFile>;
  readFile(path: string): Promise<Buffer>;
  /** The names in `dir` ([] when it does not exist). */
  readdir(dir: string): Promise<string[]>;
  /** mkdir -p. */
  mkdir(dir: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** fsync(2) of the directory itself: a file created or removed in it is durable when it resolves. */
  syncDir(dir: string): Promise<void>;
}

class NodeLogFile implements LogFile {
  constructor(private readonly fh: FileHandle) {}
  async write(data: Uint8Array, position: number): Promise<number> {
    return (await this.fh.write(data, 0, data.length, position)).bytesWritten;
  }
  datasync(): Promise<void> {
    return this.fh.datasync();
  }
  truncate(length: number): Promise<void> {
    return this.fh.truncate(length);
  }
  close(): Promise<void> {
    return this.fh.close();
  }
}

/** The real file operations (node:fs/promises). */
export const nodeFileOps: FileOps = {
  async open(path, how) {
    return new NodeLogFile(await open(path, how === 'create' ? 'wx' : 'r+'));
  },
  readFile: (path) => readFile(path),
  async readdir(dir) {
    try {
      return await readdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  },
  async mkdir(dir) {
    await mkdir(dir, { recursive: true });
  },
  unlink: (path) => unlink(path),
  async syncDir(dir) {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
};
