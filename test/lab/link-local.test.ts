// A link-local service address (fe80::/10, 169.254.0.0/16) on the second link of a backup with
// two interfaces, taken over with `takeover close-peers` as an operator runs it. Every interface
// has a route for link-local addresses, and here the backup's routing table prefers eth0 on
// purpose (a more specific route): the forged segments must still leave through the takeover's
// interface, eth1, where the peers are, and the client's connection must end.
import { afterEach, describe, expect, it } from 'vitest';
import { run } from '../../src/lab/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath } from '../../src/lab/node-child.js';
import { runCli } from '../cli-process.js';
import { readEnding } from './scenario.js';

let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

const cases = [
  {
    family: 6,
    // The service's own address on the second link; the client's, so that it is not tentative.
    server: 'fe80::7a6b:a', client: 'fe80::7a6b:c', prefix: 64, nodad: ['nodad'],
    // A more specific route on eth0 than the link's fe80::/64 on eth1: the table alone picks eth0.
    decoy: ['-6', 'route', 'add', 'fe80::7a6b:0/112', 'dev', 'eth0'],
  },
  {
    family: 4,
    server: '169.254.77.1', client: '169.254.77.3', prefix: 16, nodad: [],
    decoy: ['route', 'add', '169.254.77.0/24', 'dev', 'eth0'],
  },
];

describe.each(cases)('IPv$family link-local service address on the backup\'s second interface', (c) => {
  it('close-peers --takeover-address --interface eth1: the segments leave through eth1 and the client is reset', async () => {
    lab = await Lab.create({ hosts: ['client', 'server', 'backup'], failsafeLink: true });
    const l = lab;
    const ip = (host: string, args: string[]) => run('ip', ['-n', l.host(host).ns, ...args]);
    await ip('server', ['addr', 'add', `${c.server}/${c.prefix}`, 'dev', 'eth1', ...c.nodad]);
    await ip('client', ['addr', 'add', `${c.client}/${c.prefix}`, 'dev', 'eth1', ...c.nodad]);
    await ip('backup', c.decoy);
    const server = l.spawn('server', fixturePath('server'), ['--port', '7000']);
    await server.waitFor('listening');
    const target = c.family === 6 ? `${c.server}%eth1` : c.server;
    const client = l.spawn('client', fixturePath('client'), ['--host', target, '--port', '7000', '--request', 'PING\n']);
    const { localAddress, localPort } = await client.waitFor('connected');
    const peerAddress = String(localAddress).split('%')[0]!;
    expect(peerAddress).toBe(c.client);
    // Precondition of the fault: without the interface, the backup's kernel would route to eth0.
    expect((await ip('backup', [...(c.family === 6 ? ['-6'] : []), 'route', 'get', c.client])).stdout).toMatch(/ dev eth0 /);

    await l.killSilently('server', 'nft');
    const peer = c.family === 6 ? `[${peerAddress}]:${localPort}` : `${peerAddress}:${localPort}`;
    const r = await runCli(
      ['close-peers', '--address', c.server, '--port', '7000', '--peers', peer, '--takeover-address', '--interface', 'eth1', '--prefix-length', String(c.prefix), '--json'],
      { netns: l.host('backup').ns },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ connections: 1, failed: 0, takeovers: [{ interface: 'eth1', address: c.server, added: true }] });
    expect(await readEnding(client)).toMatchObject({ event: 'error', code: 'ECONNRESET' });
  });
});

describe('a link-local address on two interfaces', () => {
  it('close-peers without --interface is a usage error naming both; a zone (%eth1) names the interface', async () => {
    lab = await Lab.create({ hosts: ['backup'], failsafeLink: true });
    const ns = lab.host('backup').ns;
    for (const dev of ['eth0', 'eth1']) await run('ip', ['-n', ns, 'addr', 'add', 'fe80::7a6b:a/64', 'dev', dev, 'nodad']);
    const args = ['--port', '7000', '--peers', '[fe80::7a6b:c]:40000', '--timeout-ms', '300', '--json'];
    // Four CLI processes at once: three usage errors (nothing done) and the one that runs, whose
    // address the others never touch.
    const [ambiguous, contradicting, zoneOnGlobal, named] = await Promise.all([
      runCli(['close-peers', '--address', 'fe80::7a6b:a', ...args], { netns: ns }),
      runCli(['close-peers', '--address', 'fe80::7a6b:a%eth1', '--interface', 'eth0', ...args], { netns: ns }),
      runCli(['close-peers', '--address', 'fd7a:6b00::1%eth1', ...args], { netns: ns }),
      runCli(['close-peers', '--address', 'fe80::7a6b:a%eth1', ...args], { netns: ns }),
    ]);
    expect([ambiguous.code, ambiguous.stderr]).toEqual([2, 'takeover: --address fe80::7a6b:a is link-local and on eth0, eth1: pass --interface (or fe80::7a6b:a%IF)\n']);
    expect([contradicting.code, contradicting.stderr]).toEqual([2, 'takeover: --address names interface eth1 (%eth1) but --interface is eth0\n']);
    expect([zoneOnGlobal.code, zoneOnGlobal.stderr]).toEqual([2, 'takeover: --address: a zone (%eth1) goes only with a link-local address, got "fd7a:6b00::1%eth1"\n']);
    // Named by its zone, it runs: nobody answers the probes there, so the connection is reported failed (exit 1).
    expect(named.code).toBe(1);
    expect(JSON.parse(named.stdout)).toMatchObject({ connections: 1, failed: 1 });
  });
});
