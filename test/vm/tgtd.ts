// A real iSCSI target on the host for the two-guest tests: Debian's tgtd (package tgt) with its
// own control port, so it never meets another tgtd on the machine, one target with one LUN backed
// by a file, and a portal on loopback only. stop() deletes the target system and kills tgtd, and
// removes the backing file; the test calls it in afterAll, so it runs on failure too.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../free-port.js';

const run = promisify(execFile);

export interface Tgtd {
  /** The portals' TCP ports on 127.0.0.1 (iscsistart logs in once per target and portal). */
  portals: number[];
  target: string;
  /** tgtd's log so far, for diagnosis. */
  log(): string;
  stop(): Promise<void>;
}

export async function startTgtd(o: { target: string; sizeMb: number; portals?: number }): Promise<Tgtd> {
  const dir = mkdtempSync(path.join(tmpdir(), 'takeover-tgtd-'));
  const disk = path.join(dir, 'disk0');
  writeFileSync(disk, '');
  truncateSync(disk, o.sizeMb * 1024 * 1024);
  const control = 1000 + Math.floor(Math.random() * 31_000); // tgtd takes -C below 32768
  const portals: number[] = [];
  for (let i = 0; i < (o.portals ?? 1); i++) portals.push(await freePort());
  let log = '';
  const tgtd: ChildProcess = spawn('tgtd', ['-f', '-C', String(control), '--iscsi', `portal=127.0.0.1:${portals[0]}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  tgtd.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  tgtd.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => tgtd.once('exit', () => resolve()));
  const spawnError = new Promise<never>((_, reject) => tgtd.once('error', reject));
  const tgtadm = (...args: string[]) => run('tgtadm', ['-C', String(control), '--lld', 'iscsi', ...args]);
  const stop = async () => {
    if (tgtd.exitCode === null && tgtd.signalCode === null) {
      await run('tgtadm', ['-C', String(control), '--op', 'delete', '--mode', 'system']).catch(() => {});
      const timer = setTimeout(() => tgtd.kill('SIGKILL'), 2000);
      tgtd.kill('SIGTERM');
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    // tgtd answers its control port 20-35 ms after it starts.
    const deadline = Date.now() + 5000;
    for (;;) {
      const ok = await Promise.race([spawnError, run('tgtadm', ['-C', String(control), '--mode', 'system', '--op', 'show']).then(() => true, () => false)]);
      if (ok) break;
      if (tgtd.exitCode !== null || Date.now() > deadline) throw new Error(`tgtd did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const port of portals.slice(1)) await tgtadm('--mode', 'portal', '--op', 'new', '--param', `portal=127.0.0.1:${port}`);
    await tgtadm('--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', o.target);
    await tgtadm('--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '--backing-store', disk);
    await tgtadm('--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', 'ALL');
  } catch (err) {
    await stop();
    throw err;
  }
  return { portals, target: o.target, log: () => log, stop };
}
