// Bad CLI input: one clear line on stderr, exit code 2, and nothing done.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../cli-process.js';


/**
 * `withoutCapabilities`: root with an empty bounding set, so it execs with no capability at all
 * yet still reads the checkout wherever it is (another user could not read a 0700 mktemp dir).
 */
function cli(args: string[], withoutCapabilities = false) {
  const argv = [process.execPath, CLI, ...args];
  const cmd = withoutCapabilities ? ['setpriv', '--inh-caps=-all', '--ambient-caps=-all', '--bounding-set=-all', ...argv] : argv;
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', cwd: path.dirname(CLI) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.trim() };
}

/**
 * The argument-error table's cases in one process (test/unit/fixtures/cli-batch.mjs: main.js
 * evaluated afresh per case), each with the result a process of its own gives; a sample of them
 * is run as processes of their own too, and must give the very same result.
 */
const BATCH = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'cli-batch.mjs');
function cliBatch(cases: string[][]): Array<ReturnType<typeof cli>> {
  const r = spawnSync(process.execPath, [BATCH, CLI, JSON.stringify(cases)], { encoding: 'utf8', cwd: path.dirname(CLI) });
  if (r.status !== 0) throw new Error(`the CLI batch failed (status ${r.status}): ${r.stderr}`);
  const results = JSON.parse(r.stdout) as Array<ReturnType<typeof cli>>;
  if (results.length !== cases.length) throw new Error(`the CLI batch gave ${results.length} results for ${cases.length} cases`);
  return results;
}

const flowsDir = mkdtempSync(path.join(tmpdir(), 'tko-cli-'));
afterAll(() => rmSync(flowsDir, { recursive: true, force: true }));
const badFlows = path.join(flowsDir, 'flows.jsonl');
writeFileSync(badFlows, '{"time":1,"flows":[{"a":{"address":"198.18.0.1"},"b":{},"state":"ESTABLISHED"}]}\n');

const argumentErrors: Array<[string[], RegExp]> = [
    [['close-peers'], /exactly one of --pid or --address/],
    [['close-peers', '--pid', 'abc'], /--pid must be an integer from 1 to 4194304, got "abc"/],
    [['close-peers', '--pid', '-5'], /--pid must be an integer from 1 to 4194304, got "-5"/],
    [['close-peers', '--pid', '1', '--address', '198.18.0.1'], /exactly one of --pid or --address/],
    [['close-peers', '--pid', '1', '--peers', '198.18.0.1:1'], /--peers goes with --address/],
    [['close-peers', '--pid', '1', '--method', 'kill'], /--method: unknown close method "kill"/],
    [['close-peers', '--pid', '1', '--method', 'goodbye:smtp'], /unknown goodbye protocol "smtp"/],
    [['close-peers', '--address', '1.2.3', '--port', '1', '--peers', '198.18.0.2:1'], /--address must be an IPv4 or IPv6 address, got "1.2.3"/],
    [['close-peers', '--address', '198.18.0.1', '--peers', '198.18.0.2:1'], /--address needs --port/],
    [['close-peers', '--address', '198.18.0.1', '--port', '70000', '--peers', '198.18.0.2:1'], /--port must be an integer from 1 to 65535, got "70000"/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:1', '--timeout-ms', '-5'], /^takeover: --timeout-ms must be an integer from 1 to 600000, got "-5"$/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:1', '--timeout-ms', '1.5'], /--timeout-ms must be an integer from 1 to 600000, got "1\.5"/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:1', '--interface', 'nosuch0'], /^takeover: --interface: nosuch0 is not an interface of this host$/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:1', '--prefix-length', '24'], /--prefix-length goes with --takeover-address/],
    [['close-peers', '--address', 'fd7a:6b00::1', '--port', '7000', '--peers', '[fd7a:6b00::2]:1', '--takeover-address', '--interface', 'lo', '--prefix-length', '24'], /--prefix-length must be an integer from 64 to 128 for the IPv6 address fd7a:6b00::1, got "24"/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:1', '--takeover-address', '--interface', 'lo', '--prefix-length', '33'], /--prefix-length must be an integer from 1 to 32 for the IPv4 address 198\.18\.0\.1, got "33"/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000'], /needs --peers or --from-flows/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2'], /--peers: expected ADDRESS:PORT/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '[fd7a:6b00::2]:5'], /not of the same family/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:5', '--takeover-address'], /--takeover-address needs --interface/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--from-flows', '/nonexistent/flows'], /--from-flows: .*ENOENT/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--from-flows', badFlows], /--from-flows: .*flows\[0\]\.a\.port: not a number/],
    [['close-peers', '--address', '198.18.0.1', '--port', '7000', '--peers', '198.18.0.2:5'], /198\.18\.0\.1 is not an address of this host/],
    [['close-peers', '--bogus'], /^takeover: unknown option '--bogus'$/],
    [['close-peers', '--pid', '1', '--porrt', '5'], /^takeover: unknown option '--porrt' \(did you mean --port\?\)$/],
    [['clos-peers'], /^takeover: unknown command 'clos-peers' \(did you mean close-peers\?\)$/],
    [['agent'], /^takeover: required option '--config <file>' not specified$/],
    [['service', 'stop'], /^takeover: missing required argument 'name'$/],
    [['status', 'extra'], /^takeover: too many arguments for 'status'/],
    [['flows'], /give --interface IF \(flows seen here\) or --peer NODE/],
    [['flows', '--peer', 'db2', '--interface', 'lo'], /--peer reads the agent's copy: it takes no --interface/],
    [['flows', '--interface', 'lo', '--interval-ms', '-5'], /^takeover: --interval-ms must be an integer from 10 to 3600000, got "-5"$/],
    [['flows', '--interface', 'lo', '--count', '0'], /--count must be an integer from 1 to 1000000000, got "0"/],
    [['flows', '--interface', 'no/such/if'], /--interface must be an interface name/],
    [['flows', '--interface', 'nosuch0'], /^takeover: --interface: nosuch0 is not an interface of this host$/],
    [['nonsense'], /^takeover: unknown command 'nonsense'$/],
    [['scsi', 'zap', '/dev/null'], /the action must be one of inquiry, keys/],
    [['scsi', 'reserve', '/dev/null', '--type', 'wero'], /--key is required for this action/],
    [['scsi', 'reserve', '/dev/null', '--key', '0', '--type', 'wero'], /--key: a key must be between 1 and 2\^64-1: "0"/],
    [['scsi', 'reserve', '/dev/null', '--key', '0x1ffffffffffffffff', '--type', 'wero'], /--key: a key is 0x followed by up to 16 hex digits/],
    [['scsi', 'reserve', '/dev/null', '--key', '5', '--type', '2'], /--type: reservation type must be one of/],
    [['scsi', 'reserve', '/dev/null', '--key', '5'], /--type is required/],
    [['scsi', 'preempt', '/dev/null', '--key', '5', '--type', 'wero'], /--victim is required/],
    [['scsi', 'keys', '/dev/null', '--aptpl'], /--aptpl goes with register/],
    [['scsi', 'keys', '/dev/null', '--timeout-ms', '0'], /--timeout-ms must be an integer from 1 to 3600000, got "0"/],
    [['scsi', 'keys', '/dev/null', '--timeout-ms', '-5'], /--timeout-ms must be an integer from 1 to 3600000, got "-5"/],
    [['fence', 'b', '--devices', '/dev/null'], /give --config FILE, or --cluster, --node and --nodes/],
    [['fence', 'b', '--cluster', 'c', '--node', 'a', '--nodes', 'a,b'], /--devices is required/],
    [['fence', 'a', '--devices', '/dev/null', '--cluster', 'c', '--node', 'a', '--nodes', 'a,b'], /refusing to fence this node \(a\)/],
    [['fence', 'z', '--devices', '/dev/null', '--cluster', 'c', '--node', 'a', '--nodes', 'a,b'], /unknown node z/],
];

describe('takeover CLI argument errors', () => {
  let batched: Array<ReturnType<typeof cli>>;
  beforeAll(() => {
    batched = cliBatch(argumentErrors.map(([args]) => args));
  });

  it.each(argumentErrors.map(([args, message], i) => [args, message, i] as const))('%j', (_args, message, i) => {
    const r = batched[i]!;
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    // One line, in one style: ours and commander's errors alike.
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(r.stderr.startsWith('takeover: ')).toBe(true);
  });

  it('a process of its own gives each case the result the batch gave (a sample: commander\'s errors, ours, a file read, an address check)', () => {
    for (const i of [1, 12, 20, 22, 23, 26, 29, 36, 47]) {
      const [args] = argumentErrors[i]!;
      expect(cli(args), JSON.stringify(args)).toEqual(batched[i]);
    }
  });

  it('missing privileges: one line naming the capability, exit 2', () => {
    const flows = cli(['flows', '--interface', 'lo', '--count', '1'], true);
    expect(flows).toMatchObject({ code: 2, stdout: '' });
    expect(flows.stderr).toBe('takeover: flows needs CAP_NET_RAW (run as root): missing privileges');
    const close = cli(['close-peers', '--pid', '1', '--method', 'fin'], true);
    expect(close.code).toBe(2);
    expect(close.stderr).toBe('takeover: close-peers --pid needs CAP_NET_ADMIN and CAP_SYS_PTRACE (run as root): missing privileges');
  });

  it('a device that is not SCSI or does not exist: one line, exit 1', () => {
    expect(cli(['scsi', 'keys', '/dev/null'])).toMatchObject({ code: 1, stdout: '', stderr: 'takeover: ENOTTY: Inappropriate ioctl for device, ioctl' });
    expect(cli(['scsi', 'keys', '/dev/no-such-sg'])).toMatchObject({ code: 1, stderr: 'takeover: cannot open /dev/no-such-sg: ENOENT' });
  });

  it('no agent to talk to: one line, exit 1 (cannot be reached); several: exit 2 (say which)', () => {
    // The default control directory, as this machine has it, is replaced in a mount namespace of
    // the command alone: empty, then with two sockets' names in it.
    const inEmptyRun = (setup: string, args: string[]) => {
      const argv = [process.execPath, CLI, ...args].map((a) => `'${a}'`).join(' ');
      const r = spawnSync('unshare', ['-m', 'sh', '-c', `mkdir -p /run/takeover && mount -t tmpfs none /run/takeover && ${setup} exec ${argv}`], { encoding: 'utf8', cwd: path.dirname(CLI) });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr.trim() };
    };
    expect(inEmptyRun('', ['status'])).toMatchObject({ code: 1, stdout: '', stderr: 'takeover: no agent found under /run/takeover: is `takeover agent` running? (or give --control / --config)' });
    expect(inEmptyRun('touch /run/takeover/a.sock /run/takeover/b.sock &&', ['flows', '--peer', 'b'])).toMatchObject({ code: 2, stderr: 'takeover: several agents under /run/takeover: give --control or --config' });
  });

  describe('agent configs: one line naming the field, exit 2 for --check; host-specific checks said so', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tko-cli-agent-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const write = (name: string, lines: string[]) => {
      const file = path.join(dir, name);
      writeFileSync(file, ['cluster: c', 'node: a', 'database: d', 'key: 0123456789abcdef', `control: ${path.join(dir, 'a.sock')}`, 'notify: { host: 127.0.0.1, port: 0 }', ...lines].join('\n'));
      return file;
    };
    const links = (own: string, peer = '{ id: 0, address: 127.0.0.1, port: 27401 }') => [`heartbeat: { links: [${own}] }`, `peers: [{ node: b, links: [${peer}] }]`];
    const ok = '{ id: 0, address: 127.0.0.1, port: 27400 }';

    it.each([
      ['a link id twice', [...links(`${ok}, { id: 0, address: 127.0.0.2, port: 27400 }`)], /heartbeat\.links\[1\]\.id: link id 0 is also heartbeat\.links\[0\]'s/],
      ['a peer link id that heartbeat.links lacks', [...links(ok, '{ id: 0, address: 127.0.0.1, port: 27401 }, { id: 1, address: 127.0.0.1, port: 27402 }')], /peers\[0\]\.links\[1\]\.id: no link 1 in heartbeat\.links/],
      ['an IPv6 takeover prefix that would have been widened', [`heartbeat: { links: [${ok}] }`, 'peers: [{ node: b, links: [{ id: 0, address: 127.0.0.1, port: 27401 }], takeover: { address: "fd00::12", port: 5432, interface: lo, prefixLength: 24 } }]'], /peers\[0\]\.takeover\.prefixLength: must be from 64 to 128 for the IPv6 address fd00::12, got 24/],
    ])('%s', (_what, lines, message) => {
      const file = write('bad.yaml', lines);
      for (const args of [['agent', '--check', '--config', file], ['agent', '--config', file]]) {
        const r = cli(args);
        expect(r).toMatchObject({ code: 2, stdout: '' });
        expect(r.stderr.split('\n')).toHaveLength(1);
        expect(r.stderr.startsWith(`takeover: ${file}: `)).toBe(true);
        expect(r.stderr).toMatch(message);
      }
    });

    it('--check: a takeover interface that is not on this host, exit 2, said to be host-specific', () => {
      const file = write('if.yaml', [`heartbeat: { links: [${ok}] }`, 'peers: [{ node: b, links: [{ id: 0, address: 127.0.0.1, port: 27401 }], takeover: { address: 198.18.0.12, port: 5432, interface: nosuch0, prefixLength: 24 } }]']);
      expect(cli(['agent', '--check', '--config', file])).toEqual({ code: 2, stdout: '', stderr: `takeover: ${file}: peers[0].takeover.interface: nosuch0 is not an interface of this host (a host-specific check, made on this host only)` });
    });

    it('start with a link address that is not this host\'s: the same clear line (not bind EADDRNOTAVAIL), exit 1 so a service manager retries', () => {
      const file = write('addr.yaml', links('{ id: 0, address: 198.51.100.7, port: 27400 }', '{ id: 0, address: 198.51.100.8, port: 27401 }'));
      const line = `takeover: ${file}: heartbeat.links[0].address: 198.51.100.7 is not an address of this host (a host-specific check, made on this host only)`;
      expect(cli(['agent', '--config', file])).toEqual({ code: 1, stdout: '', stderr: line });
      expect(cli(['agent', '--check', '--config', file])).toEqual({ code: 2, stdout: '', stderr: line });
    });

    it('--check that passes lists what it checked on this host', () => {
      const file = write('good.yaml', [...links(ok), `callouts: { dir: ${dir} }`]);
      const r = cli(['agent', '--check', '--config', file]);
      expect(r.code).toBe(0);
      expect(r.stdout.split('\n')).toEqual([
        `${file}: valid: node a of cluster c, 1 peer(s), instances here: none, 0 service(s)`,
        `${file}: host-specific, checked on this host only:`,
        '  heartbeat.links[0].address: 127.0.0.1 is an address of this host',
        '  notify.host: 127.0.0.1 is an address of this host',
        `  control: ${dir} is a directory`,
        `  callouts.dir: ${dir} is a directory`,
        '',
      ]);
    });
  });

  it('--help and --version exit 0', () => {
    const r = cli(['close-peers', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--method <method>');
    const { version } = JSON.parse(readFileSync(path.join(path.dirname(CLI), '..', '..', 'package.json'), 'utf8')) as { version: string };
    expect(cli(['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` });
  });
});
