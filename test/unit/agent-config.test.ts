// The agent's config file: YAML and JSON, defaults filled in, and every kind of mistake named by
// its field path, before anything starts.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { ConfigError, configKey, configWarnings, loadConfig, parseConfig, validateConfig } from '../../src/agent/config.js';
import { prng } from './frame-builder.js';
import { DEFAULT_MARGIN_MS } from '../../src/net/shadow/replay-match.js';

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
    expect(a.instances[0]).toMatchObject({ ports: [], method: 'rst', drainMs: 30_000 });
    expect(a.instances[0]!.stopGraceMs).toBeUndefined(); // DEFAULT_STOP_GRACE_MS, for command instances
    expect(a.stateDir).toBeUndefined(); // the control socket's directory / node
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
    ['stopGraceMs without a command', (c: any) => (c.instances[0].stopGraceMs = 1000), 'instances[0].stopGraceMs: f: instances[0].stopGraceMs: only an instance started by command is stopped by the agent'],
    ['a negative drain time', (c: any) => (c.instances[0].drainMs = -1), 'instances[0].drainMs'],
    ['an empty state directory', (c: any) => (c.stateDir = ''), 'stateDir'],
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

  /** A store.etcd section over mutual TLS; `over` replaces its fields. */
  const etcd = (over: object = {}) => ({ etcd: { endpoints: ['https://10.0.0.11:2379'], tls: { ca: '/etc/takeover/etcd-ca.pem' }, ...over } });

  // Configs whose every field parses but that cannot work as written (issue 10 item 4).
  const t = (o: object = {}) => ({ address: '10.0.0.12', port: 5432, interface: 'eth0', prefixLength: 24, ...o });
  const lease = (o: object = {}) => ({ address: '10.0.0.100', interface: 'eth0', prefixLength: 24, ...o });
  const twoLinks = (c: any, own: object, peer: object = { id: 1, address: '10.1.0.2', port: 7400 }) => {
    c.heartbeat.links.push(own);
    c.peers[0].links.push(peer);
  };
  it.each<[string, (c: any) => unknown, string, RegExp]>([
    ['a link id twice in heartbeat.links', (c: any) => twoLinks(c, { id: 0, address: '10.1.0.1', port: 7400 }), 'heartbeat.links[1].id', /link id 0 is also heartbeat\.links\[0\]'s/],
    ['a link id twice for one peer', (c: any) => c.peers[0].links.push({ id: 0, address: '10.0.0.3', port: 7400 }), 'peers[0].links[1].id', /link id 0 appears twice for node b/],
    ['a peer link absent from heartbeat.links', (c: any) => c.peers[0].links.push({ id: 1, address: '10.1.0.2', port: 7400 }), 'peers[0].links[1].id', /no link 1 in heartbeat\.links/],
    ['an IPv4 prefix over 32', (c: any) => (c.peers[0].takeover = t({ prefixLength: 33 })), 'peers[0].takeover.prefixLength', /from 1 to 32 for the IPv4 address 10\.0\.0\.12, got 33/],
    ['an IPv4 prefix of 0', (c: any) => (c.peers[0].takeover = t({ prefixLength: 0 })), 'peers[0].takeover.prefixLength', /from 1 to 32/],
    ['an IPv6 prefix that used to be widened to 64', (c: any) => (c.peers[0].takeover = t({ address: 'fd00::12', prefixLength: 24 })), 'peers[0].takeover.prefixLength', /from 64 to 128 for the IPv6 address fd00::12, got 24 .*applied as written, never widened/],
    ['a peer at 0.0.0.0', (c: any) => (c.peers[0].links[0].address = '0.0.0.0'), 'peers[0].links[0].address', /reaches this host itself/],
    ['a peer at ::', (c: any) => ((c.heartbeat.links[0].address = 'fd00::1'), (c.peers[0].links[0].address = '::')), 'peers[0].links[0].address', /reaches this host itself/],
    ['a peer at a multicast address', (c: any) => (c.peers[0].links[0].address = '224.0.0.18'), 'peers[0].links[0].address', /is a multicast address/],
    ['a peer at an IPv6 multicast address', (c: any) => ((c.heartbeat.links[0].address = 'fd00::1'), (c.peers[0].links[0].address = 'ff02::12')), 'peers[0].links[0].address', /is a multicast address/],
    ['a peer at the broadcast address', (c: any) => (c.peers[0].links[0].address = '255.255.255.255'), 'peers[0].links[0].address', /is a broadcast address/],
    ['an IPv6 peer link on an IPv4 link', (c: any) => (c.peers[0].links[0].address = 'fd00::2'), 'peers[0].links[0].address', /fd00::2 is IPv6 but this node's link 0 \(heartbeat\.links\[0\]\) is IPv4/],
    ['an IPv4 peer link on an IPv6 link', (c: any) => (c.heartbeat.links[0].address = 'fd00::1'), 'peers[0].links[0].address', /10\.0\.0\.2 is IPv4 but this node's link 0 .* is IPv6/],
    ['a peer at this node\'s own link', (c: any) => (c.peers[0].links[0].address = '10.0.0.1'), 'peers[0].links[0].address', /is this node's own heartbeat\.links\[0\]/],
    ['two peers at one address and port', (c: any) => c.peers.push({ node: 'c', links: [{ id: 0, address: '10.0.0.2', port: 7400 }] }), 'peers[1].links[0].address', /also peers\[0\]\.links\[0\] \(node b\)/],
    ['two links on one address and port', (c: any) => twoLinks(c, { id: 1, address: '10.0.0.1', port: 7400 }), 'heartbeat.links[1]', /overlaps heartbeat\.links\[0\]/],
    ['a link under 0.0.0.0 on the same port', (c: any) => ((c.heartbeat.links[0].address = '0.0.0.0'), twoLinks(c, { id: 1, address: '10.1.0.1', port: 7400 })), 'heartbeat.links[1]', /10\.1\.0\.1:7400 overlaps heartbeat\.links\[0\] \(0\.0\.0\.0:7400\)/],
    ['an IPv4 link under a dual-stack ::', (c: any) => ((c.heartbeat.links[0].address = '::'), (c.peers[0].links[0].address = 'fd00::2'), twoLinks(c, { id: 1, address: '10.1.0.1', port: 7400 })), 'heartbeat.links[1]', /overlaps heartbeat\.links\[0\] \(\[::\]:7400\)/],
    ['a multicast link address', (c: any) => (c.heartbeat.links[0].address = '239.1.1.1'), 'heartbeat.links[0].address', /is a multicast address/],
    ['one takeover address under two peers', (c: any) => ((c.peers[0].takeover = t()), c.peers.push({ node: 'c', links: [{ id: 0, address: '10.0.0.3', port: 7400 }], takeover: t({ port: 6379 }) })), 'peers[1].takeover.address', /taken over from node b too \(peers\[0\]\.takeover\)/],
    ['a takeover of this node\'s own link address', (c: any) => (c.peers[0].takeover = t({ address: '10.0.0.1' })), 'peers[0].takeover.address', /this node's own address \(heartbeat\.links\[0\]\)/],
    ['a takeover of this node\'s notify address', (c: any) => ((c.notify.host = '10.0.0.5'), (c.peers[0].takeover = t({ address: '10.0.0.5' }))), 'peers[0].takeover.address', /this node's own address \(notify\.host\)/],
    ['a loopback takeover address', (c: any) => (c.peers[0].takeover = t({ address: '127.0.0.9' })), 'peers[0].takeover.address', /is a loopback address/],
    ['a multicast takeover address', (c: any) => (c.peers[0].takeover = t({ address: '224.1.1.1' })), 'peers[0].takeover.address', /is a multicast address/],
    ['an unspecified takeover address', (c: any) => (c.peers[0].takeover = t({ address: '0.0.0.0' })), 'peers[0].takeover.address', /is an unspecified address/],
    ['a takeover interface name with a slash', (c: any) => (c.peers[0].takeover = t({ interface: 'eth/0' })), 'peers[0].takeover.interface', /must be an interface name/],
    ['a multicast notify host', (c: any) => (c.notify.host = '224.0.0.1'), 'notify.host', /is a multicast address/],
    ['an address lease of this node\'s own link address', (c: any) => (c.addressLease = { addresses: [lease({ address: '10.0.0.1' })] }), 'addressLease.addresses[0].address', /is heartbeat\.links\[0\]: the agent's own address must not run out/],
    ['an address lease of notify.host', (c: any) => ((c.notify.host = '10.0.0.5'), (c.addressLease = { addresses: [lease({ address: '10.0.0.5' })] })), 'addressLease.addresses[0].address', /is notify\.host/],
    ['an address lease of an address taken over from a peer', (c: any) => ((c.peers[0].takeover = t({ address: '10.0.0.100' })), (c.addressLease = { addresses: [lease()] })), 'addressLease.addresses[0].address', /taken over from node b \(peers\[0\]\.takeover\): a lease is for this node's own service address/],
    ['an address leased twice', (c: any) => (c.addressLease = { addresses: [lease(), lease({ interface: 'eth1' })] }), 'addressLease.addresses[1].address', /is also addressLease\.addresses\[0\]/],
    ['an IPv6 lease prefix under 64', (c: any) => (c.addressLease = { addresses: [lease({ address: 'fd00::100', prefixLength: 24 })] }), 'addressLease.addresses[0].prefixLength', /from 64 to 128/],
    ['an IPv4 lease prefix of 0', (c: any) => (c.addressLease = { addresses: [lease({ prefixLength: 0 })] }), 'addressLease.addresses[0].prefixLength', /from 1 to 32/],
    ['a multicast leased address', (c: any) => (c.addressLease = { addresses: [lease({ address: '224.1.1.1' })] }), 'addressLease.addresses[0].address', /is a multicast address/],
    ['a leased address with a zone', (c: any) => (c.addressLease = { addresses: [lease({ address: 'fe80::1%eth0', prefixLength: 64 })] }), 'addressLease.addresses[0].address', /must not carry a zone/],
    ['a lease of 1 s', (c: any) => (c.addressLease = { seconds: 1, addresses: [lease()] }), 'addressLease.seconds', /greater than or equal to 2|>=2/],
    ['a lease too short for slow heartbeats', (c: any) => ((c.heartbeat.intervalMs = 1000), (c.addressLease = { seconds: 3, addresses: [lease()] })), 'addressLease.seconds', /3 s is too short for heartbeat\.intervalMs 1000: .*at least 1 s \+ 3 heartbeat intervals \(4 s\)/],
    ['a lease without addresses', (c: any) => (c.addressLease = { addresses: [] }), 'addressLease.addresses', /at least 1|>=1/],
    ['an unknown lease field', (c: any) => (c.addressLease = { addresses: [lease()], renewMs: 100 }), 'addressLease.renewMs', /unknown field/],
    ...(['pid', 'pidFile', 'command', 'restart', 'health', 'ports', 'method'] as const).map((f) => {
      const v = { pid: 7, pidFile: '/run/i2.pid', command: ['i2d'], restart: { maxFailures: 1, windowMs: 1000, backoffMs: 0 }, health: { probe: { kind: 'tcp', host: '10.0.0.2', port: 5432 } }, ports: [5432], method: 'rst' }[f];
      return [`${f} for an instance on another node`, (c: any) => (c.instances[1][f] = v), `instances[1].${f}`, new RegExp(`instance i2 runs on node b: only b's agent reads ${f} \\(this agent, node a, would ignore it\\)`)] as [string, (c: any) => unknown, string, RegExp];
    }),
    ['a port twice in one instance', (c: any) => (c.instances[0].ports = [5432, 5433, 5432]), 'instances[0].ports[2]', /port 5432 appears twice/],
    ['one port in two instances of this node', (c: any) => ((c.instances[0].ports = [5432]), c.instances.push({ name: 'i3', node: 'a', pid: 2, ports: [6379, 5432] })), 'instances[2].ports[1]', /port 5432 is also instance i1's \(instances\[0\]\)/],
    ['a goodbye for an instance without ports', (c: any) => (c.instances[0].method = 'goodbye:postgres'), 'instances[0].method', /goodbye:postgres needs ports/],
    ['a member twice in a service', (c: any) => c.services[0].members.push('i1'), 'services[0].members[2]', /instance i1 appears twice/],
    ['a multicast TCP probe', (c: any) => (c.instances[0].health = { probe: { kind: 'tcp', host: '224.0.0.1', port: 1 } }), 'instances[0].health.probe.host', /multicast/],
    ['a relative control path', (c: any) => (c.control = 'run/a.sock'), 'control', /must be an absolute path/],
    ['a relative keyFile', (c: any) => ((c.keyFile = 'cluster.key'), delete c.key), 'keyFile', /must be an absolute path/],
    ['a relative pidFile', (c: any) => ((c.instances[0].pidFile = 'pg.pid'), delete c.instances[0].pid), 'instances[0].pidFile', /must be an absolute path/],
    ['a relative uptime log', (c: any) => (c.uptimeLog = 'uptime.jsonl'), 'uptimeLog', /must be an absolute path/],
    ['a relative callouts dir', (c: any) => (c.callouts = { dir: 'callouts' }), 'callouts.dir', /must be an absolute path/],
    ['a relative fencing device', (c: any) => (c.fencing = { devices: ['/dev/sdb', 'sdc'] }), 'fencing.devices[1]', /must be an absolute path/],
    ['a control socket path cut short', (c: any) => (c.control = `/run/${'x'.repeat(103)}`), 'control', /is 108 bytes: a Unix socket path holds at most 107/],
    ['a relative relay keeper socket', (c: any) => (c.relayKeeper = { socket: 'keeper.sock' }), 'relayKeeper.socket', /must be an absolute path/],
    ['a relay keeper socket cut short', (c: any) => (c.relayKeeper = { socket: `/run/${'x'.repeat(103)}` }), 'relayKeeper.socket', /is 108 bytes: a Unix socket path holds at most 107/],
    ['a default relay keeper socket cut short', (c: any) => ((c.relayKeeper = {}), (c.stateDir = `/run/${'x'.repeat(90)}`)), 'relayKeeper.socket', /the default relay keeper socket \/run\/x+\/relay-keeper\.sock is 113 bytes/],
    ['an unknown relayKeeper field', (c: any) => (c.relayKeeper = { path: '/run/k.sock' }), 'relayKeeper.path', /unknown field/],
    ['https endpoints without tls', (c: any) => (c.store = etcd({ tls: undefined })), 'store.etcd.tls', /missing: the endpoints are https:\/\/ \(https:\/\/10\.0\.0\.11:2379\), which needs tls: \{ ca: the CA that signed the members' certificates \}/],
    ['an http endpoint with tls', (c: any) => (c.store = etcd({ endpoints: ['https://10.0.0.11:2379', 'http://10.0.0.12:2379'] })), 'store.etcd.endpoints[1]', /http:\/\/10\.0\.0\.12:2379 is http:\/\/, but tls is given: the members serve TLS at https:\/\/ URLs/],
    ['an endpoint that is neither http nor https', (c: any) => (c.store = etcd({ endpoints: ['grpc://10.0.0.11:2379'] })), 'store.etcd.endpoints[0]', /must be http:\/\/ADDRESS:PORT, or https:\/\/ADDRESS:PORT with tls/],
    ['a client certificate without its key', (c: any) => (c.store = etcd({ tls: { ca: '/etc/takeover/etcd-ca.pem', cert: '/etc/takeover/etcd-client.pem' } })), 'store.etcd.tls.key', /give cert and key together \(mutual TLS\), or neither/],
    ['a key without its certificate', (c: any) => (c.store = etcd({ tls: { ca: '/etc/takeover/etcd-ca.pem', key: '/etc/takeover/etcd-client.key' } })), 'store.etcd.tls.cert', /give cert and key together/],
    ['a relative CA path', (c: any) => (c.store = etcd({ tls: { ca: 'etcd-ca.pem' } })), 'store.etcd.tls.ca', /must be an absolute path/],
    ['an unknown tls field', (c: any) => (c.store = etcd({ tls: { ca: '/etc/takeover/etcd-ca.pem', insecureSkipVerify: true } })), 'store.etcd.tls.insecureSkipVerify', /unknown field/],
    ['a password in the config', (c: any) => (c.store = etcd({ auth: { user: 'takeover', password: 'secret' } })), 'store.etcd.auth.password', /a password is never written in the configuration: put it in a file .* and give passwordFile/],
    ['a relative password file', (c: any) => (c.store = etcd({ auth: { user: 'takeover', passwordFile: 'etcd.password' } })), 'store.etcd.auth.passwordFile', /must be an absolute path/],
    ['auth without a password file', (c: any) => (c.store = etcd({ auth: { user: 'takeover' } })), 'store.etcd.auth.passwordFile', /expected string/],
    ['an etcd user with a colon', (c: any) => (c.store = etcd({ auth: { user: 'root:secret', passwordFile: '/etc/takeover/etcd.password' } })), 'store.etcd.auth.user', /must be an etcd user name: 1-128 characters, no spaces or colons/],
    ['a default control socket path cut short', (c: any) => ((c.node = 'n'.repeat(100)), (c.instances[0].node = c.node)), 'control', /the default control socket \/run\/takeover\/n+\.sock is 119 bytes/],
  ])('%s is rejected with the field named', (_what, change, field, message) => {
    const got = fieldOf(edit(change));
    expect(got.startsWith(`${field}: f: ${field}: `), got).toBe(true);
    expect(got).toMatch(message);
  });

  it('what looks alike but works is accepted: TCP notify on a heartbeat (UDP) port, IPv6 /64-/128, a slow probe, a peer on loopback', () => {
    // The notification server is TCP, heartbeats UDP: one port number, two sockets that never collide.
    expect(validateConfig(edit((c) => (c.notify = { host: '10.0.0.1', port: 7400 }))).notify.port).toBe(7400);
    for (const prefixLength of [64, 96, 128]) validateConfig(edit((c) => (c.peers[0].takeover = t({ address: 'fd00::12', prefixLength }))));
    // A probe that takes longer than its interval delays the next one (they never overlap): allowed.
    validateConfig(edit((c) => (c.instances[0].health = { probe: { kind: 'tcp', host: '127.0.0.1', port: 5432 }, intervalMs: 100, timeoutMs: 1000 })));
    // Two agents of one host (tests, a lab) on loopback: different ports, one address.
    validateConfig(edit((c) => ((c.heartbeat.links[0].address = '127.0.0.1'), (c.peers[0].links[0] = { id: 0, address: '127.0.0.1', port: 7401 }))));
    // Links on different addresses share a port; 0.0.0.0 and an IPv6 address do not overlap.
    validateConfig(edit((c) => twoLinks(c, { id: 1, address: '10.1.0.1', port: 7400 })));
    validateConfig(edit((c) => ((c.heartbeat.links[0].address = '0.0.0.0'), twoLinks(c, { id: 1, address: 'fd00::1', port: 7400 }, { id: 1, address: 'fd00::2', port: 7400 }))));
    // One address, several ports, one peer (the earlier rule of one interface and prefix holds).
    validateConfig(edit((c) => (c.peers[0].takeover = [t(), t({ port: 6379 })])));
    // An address lease: 10 s unless given; as short as 2 s at 100 ms heartbeats, or 4 s at 1 s.
    expect(validateConfig(edit((c) => (c.addressLease = { addresses: [lease()] }))).addressLease).toEqual({ seconds: 10, addresses: [lease()] });
    validateConfig(edit((c) => (c.addressLease = { seconds: 2, addresses: [lease(), lease({ address: 'fd00::100', prefixLength: 64 })] })));
    validateConfig(edit((c) => ((c.heartbeat.intervalMs = 1000), (c.addressLease = { seconds: 4, addresses: [lease()] }))));
    // Defaults of the fields only this node reads are still filled in for its own instances.
    expect(validateConfig(BASE).instances.map((i) => [i.ports, i.method])).toEqual([[[], 'rst'], [[], 'rst']]);
  });

  it('store.etcd: plain http, TLS with the CA alone, mutual TLS, and auth by a password file are accepted as written', () => {
    expect(validateConfig(edit((c) => (c.store = { etcd: { endpoints: ['http://10.0.0.11:2379'] } }))).store!.etcd).toEqual({ endpoints: ['http://10.0.0.11:2379'], callTimeoutMs: 2000 });
    expect(validateConfig(edit((c) => (c.store = etcd()))).store!.etcd!.tls).toEqual({ ca: '/etc/takeover/etcd-ca.pem' });
    const full = {
      endpoints: ['https://10.0.0.11:2379', 'https://[fd00::12]:2379', 'https://etcd3.example:2379'],
      tls: { ca: '/etc/takeover/etcd-ca.pem', cert: '/etc/takeover/etcd-client.pem', key: '/etc/takeover/etcd-client.key' },
      auth: { user: 'takeover', passwordFile: '/etc/takeover/etcd.password' },
    };
    expect(validateConfig(edit((c) => (c.store = { etcd: full }))).store!.etcd).toEqual({ ...full, callTimeoutMs: 2000 });
    // The node lease by default: 2 s on the file store, 5 s on etcd (it must outlast an etcd
    // leader election); as written when given.
    expect(validateConfig(edit((c) => (c.store = { etcd: { endpoints: ['http://10.0.0.11:2379'] } }))).store!.leaseMs).toBe(5000);
    expect(validateConfig(edit((c) => (c.store = { file: '/var/lib/takeover/apps.json' }))).store!.leaseMs).toBe(2000);
    expect(validateConfig(edit((c) => (c.store = { etcd: { endpoints: ['http://10.0.0.11:2379'] }, leaseMs: 3000 }))).store!.leaseMs).toBe(3000);
    // Auth without TLS is etcd's to allow (the password then crosses the network in clear).
    validateConfig(edit((c) => (c.store = { etcd: { endpoints: ['http://10.0.0.11:2379'], auth: full.auth } })));
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

  it('a takeover may capture the peer\'s traffic on a port mirror\'s interface (capture); absent, there is none; a bad name is named', () => {
    const t = (o: object = {}) => ({ address: '10.0.0.12', port: 5432, interface: 'eth0', prefixLength: 24, ...o });
    expect(validateConfig(edit((c) => (c.peers[0].takeover = t({ capture: 'mir0' })))).peers[0]!.takeover[0]).toEqual({ ...t({ capture: 'mir0' }), method: 'rst' });
    expect(validateConfig(edit((c) => (c.peers[0].takeover = t()))).peers[0]!.takeover[0]!.capture).toBeUndefined();
    expect(fieldOf(edit((c) => (c.peers[0].takeover = t({ capture: '' }))))).toMatch(/^peers\[0\]\.takeover\.capture/);
    expect(fieldOf(edit((c) => (c.peers[0].takeover = t({ capture: 'a/b' }))))).toMatch(/^peers\[0\]\.takeover\.capture/);
  });

  describe('a takeover\'s continue section', () => {
    const t = (c?: object) => ({ address: '10.0.0.100', port: 6379, interface: 'eth0', prefixLength: 24, ...(c ? { continue: c } : {}) });
    it('parses with its defaults (upstream on 127.0.0.1, 5 s to promote); absent, there is none', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, promote: ['redis-cli', 'REPLICAOF', 'NO', 'ONE'] }))));
      expect(c.peers[0]!.takeover[0]!.continue).toEqual({ protocol: 'resp', mirror: 'mir0', upstream: { host: '127.0.0.1', port: 6380 }, promote: ['redis-cli', 'REPLICAOF', 'NO', 'ONE'], promoteTimeoutMs: 5000 });
      expect(validateConfig(edit((x) => (x.peers[0].takeover = t()))).peers[0]!.takeover[0]!.continue).toBeUndefined();
    });
    it('promotes a Redis upstream with one RESP command of its own ({ resp }), protocol resp only', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, promote: { resp: ['REPLICAOF', 'NO', 'ONE'] } }))));
      expect(c.peers[0]!.takeover[0]!.continue).toMatchObject({ promote: { resp: ['REPLICAOF', 'NO', 'ONE'] } });
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, promote: { resp: ['REPLICAOF', 'NO', 'ONE'] } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.promote: .*for protocol resp only/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, promote: { resp: [] } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.promote/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, promote: { resp: ['REPLICAOF'], shell: 1 } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.promote/);
    });
    it('matches unanswered writes against the replication stream (matchWrites): resp only, from a mirror or a stream', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, matchWrites: {} }))));
      expect(c.peers[0]!.takeover[0]!.continue).toMatchObject({ matchWrites: { probeIntervalMs: 50 } });
      const withPrimary = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, matchWrites: { primary: { host: '10.0.0.1', port: 6379 }, probeIntervalMs: 20 } }))));
      expect(withPrimary.peers[0]!.takeover[0]!.continue).toMatchObject({ matchWrites: { primary: { host: '10.0.0.1', port: 6379 }, probeIntervalMs: 20 } });
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'http', mirror: 'mir0', upstream: { port: 8080 }, matchWrites: {} }))))).toMatch(/^peers\[0\]\.takeover\.continue\.matchWrites: .*protocol resp/);
      const streamed = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', stream: { host: '10.0.0.1', port: 7000 }, upstream: { port: 6380 }, matchWrites: {} }))));
      expect(streamed.peers[0]!.takeover[0]!.continue!.matchWrites).toEqual({ probeIntervalMs: 50, marginMs: DEFAULT_MARGIN_MS });
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, matchWrites: { probeIntervalMs: 5 } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.matchWrites\.probeIntervalMs/);
    });
    it('continues PostgreSQL sessions, logging in with the password in passwordFile', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, passwordFile: '/etc/takeover/pg.pw' }))));
      expect(c.peers[0]!.takeover[0]!.continue).toMatchObject({ protocol: 'postgres', passwordFile: '/etc/takeover/pg.pw', upstream: { host: '127.0.0.1', port: 5433 } });
    });
    it('checks PostgreSQL replays against the WAL the standby received (walCheck): postgres with a mirror only', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, walCheck: { primary: { host: '10.0.0.1' } } }))));
      expect(c.peers[0]!.takeover[0]!.continue!.walCheck).toEqual({ primary: { host: '10.0.0.1', port: 5432 }, interface: 'any' });
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, walCheck: { primary: { host: '10.0.0.1' } } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.walCheck: .*walCheck is for protocol postgres \(it reads/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 5433 }, walCheck: { primary: { host: '10.0.0.1' } } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.walCheck: .*walCheck needs a mirror, not a stream/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, walCheck: { primary: { host: 'db1' } } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.walCheck\.primary\.host/);
    });
    it('takes a PostgreSQL switchover\'s catch-up login (switchover): postgres with a stream only', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 5433 }, switchover: { primary: { host: '10.0.0.1' }, user: 'takeover' } }))));
      expect(c.peers[0]!.takeover[0]!.continue!.switchover).toEqual({ primary: { host: '10.0.0.1', port: 5432 }, user: 'takeover' });
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 6380 }, switchover: { primary: { host: '10.0.0.1' }, user: 'x' } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.switchover: .*switchover is for protocol postgres/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, switchover: { primary: { host: '10.0.0.1' }, user: 'x' } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.switchover: .*needs a stream, not a mirror/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 5433 }, switchover: { primary: { host: '10.0.0.1' } } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.switchover\.user/);
      // The lock closes the service address: the catch-up must reach the primary at its own.
      const service = t().address;
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 5433 }, switchover: { primary: { host: service }, user: 'x' } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.switchover\.primary\.host: .*is the service address 10.0.0.100, which a switchover's lock closes: give the primary's own address/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 5433 }, switchover: { primary: { host: '10.0.0.1' }, user: 'x', password: 'y' } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.switchover/);
    });
    it('warns of a PostgreSQL continue without promote, or replaying unproven requests as sent', () => {
      const bare = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, unproven: 'as-sent' }))));
      expect(configWarnings(bare).filter((w) => w.startsWith('peers[0].takeover.continue'))).toEqual([
        'peers[0].takeover.continue: no promote: a standby upstream stays read-only at a takeover, and every replayed write fails there',
        expect.stringMatching(/^peers\[0\]\.takeover\.continue: unproven: as-sent: a session's unanswered request is replayed without knowing whether the dead primary committed it/),
      ]);
      // A mirror alone replays unproven requests read-only by default: nothing to warn of.
      const mirror = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, promote: ['pg_ctl', 'promote'] }))));
      expect(configWarnings(mirror).filter((w) => w.startsWith('peers[0]'))).toEqual([]);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, unproven: 'as-sent', walCheck: { primary: { host: '10.0.0.1' } } }))))).toMatch(/^peers\[0\]\.takeover\.continue\.unproven: .*drop one of them/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'resp', mirror: 'mir0', upstream: { port: 6380 }, unproven: 'reset' }))))).toMatch(/^peers\[0\]\.takeover\.continue\.unproven: .*for protocol postgres/);
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, unproven: 'maybe' }))))).toMatch(/^peers\[0\]\.takeover\.continue\.unproven/);
      const full = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'postgres', mirror: 'mir0', upstream: { port: 5433 }, promote: ['pg_ctl', 'promote'], walCheck: { primary: { host: '10.0.0.1' } } }))));
      expect(configWarnings(full).filter((w) => w.startsWith('peers[0]'))).toEqual([]);
    });
    it('continues HTTP/1.1 connections (no session to rebuild)', () => {
      const c = validateConfig(edit((x) => (x.peers[0].takeover = t({ protocol: 'http', mirror: 'mir0', upstream: { port: 8080 } }))));
      expect(c.peers[0]!.takeover[0]!.continue).toMatchObject({ protocol: 'http', upstream: { host: '127.0.0.1', port: 8080 } });
    });
    it('takes the peer agent\'s stream instead of a mirror; the peer serves it with connectionStream', () => {
      const c = validateConfig(edit((x) => {
        x.peers[0].takeover = t({ protocol: 'resp', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 6380 } });
        x.connectionStream = { address: '10.0.0.2', port: 7402 };
      }));
      expect(c.peers[0]!.takeover[0]!.continue).toMatchObject({ stream: { host: '10.0.0.1', port: 7402 } });
      expect(c.connectionStream).toEqual({ address: '10.0.0.2', port: 7402 });
      expect(fieldOf(edit((x) => (x.connectionStream = { address: '10.0.0.2' })))).toMatch(/^connectionStream\.port/);
      expect(fieldOf(edit((x) => (x.connectionStream = { address: 'here', port: 1 })))).toMatch(/^connectionStream\.address/);
    });
    it('connectionStream.outputCommit: the services held, the queue (default 7420) and maxHoldMs (default 500)', () => {
      const c = validateConfig(edit((x) => (x.connectionStream = { address: '10.0.0.2', port: 7402, outputCommit: { services: [{ address: '10.0.0.10', port: 6379 }] } })));
      expect(c.connectionStream!.outputCommit).toEqual({ services: [{ address: '10.0.0.10', port: 6379 }], queue: 7420, maxHoldMs: 500 });
      expect(fieldOf(edit((x) => (x.connectionStream = { address: '10.0.0.2', port: 7402, outputCommit: { services: [] } })))).toMatch(/^connectionStream\.outputCommit\.services/);
      expect(fieldOf(edit((x) => (x.connectionStream = { address: '10.0.0.2', port: 7402, outputCommit: { services: [{ address: '10.0.0.10', port: 1 }], queue: 65535 } })))).toMatch(/^connectionStream\.outputCommit\.queue/);
      expect(fieldOf(edit((x) => (x.connectionStream = { address: '10.0.0.2', port: 7402, outputCommit: { services: [{ address: '10.0.0.10', port: 1 }], maxHoldMs: 0 } })))).toMatch(/^connectionStream\.outputCommit\.maxHoldMs/);
    });
    it.each([
      [{ protocol: 'http2', mirror: 'mir0', upstream: { port: 1 } }, /^peers\[0\]\.takeover\.continue\.protocol/],
      [{ protocol: 'http', mirror: 'mir0', upstream: { port: 1 }, passwordFile: '/etc/takeover/pg.pw' }, /^peers\[0\]\.takeover\.continue\.passwordFile: .*is for protocol postgres/],
      [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, passwordFile: '/etc/takeover/pg.pw' }, /^peers\[0\]\.takeover\.continue\.passwordFile: .*is for protocol postgres/],
      [{ protocol: 'postgres', mirror: 'mir0', upstream: { port: 1 }, passwordFile: 'pg.pw' }, /^peers\[0\]\.takeover\.continue\.passwordFile: .*absolute/],
      [{ protocol: 'resp', upstream: { port: 1 } }, /^peers\[0\]\.takeover\.continue: .*needs exactly one source: mirror/],
      [{ protocol: 'resp', mirror: 'mir0', stream: { host: '10.0.0.1', port: 7402 }, upstream: { port: 1 } }, /^peers\[0\]\.takeover\.continue: .*needs exactly one source/],
      [{ protocol: 'resp', stream: { host: 'peer-a', port: 7402 }, upstream: { port: 1 } }, /^peers\[0\]\.takeover\.continue\.stream\.host/],
      [{ protocol: 'resp', stream: { host: '10.0.0.1', port: 0 }, upstream: { port: 1 } }, /^peers\[0\]\.takeover\.continue\.stream\.port/],
      [{ protocol: 'resp', mirror: 'mir0' }, /^peers\[0\]\.takeover\.continue\.upstream/],
      [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 0 } }, /^peers\[0\]\.takeover\.continue\.upstream\.port/],
      [{ protocol: 'resp', mirror: 'mir0', upstream: { host: 'localhost', port: 1 } }, /^peers\[0\]\.takeover\.continue\.upstream\.host/],
      [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, promote: [] }, /^peers\[0\]\.takeover\.continue\.promote/],
      [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, promoteTimeoutMs: 10 }, /^peers\[0\]\.takeover\.continue\.promoteTimeoutMs/],
      [{ protocol: 'resp', mirror: 'mir0', upstream: { port: 1 }, extra: 1 }, /^peers\[0\]\.takeover\.continue\.extra: .*unknown field/],
    ])('refuses %j, naming the field (inside one takeover, not only "Invalid input")', (c, field) => {
      expect(fieldOf(edit((x) => (x.peers[0].takeover = t(c))))).toMatch(field);
    });
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

  it('nice: -10 by default, any nice value -20..19 as written, an integer', () => {
    expect(validateConfig(BASE).nice).toBe(-10);
    expect(validateConfig(edit((c) => (c.nice = 0))).nice).toBe(0);
    expect(validateConfig(edit((c) => (c.nice = -20))).nice).toBe(-20);
    expect(fieldOf(edit((c) => (c.nice = -21)))).toMatch(/^nice: /);
    expect(fieldOf(edit((c) => (c.nice = 20)))).toMatch(/^nice: /);
    expect(fieldOf(edit((c) => (c.nice = -5.5)))).toMatch(/^nice: /);
  });

  it('docs/examples/agent.yaml is a valid config', async () => {
    const c = await loadConfig(path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'docs', 'examples', 'agent.yaml'));
    expect(c.instances.map((i) => i.name)).toEqual(['appdb1', 'appdb2']);
    expect(c.peers[0]!.takeover).toMatchObject([{ address: '10.0.0.12', method: 'rst' }]);
  });

  it('docs/CLUSTER.md\'s store over TLS with auth is a valid store section as written', () => {
    const doc = readFileSync(path.join(path.dirname(new URL(import.meta.url).pathname), '..', '..', 'docs', 'CLUSTER.md'), 'utf8');
    const block = /### TLS and authentication[\s\S]*?```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    expect(block).toBeDefined();
    const { store } = parseYaml(block!) as { store: unknown };
    expect(validateConfig(edit((c) => (c.store = store))).store).toEqual({
      etcd: {
        endpoints: ['https://10.0.0.11:2379', 'https://10.0.0.12:2379', 'https://10.0.0.13:2379'],
        callTimeoutMs: 2000,
        tls: { ca: '/etc/takeover/etcd/ca.pem', cert: '/etc/takeover/etcd/node1.pem', key: '/etc/takeover/etcd/node1-key.pem' },
        auth: { user: 'takeover', passwordFile: '/etc/takeover/etcd/password' },
      },
      leaseMs: 5000,
    });
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
