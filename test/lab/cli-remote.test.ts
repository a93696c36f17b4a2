// The CLI's remote path end to end, run inside the backup's namespace as an operator would, on a
// switch (a learning bridge): `takeover flows --json` records the flows on a port mirror of the
// server's port (Lab.mirrorPort: the backup's mir0), `takeover close-peers --from-flows` or
// `--peers` ends the connections of the dead server from the backup's eth0, and the exit code
// says whether all were closed. Only the --from-flows case needs the mirror: --peers learns the
// numbers by probing, whose answers come to the taken-over address on eth0.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startCli } from '../cli-process.js';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath, type NodeChild } from '../../src/lab/node-child.js';
import { run } from '../../src/lab/exec.js';
import { eventually } from './eventually.js';
import { readEnding } from './scenario.js';

let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

const cliIn = (ns: string, args: string[]) => startCli(args, { netns: ns });

/** The lab, its server listening; with `mirror`, the server's port mirrored to the backup (its interface's name). */
async function setup(options: { mirror?: boolean } = {}): Promise<{ lab: Lab; server: string; mirror?: string }> {
  lab = await Lab.create({ hosts: ['client', 'server', 'backup'] });
  const mirror = options.mirror ? (await lab.mirrorPort('server', 'backup')).ifname : undefined;
  const server = lab.host('server').ipv4;
  const srv = lab.spawn('server', fixturePath('server'), ['--port', '7000']);
  await srv.waitFor('listening');
  return { lab, server, ...(mirror ? { mirror } : {}) };
}

async function connectClient(l: Lab, server: string): Promise<{ client: NodeChild; clientPort: number }> {
  const client = l.spawn('client', fixturePath('client'), ['--host', server, '--port', '7000', '--request', 'PING\n']);
  const { localPort } = await client.waitFor('connected');
  return { client, clientPort: Number(localPort) };
}

describe('takeover CLI, remote side', () => {
  it('flows --json records the flows; close-peers --from-flows --takeover-address resets with the tracked seq', async () => {
    const s = await setup({ mirror: true });
    const dir = mkdtempSync(path.join(tmpdir(), 'tko-flows-'));
    const file = path.join(dir, 'flows.jsonl');
    const flows = cliIn(s.lab.host('backup').ns, ['flows', '--interface', s.mirror!, '--port', '7000', '--json', '--interval-ms', '100']);
    // The capture is up before the client connects: flows opens its capture socket (FlowTracker's
    // constructor), then prints its first line one interval later; waited for, not a fixed 1.5 s.
    const upBy = Date.now() + 10_000;
    while (!flows.stdout().includes('\n') && flows.child.exitCode === null && Date.now() < upBy) await new Promise((r) => setTimeout(r, 20));
    expect(flows.stdout(), 'flows printed its first line (its capture is up)').toContain('\n');
    const { client, clientPort } = await connectClient(s.lab, s.server);
    const deadline = Date.now() + 5000;
    while (!flows.stdout().includes(`"port":${clientPort}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    flows.child.kill('SIGTERM');
    const f = await flows.done;
    expect(f.code).toBe(0);
    writeFileSync(file, f.stdout);
    const last = JSON.parse(f.stdout.trim().split('\n').pop()!);
    expect(last).toMatchObject({ interface: s.mirror, flows: [{ state: 'ESTABLISHED', handshakeSeen: true }] });

    await s.lab.killSilently('server', 'nft');
    const close = cliIn(s.lab.host('backup').ns, ['close-peers', '--address', s.server, '--port', '7000', '--from-flows', file, '--takeover-address', '--interface', 'eth0', '--json']);
    const r = await close.done;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ connections: 1, failed: 0, takeovers: [{ address: s.server, added: true }] });
    expect(doc.results[0]).toMatchObject({ peer: { port: clientPort }, outcome: 'reset', seqSource: 'tracked', verified: true });
    expect(await readEnding(client)).toMatchObject({ event: 'error', code: 'ECONNRESET' });
    rmSync(dir, { recursive: true, force: true });
  });

  it('close-peers --peers --method fin: an untracked connection learned by probing gets EOF; the table is printed', async () => {
    const s = await setup();
    const { client, clientPort } = await connectClient(s.lab, s.server);
    await s.lab.killSilently('server', 'nft');
    const close = cliIn(s.lab.host('backup').ns, ['close-peers', '--address', s.server, '--port', '7000', '--peers', `${s.lab.host('client').ipv4}:${clientPort}`, '--takeover-address', '--interface', 'eth0', '--method', 'fin']);
    const r = await close.done;
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/LOCAL\s+PEER\s+METHOD\s+ACTION\s+SEQ\s+SEQ FROM\s+RESULT/);
    expect(r.stdout).toMatch(/fin\s+fin\s+\d+\s+dup-ack\s+closed/);
    expect(r.stdout).toContain('1 of 1 connections closed');
    expect(await readEnding(client)).toMatchObject({ event: 'end' });
  });

  it('a peer that never answers is reported as failed, exit code 1', async () => {
    const s = await setup();
    await s.lab.killSilently('server', 'nft');
    const nobody = s.server.replace(/\.\d+$/, '.99');
    const close = cliIn(s.lab.host('backup').ns, ['close-peers', '--address', s.server, '--port', '7000', '--peers', `${nobody}:40000`, '--takeover-address', '--interface', 'eth0', '--json']);
    const r = await close.done;
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout);
    expect(doc).toMatchObject({ connections: 1, failed: 1 });
    expect(doc.results[0]).toMatchObject({ ok: false, outcome: 'failed', error: expect.stringMatching(/no answer to probes after 3 attempts/) });
  });

  it("--takeover-address of an IPv6 address the backup holds as 'dadfailed tentative': replaced, said on stderr, the client reset, a new client refused", async () => {
    lab = await Lab.create({ hosts: ['client', 'server', 'backup'] });
    const l = lab;
    const address = l.host('server').ipv6;
    // Configured on the backup while the server held it: DAD fails, the address stays unusable.
    await run('ip', ['-n', l.host('backup').ns, 'addr', 'add', `${address}/64`, 'dev', 'eth0']);
    await eventually(async () => {
      const { stdout } = await run('ip', ['-n', l.host('backup').ns, '-6', 'addr', 'show', 'dev', 'eth0', 'to', address]);
      return stdout.includes('dadfailed') ? true : undefined;
    }, 5000, 'DAD to fail on the backup');
    const srv = l.spawn('server', fixturePath('server'), ['--port', '7000']);
    await srv.waitFor('listening');
    const client = l.spawn('client', fixturePath('client'), ['--host', address, '--port', '7000', '--request', 'PING\n']);
    const { localPort } = await client.waitFor('connected');

    await l.killSilently('server', 'nft');
    const r = await cliIn(l.host('backup').ns, ['close-peers', '--address', address, '--port', '7000', '--peers', `[${l.host('client').ipv6}]:${localPort}`, '--takeover-address', '--interface', 'eth0']).done;
    expect(r.stderr).toBe(`takeover: ${address} was on eth0 but could not serve (dadfailed tentative): removed and added again\n`);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('1 of 1 connections closed');
    expect(await readEnding(client)).toMatchObject({ event: 'error', code: 'ECONNRESET' });
    // The address serves: a new client reaches the backup, where nothing listens yet, and is refused at once.
    const next = l.spawn('client', fixturePath('client'), ['--host', address, '--port', '7000']);
    expect(await next.waitFor('error', 2500)).toMatchObject({ code: 'ECONNREFUSED' });
  });
});
