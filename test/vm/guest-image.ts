// The test guest's kernel and initramfs, built from packages, never installed: a Debian kernel
// unpacked (dpkg-deb -x), and an initramfs of busybox, the module closure the device tests need
// (decompressed, with its modules.dep, for busybox's modprobe) and guest-init.sh. Everything
// lives under /var/cache/takeover-vm and is rebuilt only when an input changes. The kernel is
// the one linux-image-amd64 depends on, booted uncompressed (bootableKernel).
import { execFileSync, spawnSync } from 'node:child_process';
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

/**
 * Whether `elf` is an x86-64 ELF image with a PVH entry point (the note Xen / 18,
 * XEN_ELFNOTE_PHYS32_ENTRY, that CONFIG_PVH adds): qemu then boots it directly with -kernel.
 */
export function hasPvhEntry(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false; // ELF64, little-endian
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4) continue; // PT_NOTE
    const start = Number(elf.readBigUInt64LE(ph + 8));
    const end = Math.min(elf.length, start + Number(elf.readBigUInt64LE(ph + 32)));
    for (let n = start; n + 12 <= end;) {
      const namesz = elf.readUInt32LE(n);
      const descsz = elf.readUInt32LE(n + 4);
      const type = elf.readUInt32LE(n + 8);
      if (type === 18 && namesz === 4 && elf.toString('latin1', n + 12, n + 15) === 'Xen') return true;
      n += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
    }
  }
  return false;
}

/**
 * The kernel qemu boots. A bzImage (vmlinuz) decompresses itself in the guest, and under TCG that
 * took ~6 s of every boot (Debian's xz-compressed 6.1 kernel: the kernel's first line 6.4 s after
 * qemu's start, 0.6 s for the uncompressed one). So the ELF inside it is unpacked once into the
 * cache (found as the Linux scripts/extract-vmlinux finds it: at each compression magic, the first
 * stream that decompresses to an ELF) and booted through its PVH entry point; a kernel without
 * one boots as the bzImage it is.
 */
function bootableKernel(vmlinuz: string, version: string): string {
  const packed = readFileSync(vmlinuz);
  const out = path.join(CACHE, `vmlinux-${version}-${createHash('sha256').update(packed).digest('hex').slice(0, 16)}`);
  if (existsSync(out)) return out;
  if (existsSync(`${out}.none`)) return vmlinuz;
  const formats: Array<[Buffer, string]> = [[Buffer.from('fd377a585a00', 'hex'), 'xz'], [Buffer.from('28b52ffd', 'hex'), 'zstd'], [Buffer.from('1f8b08', 'hex'), 'gzip']];
  for (const [magic, tool] of formats) {
    for (let at = packed.indexOf(magic); at >= 0; at = packed.indexOf(magic, at + 1)) {
      // The stream is followed by the rest of the bzImage: the tool's complaint about it is expected.
      const r = spawnSync(tool, ['-dc'], { input: packed.subarray(at), maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] });
      if (r.error || !hasPvhEntry(r.stdout)) continue;
      const tmp = `${out}.${process.pid}.tmp`;
      writeFileSync(tmp, r.stdout);
      renameSync(tmp, out);
      // Older kernels' images are never used again.
      for (const f of readdirSync(CACHE)) if (f.startsWith('vmlinux-') && path.join(CACHE, f) !== out) rmSync(path.join(CACHE, f), { force: true });
      return out;
    }
  }
  writeFileSync(`${out}.none`, ''); // searched once: this kernel boots as its bzImage
  return vmlinuz;
}

export function guestImage(): GuestImage {
  for (const [cmd, pkg] of [['qemu-system-x86_64', 'qemu-system-x86'], ['busybox', 'busybox-static'], ['cpio', 'cpio'], ['/sbin/depmod', 'kmod'], ['dpkg-deb', 'dpkg'], ['xz', 'xz-utils']]) need(cmd!, pkg!);
  const { root, version } = kernelRoot();
  const kernel = bootableKernel(path.join(root, 'boot', `vmlinuz-${version}`), version);
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
