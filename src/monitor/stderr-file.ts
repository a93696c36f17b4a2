// An instance's stderr, kept in a file of the agent's state directory so its last lines can be
// logged with its exit and shown by `status`. A file and not a pipe: an instance outlives an
// agent that dies (and is adopted by the next one), and a pipe nobody reads any more would
// block it once full, or kill it with SIGPIPE. The child writes with O_APPEND, so the file can
// be emptied under it; past `maxBytes` it is, after its tail is kept here.
import { constants, openSync } from 'node:fs';
import { open, truncate } from 'node:fs/promises';

export interface StderrFileOptions {
  /** The file is emptied (its tail kept) once larger than this; default 1 MiB. */
  maxBytes?: number;
  /** How much of the end is read for the tail; default 8 KiB. */
  tailBytes?: number;
}

/** At most this many characters of one line are kept. */
const MAX_LINE = 512;

export class StderrFile {
  private carried = '';
  private readonly maxBytes: number;
  private readonly tailBytes: number;

  constructor(
    readonly path: string,
    options: StderrFileOptions = {},
  ) {
    this.maxBytes = options.maxBytes ?? 1 << 20;
    this.tailBytes = options.tailBytes ?? 8192;
  }

  /** An emptied file for a new run: the fd to give the child as its stderr (the caller closes it). */
  openForChild(): number {
    this.carried = '';
    return openSync(this.path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_APPEND, 0o600);
  }

  /** The last `lines` lines written in this run (also those before a trim); [] when none or no file. */
  async tail(lines = 20): Promise<string[]> {
    const text = this.carried + ((await this.readEnd())?.text ?? '');
    const all = text.split('\n').filter((l) => l.trim() !== '');
    return all.slice(-lines).map((l) => (l.length > MAX_LINE ? `${l.slice(0, MAX_LINE)}…` : l));
  }

  /** Keeps the file under maxBytes: past it, its tail moves here and the file is emptied. */
  async trim(): Promise<void> {
    const end = await this.readEnd();
    if (!end || end.size <= this.maxBytes) return;
    this.carried = end.text;
    await truncate(this.path, 0).catch(() => {});
  }

  /** The file's size and its last tailBytes from a line start, as text; undefined when there is no file. */
  private async readEnd(): Promise<{ size: number; text: string } | undefined> {
    const fh = await open(this.path, 'r').catch(() => undefined);
    if (!fh) return undefined;
    try {
      const { size } = await fh.stat();
      const from = Math.max(0, size - this.tailBytes);
      const buf = Buffer.alloc(size - from);
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      let text = buf.subarray(0, bytesRead).toString('utf8');
      if (from > 0) {
        // A cut first line is not a line, unless it is all there is (one very long line).
        const nl = text.indexOf('\n');
        text = nl >= 0 && nl < text.length - 1 ? text.slice(nl + 1) : `…${text}`;
      }
      return { size, text };
    } finally {
      await fh.close();
    }
  }
}
