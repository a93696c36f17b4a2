// Host-specific checks of a valid agent config: each field that cannot hold on this host is named
// (and said to be host-specific), and what was checked is listed when all hold.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/agent/config.js';
import { checkHost, HostCheckError } from '../../src/agent/host-checks.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-host-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'file'), '');
const script = path.join(dir, 'probe.sh');
writeFileSync(script, '#!/bin/sh\nexit 0\n');
chmodSync(script, 0o755);

const base = () => ({
  cluster: 'c', node: 'a', database: 'd', key: '0123456789abcdef',
  control: path.join(dir, 'run', 'a.sock'),
  heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: 7400 }] },
  peers: [{ node: 'b', links: [{ id: 0, address: '127.0.0.1', port: 7401 }], takeover: { address: '198.18.0.12', port: 5432, interface: 'lo', prefixLength: 24 } }],
  notify: { host: '127.0.0.1', port: 0 },
  instances: [{ name: 'i1', node: 'a', command: ['sleep', '600'], health: { probe: { kind: 'exec', command: [script] } } }],
  callouts: { dir },
  uptimeLog: path.join(dir, 'uptime.jsonl'),
  fencing: { devices: ['/dev/null'] },
});

async function problem(change: (c: any) => void): Promise<string> {
  const c = base() as any;
  change(c);
  const err = await checkHost(validateConfig(c, 'x.yaml'), 'x.yaml').then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(HostCheckError);
  return (err as Error).message;
}

describe('host-specific checks', () => {
  it('all hold: each checked field and what was found', async () => {
    const checked = await checkHost(validateConfig(base()));
    expect(checked.map((h) => h.field)).toEqual([
      'heartbeat.links[0].address', 'notify.host', 'peers[0].takeover.interface', 'control', 'callouts.dir', 'uptimeLog', 'fencing.devices[0]', 'instances[0].command', 'instances[0].health.probe.command',
    ]);
    expect(checked.find((h) => h.field === 'peers[0].takeover.interface')!.found).toBe('lo exists');
    expect(checked.find((h) => h.field === 'control')!.found).toBe(`${path.join(dir, 'run')} can be created under ${dir}`);
    expect(checked.find((h) => h.field === 'instances[0].command')!.found).toMatch(/\/sleep is executable$/);
  });

  it('output commit: iptables (and ip6tables for an IPv6 service) is installed', async () => {
    const c = base() as any;
    c.connectionStream = { address: '127.0.0.1', port: 7402, outputCommit: { services: [{ address: '127.0.0.1', port: 6379 }, { address: '::1', port: 6379 }] } };
    const checked = await checkHost(validateConfig(c));
    expect(checked.find((h) => h.field === 'connectionStream.outputCommit')!.found).toMatch(/\/iptables is executable, .*\/ip6tables is executable$/);
    const saved = process.env.PATH;
    process.env.PATH = dir; // no iptables here
    try {
      expect(await problem((x) => (x.connectionStream = c.connectionStream))).toBe('x.yaml: connectionStream.outputCommit: iptables is not an executable in PATH (a host-specific check, made on this host only)');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('a takeover\'s capture interface (a port mirror) is checked as the takeover\'s own', async () => {
    const c = base() as any;
    c.peers[0].takeover.capture = 'lo';
    const checked = await checkHost(validateConfig(c));
    expect(checked.find((h) => h.field === 'peers[0].takeover.capture')).toEqual({ field: 'peers[0].takeover.capture', found: 'lo exists' });
  });

  it('wildcard addresses have nothing to check', async () => {
    const c = base() as any;
    c.heartbeat.links[0].address = '0.0.0.0';
    c.notify.host = '::';
    c.peers[0].links[0].address = '127.0.0.2';
    const fields = (await checkHost(validateConfig(c))).map((h) => h.field);
    expect(fields).not.toContain('heartbeat.links[0].address');
    expect(fields).not.toContain('notify.host');
  });

  it.each([
    ['a link address not on this host', (c: any) => (c.heartbeat.links[0].address = '198.51.100.7'), 'heartbeat.links[0].address: 198.51.100.7 is not an address of this host'],
    ['a notify host not on this host', (c: any) => (c.notify.host = '198.51.100.8'), 'notify.host: 198.51.100.8 is not an address of this host'],
    ['a takeover interface that does not exist', (c: any) => (c.peers[0].takeover.interface = 'nosuch0'), 'peers[0].takeover.interface: nosuch0 is not an interface of this host'],
    ['a takeover capture interface that does not exist', (c: any) => (c.peers[0].takeover.capture = 'mir9'), 'peers[0].takeover.capture: mir9 is not an interface of this host (the port mirror must arrive on one)'],
    ['a leased address on an interface that does not exist', (c: any) => (c.addressLease = { addresses: [{ address: '198.18.0.20', interface: 'lo', prefixLength: 32 }, { address: '198.18.0.21', interface: 'nosuch2', prefixLength: 32 }] }), 'addressLease.addresses[1].interface: nosuch2 is not an interface of this host'],
    ['one of several takeovers', (c: any) => (c.peers[0].takeover = [c.peers[0].takeover, { ...c.peers[0].takeover, address: '198.18.0.13', interface: 'nosuch1' }]), 'peers[0].takeover[1].interface: nosuch1 is not an interface of this host'],
    ['a callouts dir that does not exist', (c: any) => (c.callouts.dir = path.join(dir, 'nope')), `callouts.dir: ${path.join(dir, 'nope')} does not exist`],
    ['a callouts dir that is a file', (c: any) => (c.callouts.dir = path.join(dir, 'file')), `callouts.dir: ${path.join(dir, 'file')} is not a directory`],
    ['a control path under a file', (c: any) => (c.control = path.join(dir, 'file', 'sub', 'a.sock')), `control: ${path.join(dir, 'file')} is not a directory: ${path.join(dir, 'file', 'sub', 'a.sock')} cannot be created`],
    ['a control path that is a file', (c: any) => (c.control = path.join(dir, 'file')), `control: ${path.join(dir, 'file')} exists and is not a socket: the agent would have to delete it`],
    ['an uptime log in a missing directory', (c: any) => (c.uptimeLog = path.join(dir, 'nope', 'u.jsonl')), `uptimeLog: ${path.join(dir, 'nope')} does not exist: ${path.join(dir, 'nope', 'u.jsonl')} cannot be created`],
    ['an uptime log that is a directory', (c: any) => (c.uptimeLog = dir), `uptimeLog: ${dir} is not a regular file`],
    ['a fencing device that does not exist', (c: any) => (c.fencing.devices = ['/dev/null', '/dev/no-such-lun']), 'fencing.devices[1]: /dev/no-such-lun does not exist'],
    ['a disk device that is a file', (c: any) => ((c.disk = { device: path.join(dir, 'file'), pulse: true }), (c.fencing = undefined)), `disk.device: ${path.join(dir, 'file')} is not a device`],
    ['a pid that does not exist', (c: any) => (c.instances[0] = { name: 'i1', node: 'a', pid: 2 ** 22 + 7 }), `instances[0].pid: no process ${2 ** 22 + 7} on this host`],
    ['a program not in PATH', (c: any) => (c.instances[0].command = ['no-such-program-tko']), 'instances[0].command: no-such-program-tko is not an executable in PATH'],
    ['a probe program that is not executable', (c: any) => (c.instances[0].health.probe.command = [path.join(dir, 'file')]), `instances[0].health.probe.command: ${path.join(dir, 'file')} is not an executable file`],
  ])('%s: the field, what is wrong, and that the check is host-specific', async (_what, change, message) => {
    expect(await problem(change)).toBe(`x.yaml: ${message} (a host-specific check, made on this host only)`);
  });
});
