// The test guest's kernel and initramfs, built from packages, never installed: a Debian kernel
// unpacked (dpkg-deb -x), and an initramfs of busybox, the module closure the device tests need
// (decompressed, with its modules.dep, for busybox's modprobe) and guest-init.sh. Everything
// lives under /var/cache/takeover-vm and is rebuilt only when an input changes. The kernel is
// the one linux-image-amd64 depends on.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const CACHE = '/var/cache/takeover-vm';
// 9p and virtio for the host share; LIO (tcm_loop) and scsi_debug for one-guest targets; virtio_net
// and the iSCSI initiator for guests that log into the host's tgtd; virtio_blk and ext4 for the
// power-loss tests' disk.
const MODULES = ['virtio_pci', '9pnet_virtio', '9p', 'sg', 'sd_mod', 'target_core_mod', 'target_core_file', 'tcm_loop', 'scsi_debug', 'configfs', 'virtio_net', 'iscsi_tcp', 'crc32c_generic', 'iscsi_target_mod', 'virtio_blk', 'ext4'];
const INIT = new URL('./guest-init.sh', import.meta.url).pathname;

export interface GuestImage {
  kernel: string;
  initrd: string;
  version: string;
}

const sh = (cmd: string, args: string[], cwd?: string) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

function need(cmd: string, pkg: string): void {
  try {
    sh('sh', ['-c', `command -v ${cmd}`]);
  } catch {
    throw new Error(`${cmd} is missing: install ${pkg} (test/vm/setup-deps.sh does, and npm test runs it)`);
  }
}

/** The unpacked kernel package (downloaded into the cache the first time). */
function kernelPackage(): string {
  const depends = sh('apt-cache', ['depends', 'linux-image-amd64']);
  const pkg = /Depends: (linux-image-[0-9][^\s]*)/.exec(depends)?.[1];
  if (!pkg) throw new Error(`cannot tell which kernel linux-image-amd64 depends on:\n${depends}`);
  return pkg;
}

function kernelRoot(): { root: string; version: string } {
  const pkg = kernelPackage();
  const root = path.join(CACHE, pkg);
  if (!existsSync(path.join(root, '.done'))) {
    mkdirSync(CACHE, { recursive: true });
    let deb = readdirSync(CACHE).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
    if (!deb) {
      sh('apt-get', ['download', pkg], CACHE);
      deb = readdirSync(CACHE).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'));
      if (!deb) throw new Error(`apt-get download ${pkg} left no .deb in ${CACHE}`);
    }
    rmSync(root, { recursive: true, force: true });
    sh('dpkg-deb', ['-x', path.join(CACHE, deb), root]);
    const v = readdirSync(path.join(root, 'lib', 'modules'))[0]!;
    sh('/sbin/depmod', ['-b', root, v]);
    writeFileSync(path.join(root, '.done'), '');
  }
  return { root, version: readdirSync(path.join(root, 'lib', 'modules'))[0]! };
}

export function guestImage(): GuestImage {
  for (const [cmd, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['busybox', 'busybox-static'], ['cpio', 'cpio'], ['/sbin/depmod', 'kmod'], ['dpkg-deb', 'dpkg'], ['xz', 'xz-utils']]) need(cmd!, pkg!);
  const { root, version } = kernelRoot();
  const kernel = path.join(root, 'boot', `vmlinuz-${version}`);
  const closure = new Set<string>();
  for (const m of MODULES) {
    const deps = sh('/sbin/modprobe', ['-d', root, '-S', version, '--show-depends', m]);
    for (const line of deps.split('\n')) {
      const ko = /^insmod (\S+)/.exec(line)?.[1];
      if (ko) closure.add(path.relative(root, ko));
    }
  }
  const busybox = sh('sh', ['-c', 'command -v busybox']).trim();
  const key = createHash('sha256').update(version).update(readFileSync(INIT)).update([...closure].sort().join('\n')).update(readFileSync(busybox)).digest('hex').slice(0, 16);
  const initrd = path.join(CACHE, `initrd-${version}-${key}.cpio.gz`);
  if (!existsSync(initrd)) {
    const stage = mkdtempSync(path.join(CACHE, 'stage-'));
    try {
      for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'host', 'tmp', 'etc']) mkdirSync(path.join(stage, d));
      copyFileSync(busybox, path.join(stage, 'bin', 'busybox'));
      execFileSync('chmod', ['755', path.join(stage, 'bin', 'busybox')]);
      copyFileSync(INIT, path.join(stage, 'init'));
      execFileSync('chmod', ['755', path.join(stage, 'init')]);
      for (const ko of closure) {
        mkdirSync(path.dirname(path.join(stage, ko)), { recursive: true });
        // busybox loads plain .ko files only: decompress .ko.xz / .ko.zst here.
        if (ko.endsWith('.xz')) execFileSync('sh', ['-c', `xz -dc '${path.join(root, ko)}' > '${path.join(stage, ko.slice(0, -3))}'`]);
        else if (ko.endsWith('.zst')) execFileSync('sh', ['-c', `zstd -qdc '${path.join(root, ko)}' > '${path.join(stage, ko.slice(0, -4))}'`]);
        else copyFileSync(path.join(root, ko), path.join(stage, ko));
      }
      for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
        const src = path.join(root, 'lib', 'modules', version, f);
        if (existsSync(src)) copyFileSync(src, path.join(stage, 'lib', 'modules', version, f));
      }
      sh('/sbin/depmod', ['-b', stage, version]);
      const tmp = `${initrd}.tmp`;
      execFileSync('sh', ['-c', `find . | cpio -o -H newc --quiet | gzip -1 > '${tmp}'`], { cwd: stage });
      renameSync(tmp, initrd);
      // Older images of this kernel (another init script or module set) are never used again.
      for (const f of readdirSync(CACHE)) if (f.startsWith(`initrd-${version}-`) && path.join(CACHE, f) !== initrd) rmSync(path.join(CACHE, f), { force: true });
    } finally {
      rmSync(stage, { recursive: true, force: true });
    }
  }
  return { kernel, initrd, version };
}
