// The documented example (docs/examples/backup.ts) runs as written, where it says it works: on a
// switch with a port mirror of the server's port to the backup (Lab.mirrorPort: its mir0).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath } from '../../src/lab/node-child.js';
import { readEnding } from './scenario.js';

const EXAMPLE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'examples', 'backup.ts');
let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

it('docs/examples/backup.ts closes the peers of a dead server', async () => {
  lab = await Lab.create({ hosts: ['client', 'server', 'backup'] });
  const { ifname: mirror } = await lab.mirrorPort('server', 'backup');
  const address = lab.host('server').ipv4;
  const server = lab.spawn('server', fixturePath('server'), ['--port', '5432']);
  await server.waitFor('listening');
  const example = spawn('ip', ['netns', 'exec', lab.host('backup').ns, process.execPath, '--import', 'tsx', EXAMPLE, mirror, 'eth0', address, '5432', 'rst'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  example.stdout.on('data', (d) => (out += d));
  example.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => example.on('exit', r));
  try {
    const deadline = Date.now() + 10_000;
    while (!out.includes('tracking') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const client = lab.spawn('client', fixturePath('client'), ['--host', address, '--port', '5432', '--request', 'Q']);
    await client.waitFor('connected');
    await server.waitFor('accepted');
    await new Promise((r) => setTimeout(r, 100));
    await lab.killSilently('server', 'nft');
    example.kill('SIGUSR1');
    expect(await readEnding(client)).toMatchObject({ event: 'error', code: 'ECONNRESET' });
    expect(await exited).toBe(0);
    expect(out).toMatch(/rst seq=\d+ \(tracked\) -> reset \(verified\)/);
  } finally {
    example.kill('SIGKILL');
  }
});
