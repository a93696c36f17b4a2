// A connect() to a local port nobody listens on can connect to itself when the port is in the
// ephemeral range (src/net/self-connect.ts): one attempt in ~28,000 on a real machine (a CI run
// saw it: a subscriber retrying a restarting agent's port held it, and the agent's restart failed
// with EADDRINUSE). Here a namespace whose ephemeral range is two ports makes it happen every
// time, and each client of a local port must take it as refused and leave the port free. An
// attempt still holds the port from its connect() to its 'connect' callback: the agent's
// notification listener tries a port in use again for a second (a CI run's single listen met
// that moment).
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { bundledScript } from '../../src/lab/node-child.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'self-connect-child.ts');
const PORT = 40_000;

it('a connect that reaches itself is refused, reset, and leaves the port to the server that restarts on it', async () => {
  const ns = `tko-selfconn-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', `net.ipv4.ip_local_port_range=${PORT} ${PORT + 1}`]);
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, bundledScript(CHILD, 'test-'), String(PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code, stderr).toBe(0);
    const out = JSON.parse(stdout) as Record<string, any>;
    console.log(`self-connect: ${JSON.stringify(out)}`);
    const refused = `connect ECONNREFUSED 127.0.0.1:${PORT} (connected to itself: nothing listens there)`;
    // The hazard is there: a plain connect reaches itself.
    expect(out.plain).toBe('connected to itself');
    expect(out.tcpProbe).toBe(refused);
    expect(out.tcpProbeThenListen).toBe('listening');
    expect(out.requestProbe).toBe(refused);
    expect(out.greetingProbe).toBe(false);
    expect(out.relay).toEqual({ reason: `upstream error: ${refused}`, clientGot: '' });
    expect(out.relayThenListen).toBe('listening');
    expect(out.agentRestart).toBe('listening');
    expect(out.subscriber).toEqual([`unreachable: ${refused}`, 'connected']);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}, 30_000);
