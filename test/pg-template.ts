// Empty PostgreSQL data directories for tests (Debian package postgresql), each a copy of one
// initdb (trust auth, superuser postgres, UTF8, no sync): cp -a takes ~0.3 s where initdb takes
// 1.2 s on a quiet 2-core machine and 2-4 s on a loaded one. The suite's global setup names a
// directory that lives as long as the run (TKO_SUITE_DIR, test/global-setup.ts): the first test
// process that needs PostgreSQL makes the template there and every other one, in any project,
// copies it. Without that directory (a test file run outside the suite's config) the template is
// made once per test file and removed after it. The copies share initdb's system identifier,
// which only physical replication between them would look at.
import { chownSync, existsSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { run } from '../src/lab/exec.js';

/** The newest PostgreSQL's bin directory under /usr/lib/postgresql. */
export function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  let versions: string[];
  try {
    versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
  } catch {
    throw new Error('PostgreSQL is not installed (Debian package postgresql); `npm test` installs it via .ci/setup.sh');
  }
  if (versions.length === 0) throw new Error('PostgreSQL is not installed under /usr/lib/postgresql');
  return path.join(root, versions[0]!, 'bin');
}

async function initdb(dataDir: string): Promise<void> {
  await run('runuser', ['-u', 'postgres', '--', path.join(pgBinDir(), 'initdb'), '-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
}

/**
 * The run's template in `suiteDir`, made by the first process that asks: initdb into a directory
 * of its own, then renamed into place (atomic: a process that loses the race uses the winner's).
 */
async function makeSharedTemplate(suiteDir: string, uid: number, gid: number): Promise<string> {
  const done = path.join(suiteDir, `pg-template-${path.basename(path.dirname(pgBinDir()))}`);
  const data = path.join(done, 'data');
  if (existsSync(path.join(data, 'PG_VERSION'))) return data;
  const making = mkdtempSync(path.join(suiteDir, 'pg-template-making-'));
  try {
    chownSync(making, uid, gid);
    await initdb(path.join(making, 'data'));
    try {
      renameSync(making, done);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  } finally {
    rmSync(making, { recursive: true, force: true });
  }
  return data;
}

let shared: Promise<string> | undefined;
const sharedTemplate = (suiteDir: string, uid: number, gid: number) => (shared ??= makeSharedTemplate(suiteDir, uid, gid));

// Without the run's directory: one template per test file.
let fileTemplate: Promise<string> | undefined;
afterAll(() => {
  const t = fileTemplate;
  fileTemplate = undefined;
  return t?.then((dir) => rmSync(path.dirname(dir), { recursive: true, force: true }), () => undefined);
});

/**
 * A fresh, empty PostgreSQL data directory in a new temporary directory named `prefix...`, owned
 * by postgres. Returns the data directory (the caller removes it) and postgres's uid and gid.
 */
export async function initdbCopy(prefix: string): Promise<{ dataDir: string; uid: number; gid: number }> {
  const uid = Number((await run('id', ['-u', 'postgres'])).stdout);
  const gid = Number((await run('id', ['-g', 'postgres'])).stdout);
  const suiteDir = process.env.TKO_SUITE_DIR;
  const template = suiteDir && existsSync(suiteDir)
    ? await sharedTemplate(suiteDir, uid, gid)
    : await (fileTemplate ??= (async () => {
      const root = mkdtempSync(path.join(tmpdir(), 'tko-pg-template-'));
      chownSync(root, uid, gid);
      await initdb(path.join(root, 'data'));
      return path.join(root, 'data');
    })());
  const dataDir = mkdtempSync(path.join(tmpdir(), prefix));
  // Into the empty directory mkdtemp made (0700), keeping owners and modes; then owned like initdb's.
  await run('cp', ['-a', `${template}/.`, dataDir]);
  chownSync(dataDir, uid, gid);
  return { dataDir, uid, gid };
}
