// docs/examples/takeover-agent.service as an SRE drops it in: systemd-analyze verify reads it
// without a word where the README's install steps put the command (a private mount namespace
// gives /usr/local/bin/takeover, running this checkout, without touching the host), its ExecStart
// runs the agent, and what it says about stopping, reloading and restarting matches the agent.
// The capabilities it grants are tested as enough in test/lab/systemd-capabilities.test.ts.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_STOP_GRACE_MS as STOP_GRACE_MS } from '../../src/agent/config.js';
import { CLI } from '../cli-process.js';
import { readFileSync } from 'node:fs';
import { KEEPER_UNIT_FILE, UNIT_FILE, unitPrivileges, unitSettings } from '../systemd-unit.js';

const INSTALLED = '/usr/local/bin/takeover'; // where the README's install steps put the command

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-unit-'));
  // What `ln -s .../dist/cli/main.js /usr/local/bin/takeover` gives: the built CLI (CLI is
  // dist/cli/main.js, plain JavaScript: no tsx loader needed), run by this Node.
  writeFileSync(path.join(dir, 'takeover'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
  chmodSync(path.join(dir, 'takeover'), 0o755);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs argv in a private mount namespace where INSTALLED is this checkout's CLI. */
function withInstalledCommand(argv: string[]) {
  const script = `mount -t tmpfs tmpfs ${path.dirname(INSTALLED)} && cp "$0" ${INSTALLED} && exec "$@"`;
  return spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, path.join(dir, 'takeover'), ...argv], { encoding: 'utf8' });
}

function config(extra: Record<string, unknown> = {}): string {
  const file = path.join(dir, `agent-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify({
    cluster: 'c', node: 'n1', database: 'd', key: 'a key of sixteen bytes',
    heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: 7400 }] }, notify: { port: 7500 }, ...extra,
  }));
  return file;
}

/** ExecStart split into argv, with its --config pointed at `file`. */
function execStart(file: string): string[] {
  const argv = unitSettings().get('ExecStart')![0]!.split(/\s+/);
  const i = argv.indexOf('--config');
  expect(i).toBeGreaterThan(0);
  argv[i + 1] = file;
  return argv;
}

describe('the systemd unit', () => {
  it('systemd-analyze verify reads it without a warning where the install steps put takeover', () => {
    const r = withInstalledCommand(['systemd-analyze', 'verify', UNIT_FILE]);
    expect({ status: r.status, out: `${r.stdout}${r.stderr}` }).toEqual({ status: 0, out: '' });
    expect(unitSettings().get('ExecStart')![0]).toMatch(new RegExp(`^${INSTALLED} agent --config /etc/takeover/agent\\.yaml$`));
  });

  it('a bad config makes ExecStart exit with a status that RestartPreventExitStatus stops restarting', () => {
    const s = unitSettings();
    const prevent = s.get('RestartPreventExitStatus')![0]!.split(/\s+/).map(Number);
    const bad = withInstalledCommand(execStart(config({ notify: { port: 99999 } })));
    expect(bad.stderr).toMatch(/notify\.port: Too big/);
    expect(prevent).toContain(bad.status);
    // systemd tests RestartPreventExitStatus= on the main process only: a failing ExecStartPre
    // would be restarted every RestartSec, forever (StartLimitIntervalSec=0).
    expect(s.has('ExecStartPre')).toBe(false);
    const ok = withInstalledCommand([...execStart(config()), '--check']);
    expect([ok.status, ok.stdout]).toEqual([0, expect.stringMatching(/: valid: node n1 of cluster c/)]);
  });

  it('stopping: SIGTERM to the agent alone, which stops its instances itself, with the time its stop needs', () => {
    const s = unitSettings();
    expect(s.get('KillMode')).toEqual(['mixed']);
    expect(s.get('KillSignal')).toEqual(['SIGTERM']);
    expect(s.get('ExecReload')).toEqual(['/bin/kill -HUP $MAINPID']);
    // The agent's bound (docs/AGENT.md, "Stopping"): the instances' grace or a running plan's
    // 5 s deadline, then the callouts' timeout (5 s by default), and twice that for a fence.
    const bound = Math.max(STOP_GRACE_MS, 5000) + 5000;
    expect(Number(s.get('TimeoutStopSec')![0]) * 1000).toBeGreaterThanOrEqual(2 * bound);
    expect(s.get('Restart')).toEqual(['always']);
  });

  it('every capability it names is one the kernel knows (setpriv refuses an unknown name)', () => {
    const caps = unitSettings().get('CapabilityBoundingSet')![0]!.split(/\s+/);
    expect(caps).toEqual(expect.arrayContaining(['CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH']));
    const r = spawnSync('setpriv', [...unitPrivileges(), 'true'], { encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([0, '']);
  });
});

describe('the relay keeper\'s unit', () => {
  const settings = () => unitSettings(readFileSync(KEEPER_UNIT_FILE, 'utf8'));

  it('systemd-analyze verify reads it without a warning; its ExecStart is a keeper that never idles out, on its own runtime directory', () => {
    const r = withInstalledCommand(['systemd-analyze', 'verify', KEEPER_UNIT_FILE]);
    expect({ status: r.status, out: `${r.stdout}${r.stderr}` }).toEqual({ status: 0, out: '' });
    const s = settings();
    expect(s.get('ExecStart')![0]).toBe(`${INSTALLED} relay-keeper --socket /run/takeover-relay-keeper/keeper.sock --idle-exit-ms 0`);
    // Not the agent's /run/takeover, which a stop of the agent's unit removes.
    expect(s.get('RuntimeDirectory')).toEqual(['takeover-relay-keeper']);
    expect(unitSettings().get('RuntimeDirectory')).not.toEqual(s.get('RuntimeDirectory'));
    // The CLI takes ExecStart's arguments (a bad one would be exit 2: usage).
    const help = withInstalledCommand([INSTALLED, 'relay-keeper', '--help']);
    expect([help.status, help.stdout]).toEqual([0, expect.stringMatching(/--idle-exit-ms <ms>/)]);
    const bad = withInstalledCommand([INSTALLED, 'relay-keeper', '--socket', '/x', '--idle-exit-ms', '5']);
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringMatching(/--idle-exit-ms: must be 0 \(never\) or an integer number of ms, 100-86400000, got "5"/)]);
  });

  it('its one capability is known to the kernel (setpriv refuses an unknown name)', () => {
    expect(settings().get('CapabilityBoundingSet')).toEqual(['CAP_SYS_PTRACE']);
    const r = spawnSync('setpriv', [...unitPrivileges(KEEPER_UNIT_FILE), 'true'], { encoding: 'utf8' });
    expect([r.status, r.stderr]).toEqual([0, '']);
  });
});
