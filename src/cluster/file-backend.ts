// The embedded store engine: one JSON file for one machine (the demo, tests, a cluster of
// agents in network namespaces of one host). Every change takes the file's lock
// (proper-lockfile: a lock directory beside the file, taken over when its holder stopped
// refreshing it), reads the file, checks the revision, and writes the whole file anew (a
// temporary file, fsync, rename, fsync of the directory): a reader sees the old file or the new
// one, never half of one, and a crash leaves one of the two.
//
// Revisions work as etcd's mod_revision: the file has one counter, bumped by every write, and
// each record carries the counter of its last write. Liveness: each node keeps its own lease
// file beside the store (`.STORE.nodes/NODE`: its expiry time, written atomically at a third of
// the TTL), so renewing takes no lock: a node killed while holding the store's lock would stall
// every other writer until the lock goes stale (5 s), and with leases under that lock a HOST's
// death would hit that ~1 time in 100.
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { type NodeLease, type RawRecord, type StoreBackend, StoreConflictError, StoreUnavailableError } from './store-backend.js';

const FORMAT = 'takeover-store';
const VERSION = 1;

interface FileShape {
  format: typeof FORMAT;
  version: typeof VERSION;
  revision: number;
  apps: Record<string, { record: unknown; revision: number }>;
}

const empty = (): FileShape => ({ format: FORMAT, version: VERSION, revision: 0, apps: {} });

export class FileBackend implements StoreBackend {
  readonly engine = 'file';
  private readonly watchers = new Set<() => void>();

  /** The nodes' lease files. */
  private readonly leaseDir: string;

  /** @param location the store's path; its directory is created if missing. */
  constructor(
    readonly location: string,
    private readonly now: () => number = Date.now,
  ) {
    this.leaseDir = path.join(path.dirname(location), `.${path.basename(location)}.nodes`);
  }

  async readAll(): Promise<RawRecord[]> {
    const f = await this.load();
    return Object.entries(f.apps).map(([tag, a]) => ({ tag, record: a.record, revision: a.revision }));
  }

  async read(tag: string): Promise<RawRecord | undefined> {
    const a = (await this.load()).apps[tag];
    return a && { tag, record: a.record, revision: a.revision };
  }

  compareAndSwap(tag: string, expected: number, record: unknown): Promise<number> {
    return this.locked((f) => {
      const current = f.apps[tag]?.revision ?? 0;
      if (current !== expected) {
        throw new StoreConflictError(tag, expected === 0 ? 'already exists' : current === 0 ? `no longer exists (expected revision ${expected})` : `changed meanwhile (revision ${current}, expected ${expected})`);
      }
      f.revision++;
      if (record === null) {
        delete f.apps[tag];
        return 0;
      }
      f.apps[tag] = { record, revision: f.revision };
      return f.revision;
    });
  }

  async watch(onChange: (tag: string) => void): Promise<() => void> {
    let seen: Map<string, number> | undefined; // undefined until the first scan: the reference, not reported
    let watcher: FSWatcher | undefined;
    let pending: NodeJS.Timeout | undefined;
    let stopped = false;
    const scan = async () => {
      pending = undefined;
      let f: FileShape;
      try {
        f = await this.load();
      } catch {
        return; // unreadable for a moment: the next write's event scans again
      }
      if (stopped) return;
      const now = new Map(Object.entries(f.apps).map(([tag, a]) => [tag, a.revision]));
      if (seen !== undefined) {
        for (const [tag, rev] of now) if (seen.get(tag) !== rev) onChange(tag);
        for (const tag of seen.keys()) if (!now.has(tag)) onChange(tag);
      }
      seen = now;
    };
    const base = path.basename(this.location);
    // The directory, not the file: each write replaces the file (rename), which a watch on the
    // file itself would lose after the first one.
    await mkdir(path.dirname(this.location), { recursive: true });
    watcher = fsWatch(path.dirname(this.location), (_ev, name) => {
      if (name === base && pending === undefined) pending = setTimeout(() => void scan(), 5);
    });
    await scan();
    const stop = () => {
      stopped = true;
      watcher?.close();
      if (pending) clearTimeout(pending);
      this.watchers.delete(stop);
    };
    this.watchers.add(stop);
    return stop;
  }

  async keepAlive(node: string, ttlMs: number): Promise<NodeLease> {
    const file = path.join(this.leaseDir, `node-${node}`); // a prefix: a node name may be '..'
    const renew = async () => {
      await mkdir(this.leaseDir, { recursive: true });
      await writeAtomically(file, `${this.now() + ttlMs}\n`);
    };
    await renew();
    let expires = this.now() + ttlMs;
    let closed = false;
    let lose: (why: string) => void = () => {};
    const lost = new Promise<string>((r) => (lose = r));
    const timer = setInterval(() => {
      renew().then(
        () => void (expires = this.now() + ttlMs),
        (err: Error) => {
          if (this.now() >= expires) {
            clearInterval(timer);
            lose(`could not renew the lease of ${node} before it ran out: ${err.message}`);
          }
        },
      );
    }, Math.max(10, Math.floor(ttlMs / 3)));
    timer.unref();
    return {
      node,
      lost,
      close: async () => {
        if (closed) return;
        closed = true;
        clearInterval(timer);
        await unlink(file).catch(() => undefined);
      },
    };
  }

  async liveNodes(): Promise<string[]> {
    const now = this.now();
    let names: string[];
    try {
      names = await readdir(this.leaseDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new StoreUnavailableError(this.location, `cannot read its leases: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    const live: string[] = [];
    for (const n of names.filter((x) => x.startsWith('node-'))) {
      const expires = Number((await readFile(path.join(this.leaseDir, n), 'utf8').catch(() => '')).trim());
      if (expires > now) live.push(n.slice('node-'.length));
    }
    return live;
  }

  async close(): Promise<void> {
    for (const stop of [...this.watchers]) stop();
  }

  /** The file's content; a missing file is an empty store. */
  private async load(): Promise<FileShape> {
    let text: string;
    try {
      text = await readFile(this.location, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return empty();
      throw new StoreUnavailableError(this.location, `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    let f: Partial<FileShape>;
    try {
      f = JSON.parse(text) as Partial<FileShape>;
    } catch (err) {
      throw new StoreUnavailableError(this.location, `is not a takeover store (not JSON: ${(err as Error).message})`);
    }
    if (f.format !== FORMAT || f.version !== VERSION || typeof f.revision !== 'number' || typeof f.apps !== 'object') {
      throw new StoreUnavailableError(this.location, `is not a takeover store of version ${VERSION}`);
    }
    return f as FileShape;
  }

  /** Runs `change` on the file's content under its lock and writes the result atomically. */
  private async locked<T>(change: (f: FileShape) => T): Promise<T> {
    await mkdir(path.dirname(this.location), { recursive: true });
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(this.location, { realpath: false, stale: 5000, update: 1000, retries: { retries: 100, minTimeout: 2, maxTimeout: 50, factor: 1.5 } });
    } catch (err) {
      throw new StoreUnavailableError(this.location, `cannot take its lock: ${(err as Error).message}`, { cause: err });
    }
    try {
      const f = await this.load();
      const result = change(f);
      await writeAtomically(this.location, `${JSON.stringify(f, null, 1)}\n`);
      return result;
    } finally {
      await release().catch(() => {});
    }
  }
}

/** Writes `text` to `file` so that a crash leaves the old file or the new one: temp file, fsync, rename, fsync of the directory. */
async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    const h = await open(tmp, 'w', 0o600);
    try {
      await h.writeFile(text);
      await h.datasync();
    } finally {
      await h.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw new StoreUnavailableError(file, `cannot write: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
