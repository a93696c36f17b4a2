// Debian packages a benchmark's baseline needs (keepalived, conntrackd), installed when missing,
// behind a policy-rc.d so that no package starts a daemon of its own.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';

export function ensurePackages(out: (s: string) => void, binary: string, packages: string[]): void {
  if (existsSync(binary)) return;
  out(`installing ${packages.join(', ')} (apt-get) for a baseline...`);
  const hadPolicy = existsSync('/usr/sbin/policy-rc.d');
  if (!hadPolicy) writeFileSync('/usr/sbin/policy-rc.d', '#!/bin/sh\nexit 101\n', { mode: 0o755 });
  try {
    const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...packages], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: 'ignore' });
    if (r.status !== 0) throw new Error(`apt-get install ${packages.join(' ')} failed`);
  } finally {
    if (!hadPolicy) rmSync('/usr/sbin/policy-rc.d', { force: true });
  }
}
