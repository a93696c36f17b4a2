// open-iscsi's iscsistart for the test guests, unpacked (dpkg-deb -x) from Debian's packages
// into the VM cache, never installed on the host: the guests run it from the host root they
// share, with LD_LIBRARY_PATH pointing at the unpacked libraries.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CACHE } from './guest-image.js';

const PACKAGES = ['open-iscsi', 'libopeniscsiusr', 'libisns0'];

/** The root of the unpacked packages: iscsistart is at ROOT/sbin/iscsistart. */
export function iscsistartRoot(): string {
  const root = path.join(CACHE, 'open-iscsi-root');
  if (existsSync(path.join(root, '.done'))) return root;
  rmSync(root, { recursive: true, force: true });
  for (const pkg of PACKAGES) {
    let deb = readdirSync(CACHE).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) {
      execFileSync('apt-get', ['download', pkg], { cwd: CACHE, stdio: ['ignore', 'pipe', 'pipe'] });
      deb = readdirSync(CACHE).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
      if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${CACHE}`);
    }
    execFileSync('dpkg-deb', ['-x', path.join(CACHE, deb), root]);
  }
  if (!existsSync(path.join(root, 'sbin', 'iscsistart'))) throw new Error(`no sbin/iscsistart in the unpacked ${PACKAGES.join(', ')}`);
  writeFileSync(path.join(root, '.done'), '');
  return root;
}
