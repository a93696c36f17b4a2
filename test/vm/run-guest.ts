// Boots the test guest under qemu (TCG: KVM does not work for a stock guest kernel on these
// hosts) with the host's root shared read-only over 9p, sets up a SCSI target inside it, and
// runs a job there: a shell script on the host, run in a chroot of the host root, so the
// project's own Node, addon and sources (of this checkout) run against real SCSI devices. The job's "TKO {json}"
// lines are its results, streamed to `onResult` as they arrive. A guest may also get virtio
// disks (raw images on the host) and TCP forwards to and from the host's loopback, and be
// SIGKILLed at a moment the caller chooses (`kill`: the power-loss tests). qemu is always
// killed; the job file is always removed.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { CACHE, guestImage } from './guest-image.js';
import { iscsistartRoot } from './iscsi-initiator.js';
import { checkoutMismatch, checkoutOf, REPORT_CHECKOUT } from './checkout.js';

export interface GuestOptions {
  /**
   * Targets set up before the job: one LIO LUN through two tcm_loop nexuses; lio_iscsi (needs
   * tcm_loop) adds two iSCSI nexuses to the same LUN; scsi_debug a disk without PR.
   */
  setup: Array<'tcm_loop' | 'lio_iscsi' | 'scsi_debug'>;
  /**
   * Log into the host's tgtd (iSCSI, kernel initiator) before the job (test/vm/tgtd.ts): one
   * session per initiator name, the i-th through the i-th portal.
   */
  iscsi?: { portals: number[]; target: string; initiators: string[] };
  /**
   * Raw disk images (files on the host), each a virtio-blk device of the guest (vda, vdb...),
   * holding an ext4 file system the guest mounts before the job at /tmp/vda, /tmp/vdb... in the
   * job's chroot. qemu opens them with cache=none (O_DIRECT on the image: what qemu completes is
   * in the host's file, never in a cache of qemu's own) and the guest sees a volatile write cache
   * (its fdatasync sends a FLUSH, which qemu turns into an fdatasync of the image). So a SIGKILL of
   * qemu (`kill`) loses what the guest's kernel held (page cache, queued requests) and the
   * requests qemu had not completed, and nothing the device had completed: a power cut of a disk
   * whose completed writes survive (no volatile cache lost, or power-loss protected).
   */
  disks?: string[];
  /**
   * qemu's user network (no route anywhere else) with TCP forwards: `toHost` maps 10.0.2.100:port
   * in the guest to 127.0.0.1:hostPort on the host (a guestfwd: qemu connects to the host port at
   * start, so it must be listening then, and carries one guest connection); `toGuest` maps
   * 127.0.0.1:hostPort on the host to the guest's port (a hostfwd: any number of connections).
   * The guest is 10.0.2.15.
   */
  forwards?: { toHost?: Array<{ port: number; hostPort: number }>; toGuest?: Array<{ hostPort: number; port: number }> };
  /**
   * 'loose': the guest caches the host root's files and metadata without revalidating them (9p
   * cache=loose). Node starts ~4x faster (measured 4 s instead of 15-18 s on a loaded host;
   * 1.3 s for a second start), at the price of not seeing host files that change during the run:
   * for jobs that read only what existed at boot. Default: no cache.
   */
  hostCache?: 'loose';
  /** Shell script run (as /bin/sh) in the chroot of the host root, in this checkout (REPO_ROOT). */
  job: string;
  timeoutMs: number;
  /** Each result line as it arrives. */
  onResult?: (r: Record<string, unknown>) => void;
  /**
   * Aborted: qemu is SIGKILLed at once (the guest's power cut) and runGuest resolves with
   * `killedAtMs` instead of requiring the job's exit. Results the guest printed before its death
   * and still in the pipe are kept.
   */
  kill?: AbortSignal;
}

export interface GuestRun {
  /** The job's exit status; undefined when the guest was killed (`kill`) before it ended. */
  exitCode: number | undefined;
  /** ms from qemu's start to its SIGKILL by `kill`; undefined when it was not killed. */
  killedAtMs: number | undefined;
  results: Array<Record<string, unknown>>;
  /** The guest's console, for diagnosis. */
  log: string;
  /** Boot to the job's first line, and the whole run, in ms. */
  firstResultMs: number | undefined;
  totalMs: number;
  /** "<directory> <commit>" the job ran in, as the guest reported it: this checkout's (checked). */
  checkout: string;
}

/** The checkout this file is in: the guest runs its code, wherever it was cloned. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function runGuest(o: GuestOptions): Promise<GuestRun> {
  // The kernel command line carries it: words only.
  if (/\s/.test(REPO_ROOT)) throw new Error(`the VM tests need a checkout path without spaces, not "${REPO_ROOT}"`);
  const image = guestImage();
  const jobs = path.join(CACHE, 'jobs');
  mkdirSync(jobs, { recursive: true });
  const jobFile = path.join(jobs, `job-${process.pid}-${randomBytes(4).toString('hex')}.sh`);
  writeFileSync(jobFile, `export HOME=/tmp PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\ncd '${REPO_ROOT}' || exit 126\n${REPORT_CHECKOUT}\n${o.job}\n`);
  const expectedCheckout = checkoutOf(REPO_ROOT);
  const setup: string[] = [...o.setup];
  let append = `console=ttyS0 quiet panic=-1 tko.job=${jobFile} tko.checkout=${REPO_ROOT}`;
  // No network, or qemu's user network restricted to forwards: 10.0.2.100:(3260+i) in the guest
  // is the host's i-th iSCSI portal (qemu names a forward by its port, so each has its own).
  // nodelay: without it Nagle costs every PR OUT ~45 ms.
  let nic = ['-nic', 'none'];
  const forwards: string[] = [];
  if (o.iscsi || setup.includes('lio_iscsi')) append += ` tko.iscsistart=${iscsistartRoot()}`;
  if (o.iscsi) {
    setup.push('iscsi');
    if (o.iscsi.initiators.length > o.iscsi.portals.length) throw new Error(`${o.iscsi.initiators.length} iSCSI sessions need as many portals, not ${o.iscsi.portals.length}`);
    append += ` tko.iscsi=${[o.iscsi.target, ...o.iscsi.initiators].join(',')}`;
    forwards.push(...o.iscsi.initiators.map((_, i) => `guestfwd=tcp:10.0.2.100:${3260 + i}-tcp:127.0.0.1:${o.iscsi!.portals[i]},,nodelay=on`));
  }
  if (o.forwards) {
    setup.push('net');
    for (const f of o.forwards.toHost ?? []) forwards.push(`guestfwd=tcp:10.0.2.100:${f.port}-tcp:127.0.0.1:${f.hostPort},,nodelay=on`);
    for (const f of o.forwards.toGuest ?? []) forwards.push(`hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.port}`);
  }
  if (o.iscsi || o.forwards) nic = ['-nic', ['user,model=virtio-net-pci,restrict=on', ...forwards].join(',')];
  const disks = (o.disks ?? []).flatMap((file) => ['-drive', `file=${file},format=raw,if=virtio,cache=none,aio=threads`]);
  if (o.disks?.length) append += ` tko.disks=${o.disks.map((_, i) => `vd${String.fromCharCode(97 + i)}`).join(',')}`;
  if (o.hostCache) append += ` tko.hostcache=${o.hostCache}`;
  append += ` tko.setup=${setup.join(',') || 'none'}`;
  const started = performance.now();
  const qemu = spawn('qemu-system-x86_64', [
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '1024', '-smp', '2', '-M', 'q35', '-nodefaults', '-no-reboot',
    '-display', 'none', '-serial', 'stdio', '-monitor', 'none', ...nic, ...disks,
    '-kernel', image.kernel, '-initrd', image.initrd, '-append', append,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const results: Array<Record<string, unknown>> = [];
  let log = '';
  let exitCode: number | undefined;
  let killedAtMs: number | undefined;
  let firstResultMs: number | undefined;
  let checkout: string | undefined;
  createInterface({ input: qemu.stdout! }).on('line', (raw) => {
    const line = raw.replace(/\r$/, '');
    log = (log + line + '\n').slice(-20_000);
    if (line.startsWith('TKO {')) {
      try {
        const r = JSON.parse(line.slice(4)) as Record<string, unknown>;
        firstResultMs ??= performance.now() - started;
        results.push(r);
        o.onResult?.(r);
      } catch {
        // a result line cut by kernel output: left in the log
      }
    } else if (line.startsWith('TKO-EXIT ')) exitCode = Number(line.slice(9));
    else if (line.startsWith('TKO-CHECKOUT ')) checkout ??= line.slice(13);
  });
  const cut = () => {
    if (qemu.exitCode !== null || qemu.signalCode !== null) return;
    killedAtMs = performance.now() - started;
    qemu.kill('SIGKILL');
  };
  qemu.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`guest did not finish in ${o.timeoutMs} ms; console:\n${log.slice(-4000)}`)), o.timeoutMs);
      qemu.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      // 'close', not 'exit': the console's last lines (results printed just before a kill) are
      // read by then.
      qemu.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (o.kill?.aborted) cut();
      else o.kill?.addEventListener('abort', cut, { once: true });
    });
  } finally {
    o.kill?.removeEventListener('abort', cut);
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    rmSync(jobFile, { force: true });
  }
  if (exitCode === undefined && killedAtMs === undefined) throw new Error(`the guest powered off without finishing its job; console:\n${log.slice(-4000)}`);
  const mismatch = checkoutMismatch(checkout, expectedCheckout);
  if (mismatch) throw new Error(`${mismatch}; console:\n${log.slice(-4000)}`);
  return { exitCode, killedAtMs, results, log, firstResultMs, totalMs: performance.now() - started, checkout: checkout! };
}
