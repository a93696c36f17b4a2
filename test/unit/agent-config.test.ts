// The agent's config file: YAML and JSON, defaults filled in, and every kind of mistake named by
// its field path, before anything starts.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { ConfigError, configKey, loadConfig, parseConfig, validateConfig } from '../../src/agent/config.js';
import { prng } from './frame-builder.js';

const BASE = {
  cluster: 'c1',
  node: 'a',
  database: 'db',
  key: '0123456789abcdef',
  heartbeat: { links: [{ id: 0, address: '10.0.0.1', port: 7400 }] },
  peers: [{ node: 'b', links: [{ id: 0, address: '10.0.0.2', port: 7400 }] }],
  notify: { port: 7500 },
  instances: [
    { name: 'i1', node: 'a', pid: 1 },
    { name: 'i2', node: 'b' },
  ],
  services: [{ name: 'sales', members: ['i1', 'i2'] }],
};

function fieldOf(doc: unknown): string {
  try {
    validateConfig(doc, 'f');
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return `${(err as ConfigError).field}: ${(err as Error).message}`;
  }
  throw new Error('accepted');
}

const edit = (f: (c: any) => void) => {
  const c = structuredClone(BASE) as any;
  f(c);
  return c;
};

describe('agent config', () => {
  it('YAML and JSON give the same config, with defaults', () => {
    const yaml = `
cluster: c1
node: a
database: db
key: "0123456789abcdef"
heartbeat:
  links: [{ id: 0, address: 10.0.0.1, port: 7400 }]
peers:
  - node: b
    links: [{ id: 0, address: 10.0.0.2, port: 7400 }]
notify: { port: 7500 }
instances:
  - { name: i1, node: a, pid: 1 }
  - { name: i2, node: b }
services:
  - { name: sales, members: [i1, i2] }
`;
    const a = parseConfig(yaml);
    expect(a).toEqual(parseConfig(JSON.stringify(BASE)));
    expect(a.heartbeat).toMatchObject({ intervalMs: 100, misses: 3 });
    expect(a.notify.host).toBe('0.0.0.0');
    expect(a.instances[0]).toMatchObject({ ports: [], method: 'rst' });
  });

  it.each([
    ['an unknown field', (c: any) => (c.bogus = 1), 'bogus: f: bogus: unknown field'],
    ['an unknown nested field', (c: any) => (c.heartbeat.links[0].mtu = 1), 'heartbeat.links[0].mtu'],
    ['a bad address', (c: any) => (c.heartbeat.links[0].address = '10.0.0.300'), 'heartbeat.links[0].address'],
    ['a bad port', (c: any) => (c.notify.port = 70000), 'notify.port'],
    ['a string for a number', (c: any) => (c.heartbeat.intervalMs = '100'), 'heartbeat.intervalMs'],
    ['a short key', (c: any) => (c.key = 'short'), 'key'],
    ['both key and keyFile', (c: any) => (c.keyFile = '/k'), 'key: f: key: give exactly one'],
    ['a peer without a link', (c: any) => (c.peers[0].links[0].id = 1), 'peers[0].links'],
    ['a duplicate node', (c: any) => c.peers.push(structuredClone(c.peers[0])), 'peers[1].node'],
    ['an instance on an unknown node', (c: any) => (c.instances[1].node = 'z'), 'instances[1].node'],
    ['a local instance without a way to find it', (c: any) => delete c.instances[0].pid, 'instances[0]: f: instances[0]: an instance on this node needs exactly one'],
    ['restart without a command', (c: any) => (c.instances[0].restart = { maxFailures: 1, windowMs: 1000, backoffMs: 0 }), 'instances[0].restart'],
    ['an unknown member', (c: any) => c.services[0].members.push('i9'), 'services[0].members[2]'],
    ['an unknown probe kind', (c: any) => (c.instances[0].health = { probe: { kind: 'ping' } }), 'instances[0].health.probe.kind'],
    ['a bad close method', (c: any) => (c.instances[0].method = 'zap'), 'instances[0].method'],
    ['a bad name', (c: any) => (c.node = 'a b'), 'node'],
    ['a bad role', (c: any) => (c.instances[0].role = 'leader'), 'instances[0].role'],
    ['a disk that neither pulses nor watches', (c: any) => (c.disk = { device: '/dev/sg0' }), 'disk: f: disk: give pulse: true, watch: PEER, or both'],
    ['a disk watching an unknown peer', (c: any) => (c.disk = { device: '/dev/sg0', watch: 'z' }), 'disk.watch'],
    ['a disk timeout under 3 intervals', (c: any) => (c.disk = { device: '/dev/sg0', pulse: true, intervalMs: 200, timeoutMs: 400 }), 'disk.timeoutMs'],
  ])('%s is rejected with the field named', (_what, change, field) => {
    expect(fieldOf(edit(change)).startsWith(field)).toBe(true);
  });

  it('syntax errors, non-objects and unreadable files are ConfigErrors too', async () => {
    expect(() => parseConfig('a: [1, 2', 'x.yaml')).toThrow(/^x\.yaml: .*not valid YAML\/JSON/);
    expect(() => parseConfig('a: 1\na: 2\n', 'x.yaml')).toThrow(/not valid YAML\/JSON/);
    expect(() => parseConfig('- 1\n- 2\n', 'x.yaml')).toThrow(/must be a mapping/);
    expect(() => parseConfig('', 'x.yaml')).toThrow(ConfigError);
    expect(() => parseConfig('a: !vault x\n', 'x.yaml')).toThrow(/^x\.yaml: line 1: not valid YAML\/JSON: .*tag/i);
    await expect(loadConfig('/nonexistent/takeover.yaml')).rejects.toThrow(/cannot read: ENOENT/);
  });

  it('a peer\'s takeover is one service or a list; an address:port twice, or one address on two interfaces, is named', () => {
    const t = (port: number, o: object = {}) => ({ address: '10.0.0.12', port, interface: 'eth0', prefixLength: 24, ...o });
    const one = validateConfig(edit((c) => (c.peers[0].takeover = t(6379))));
    expect(one.peers[0]!.takeover).toEqual([{ ...t(6379), method: 'rst' }]);
    const two = validateConfig(edit((c) => (c.peers[0].takeover = [t(6379), t(5432, { method: 'goodbye:postgres' })])));
    expect(two.peers[0]!.takeover.map((x) => [x.port, x.method])).toEqual([[6379, 'rst'], [5432, 'goodbye:postgres']]);
    expect(validateConfig(BASE).peers[0]!.takeover).toEqual([]);
    expect(fieldOf(edit((c) => (c.peers[0].takeover = [t(6379), t(6379, { method: 'fin' })])))).toMatch(/^peers\[0\]\.takeover\[1\]: .*10\.0\.0\.12 port 6379 appears twice/);
    expect(fieldOf(edit((c) => (c.peers[0].takeover = [t(6379), t(5432, { interface: 'eth1' })])))).toMatch(/^peers\[0\]\.takeover\[1\]: .*one address, one interface and prefix length/);
    expect(fieldOf(edit((c) => (c.peers[0].takeover = [])))).toMatch(/^peers\[0\]\.takeover/);
  });

  it('a link-local takeover address is accepted on its interface; a zone suffix on it is refused, naming the field', () => {
    const ll = { address: 'fe80::7a6b:1', port: 5432, interface: 'eth1', prefixLength: 64 };
    expect(validateConfig(edit((c) => (c.peers[0].takeover = ll))).peers[0]!.takeover[0]).toMatchObject(ll);
    expect(fieldOf(edit((c) => (c.peers[0].takeover = { ...ll, address: 'fe80::7a6b:1%eth1' })))).toMatch(/^peers\[0\]\.takeover\.address: .*must not carry a zone/);
  });

  it('a command may have empty arguments (redis-server --save \'\'), not an empty program', () => {
    const ok = validateConfig(edit((c) => (c.instances[0] = { name: 'i1', node: 'a', command: ['redis-server', '--save', ''] })));
    expect(ok.instances[0]!.command).toEqual(['redis-server', '--save', '']);
    expect(fieldOf(edit((c) => (c.instances[0] = { name: 'i1', node: 'a', command: ['', 'x'] })))).toMatch(/^instances\[0\]\.command: .*the program/);
    expect(fieldOf(edit((c) => (c.instances[0] = { name: 'i1', node: 'a', command: [] })))).toMatch(/^instances\[0\]\.command/);
  });

  it('replication: defaults, and a rate below 16 KiB/s is named', () => {
    expect(validateConfig(BASE).replication).toEqual({ maxBytesPerSecond: 4 << 20, scanMs: 1000 });
    expect(fieldOf(edit((c) => (c.replication = { maxBytesPerSecond: 1000 })))).toMatch(/^replication\.maxBytesPerSecond: /);
    expect(fieldOf(edit((c) => (c.replication = { bogus: 1 })))).toMatch(/^replication\.bogus: .*unknown field/);
  });

  it('docs/examples/agent.yaml is a valid config', async () => {
    const c = await loadConfig(path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'docs', 'examples', 'agent.yaml'));
    expect(c.instances.map((i) => i.name)).toEqual(['appdb1', 'appdb2']);
    expect(c.peers[0]!.takeover).toMatchObject([{ address: '10.0.0.12', method: 'rst' }]);
  });

  it('fuzz: random edits of a valid config and random bytes give a config or a ConfigError, nothing else', () => {
    const rand = prng(0xc0f1);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const values = [null, true, 0, -1, 1.5, 2 ** 53, '', 'x', 'a b', '10.0.0.1', '::1', [], {}, [1], { id: 0 }, 'rst', 'goodbye:nope'];
    const text = readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'docs', 'examples', 'agent.yaml'), 'utf8');
    let accepted = 0;
    for (let i = 0; i < 1500; i++) {
      const doc = parseYaml(text) as Record<string, unknown>;
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) {
        // Walk to a random object inside and set, delete or add a key.
        let o: any = doc;
        for (let d = 0; d < 4 && typeof o === 'object' && o !== null; d++) {
          const keys = Object.keys(o);
          if (keys.length === 0 || rand() < 0.3) break;
          const next = o[pick(keys)];
          if (typeof next !== 'object' || next === null) break;
          o = next;
        }
        const keys = Object.keys(o);
        const r = rand();
        if (r < 0.4 && keys.length) o[pick(keys)] = pick(values);
        else if (r < 0.7 && keys.length) delete o[pick(keys)];
        else o[pick(['extra', 'port', 'node', 'id', '0'])] = pick(values);
      }
      try {
        validateConfig(doc);
        accepted++;
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        expect(err.field).not.toBe('');
      }
    }
    for (let i = 0; i < 1000; i++) {
      const bytes = Buffer.from(Array.from({ length: Math.floor(rand() * 200) }, () => Math.floor(rand() * 256)));
      const mutated = rand() < 0.5 ? bytes.toString('latin1') : text.slice(0, Math.floor(rand() * text.length)) + bytes.toString('utf8');
      try {
        parseConfig(mutated);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
      }
    }
    expect(accepted).toBeGreaterThan(0); // some edits are harmless (e.g. an optional field removed)
  });

  it('reads the key from keyFile, and refuses a short one', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tko-cfg-'));
    try {
      writeFileSync(path.join(dir, 'k'), 'k'.repeat(32));
      writeFileSync(path.join(dir, 'short'), 'k');
      const c = validateConfig(edit((c) => ((c.keyFile = path.join(dir, 'k')), delete c.key)));
      expect((await configKey(c)).toString()).toBe('k'.repeat(32));
      const s = validateConfig(edit((c) => ((c.keyFile = path.join(dir, 'short')), delete c.key)));
      await expect(configKey(s)).rejects.toThrow(/keyFile: the key must be at least 16 bytes/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
