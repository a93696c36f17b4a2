// Boots the test guest under qemu (TCG: KVM does not work for a stock guest kernel on these
// hosts) with the host's root shared read-only over 9p, sets up a SCSI target inside it, and
// runs a job there: a shell script on the host, run in a chroot of the host root, so the
// project's own Node, addon and sources (of this checkout) run against real SCSI devices. The job's "TKO {json}"
// lines are its results. qemu is always killed; the job file is always removed.
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
  /** Shell script run (as /bin/sh) in the chroot of the host root, in this checkout (REPO_ROOT). */
  job: string;
  timeoutMs: number;
  /** Each result line as it arrives. */
  onResult?: (r: Record<string, unknown>) => void;
}

export interface GuestRun {
  exitCode: number;
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
  if (o.iscsi || setup.includes('lio_iscsi')) append += ` tko.iscsistart=${iscsistartRoot()}`;
  if (o.iscsi) {
    setup.push('iscsi');
    if (o.iscsi.initiators.length > o.iscsi.portals.length) throw new Error(`${o.iscsi.initiators.length} iSCSI sessions need as many portals, not ${o.iscsi.portals.length}`);
    append += ` tko.iscsi=${[o.iscsi.target, ...o.iscsi.initiators].join(',')}`;
    const forwards = o.iscsi.initiators.map((_, i) => `guestfwd=tcp:10.0.2.100:${3260 + i}-tcp:127.0.0.1:${o.iscsi!.portals[i]},,nodelay=on`);
    nic = ['-nic', ['user,model=virtio-net-pci,restrict=on', ...forwards].join(',')];
  }
  append += ` tko.setup=${setup.join(',') || 'none'}`;
  const started = performance.now();
  const qemu = spawn('qemu-system-x86_64', [
    '-accel', 'tcg,thread=multi', '-cpu', 'max', '-m', '1024', '-smp', '2', '-M', 'q35', '-nodefaults', '-no-reboot',
    '-display', 'none', '-serial', 'stdio', '-monitor', 'none', ...nic,
    '-kernel', image.kernel, '-initrd', image.initrd, '-append', append,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const results: Array<Record<string, unknown>> = [];
  let log = '';
  let exitCode: number | undefined;
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
  qemu.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20_000)));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`guest did not finish in ${o.timeoutMs} ms; console:\n${log.slice(-4000)}`)), o.timeoutMs);
      qemu.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      qemu.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } finally {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    rmSync(jobFile, { force: true });
  }
  if (exitCode === undefined) throw new Error(`the guest powered off without finishing its job; console:\n${log.slice(-4000)}`);
  const mismatch = checkoutMismatch(checkout, expectedCheckout);
  if (mismatch) throw new Error(`${mismatch}; console:\n${log.slice(-4000)}`);
  return { exitCode, results, log, firstResultMs, totalMs: performance.now() - started, checkout: checkout! };
}
