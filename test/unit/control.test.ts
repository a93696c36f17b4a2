// The control socket's path: a stale socket is replaced, but a running agent's socket and a file
// that is not a socket are left alone (a second agent of the node, or a config that names a
// file by mistake, must not cut the first off its CLI or delete the file).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlServer, controlRequest } from '../../src/agent/control.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-control-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const server = (file: string, node: string) => new ControlServer(file, async (_req, reply) => (reply({ node }), 'done'));

async function ask(file: string): Promise<unknown> {
  let answer: unknown;
  await controlRequest(file, { cmd: 'status' }, (m) => (answer = m));
  return answer;
}

describe('control socket path', () => {
  it('a second server on a live socket is refused; the first keeps its socket, also after the second closes', async () => {
    const file = path.join(dir, 'a.sock');
    const first = server(file, 'first');
    await first.listen();
    const second = server(file, 'second');
    try {
      await expect(second.listen()).rejects.toMatchObject({ code: 'EAGENTRUNNING', message: expect.stringContaining(`another agent is running for this node: its control socket ${file} answers`) });
      await second.close();
      expect(await ask(file)).toEqual({ node: 'first' });
    } finally {
      await first.close();
    }
    expect(existsSync(file)).toBe(false);
  });

  it('a stale socket (nobody listening) is replaced', async () => {
    const file = path.join(dir, 'a.sock');
    // A socket file whose server was killed (SIGKILL: nothing unlinked it).
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(file)}, () => console.log('listening'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => child.stdout.once('data', r));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(file)).toBe(true);
    const s = server(file, 'new');
    await s.listen();
    try {
      expect(await ask(file)).toEqual({ node: 'new' });
    } finally {
      await s.close();
    }
  });

  it('a file that is not a socket is neither deleted nor listened on', async () => {
    const file = path.join(dir, 'agent.yaml');
    writeFileSync(file, 'cluster: c\n');
    const s = server(file, 'x');
    await expect(s.listen()).rejects.toMatchObject({ code: 'EEXIST', message: `control: ${file} exists and is not a socket: not deleting it` });
    await s.close();
    expect(readFileSync(file, 'utf8')).toBe('cluster: c\n');
  });
});
