// The agent refuses a planned switchover it cannot carry out before anything is locked, naming
// what is missing: a PostgreSQL takeover without continue.switchover or without promote, an
// HTTP one, one that follows a mirror. The agent runs in-process; the peer never answers (its
// stream's port is closed), which none of these refusals needs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { validateConfig } from '../../src/agent/config.js';
import { controlRequest } from '../../src/agent/control.js';
import { freePort } from '../free-port.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-agent-switchover-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('refuses a switchover it cannot carry out, naming what is missing', async () => {
  const stream = { host: '127.0.0.1', port: await freePort() };
  const takeover = (port: number, c: object) => ({ address: '198.18.250.10', port, interface: 'lo', prefixLength: 32, continue: { upstream: { port: 1 }, ...c } });
  const config = validateConfig({
    cluster: 'sw', node: 'n1', database: 'db', key: 'the shared key 0123', control: path.join(dir, 'n1.sock'), incarnationFile: path.join(dir, 'n1.incarnation'),
    stateDir: path.join(dir, 'state'),
    heartbeat: { intervalMs: 50, misses: 20, links: [{ id: 0, address: '127.0.0.1', port: await freePort() }] },
    notify: { host: '127.0.0.1', port: 0 },
    peers: [{
      node: 'n2', links: [{ id: 0, address: '127.0.0.1', port: await freePort() }],
      takeover: [
        takeover(5001, { protocol: 'postgres', stream, promote: ['/bin/true'] }),
        takeover(5002, { protocol: 'postgres', stream, switchover: { primary: { host: '127.0.0.1' }, user: 'postgres' } }),
        takeover(5003, { protocol: 'http', stream }),
        takeover(5004, { protocol: 'resp', mirror: 'lo' }),
      ],
    }],
  });
  const agent = await Agent.create(config);
  const ask = async (port: number) => {
    const got: Array<Record<string, unknown>> = [];
    await controlRequest(path.join(dir, 'n1.sock'), { cmd: 'switchover', address: '198.18.250.10', port, to: 'n1' }, (m) => got.push(m));
    return got[0]?.error;
  };
  try {
    await agent.start();
    expect(await ask(5001)).toMatch(/^the takeover of n2's 198\.18\.250\.10:5001 has no continue\.switchover section: a PostgreSQL switchover needs/);
    expect(await ask(5002)).toMatch(/^the takeover of n2's 198\.18\.250\.10:5002 has no continue\.promote: a PostgreSQL switchover would move the sessions onto a standby that stays read-only$/);
    expect(await ask(5003)).toBe('a switchover of protocol http is not supported: nothing tells that the new upstream holds what the old one served');
    expect(await ask(5004)).toMatch(/^the takeover of n2's 198\.18\.250\.10:5004 follows a mirror: a switchover talks to n2's agent over its connection stream/);
  } finally {
    await agent.stop();
  }
});
