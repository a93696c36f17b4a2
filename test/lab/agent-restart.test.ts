// An agent killed with SIGKILL and started again, as an operator's supervisor does it: the
// `takeover agent` processes of two nodes of a learning bridge. What the killed life installed
// (the RST guard it prepares for a fin takeover) must not outlive it: the new life finds it,
// removes it and says so, and after the takeover a client connecting to the taken-over address,
// where nothing listens, is refused at once instead of waiting for a connect timeout.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { exited } from '../../src/lab/exec.js';
import { Lab } from '../../src/lab/lab.js';
import { fixturePath } from '../../src/lab/node-child.js';
import { GUARD_TABLE_PREFIX } from '../../src/net/guard-owner.js';
import { startCli } from '../cli-process.js';
import { until } from './replication-cluster.js';

let lab: Lab | undefined;
let dir: string | undefined;
const agents: Array<ReturnType<typeof startCli>> = [];
afterEach(async () => {
  for (const a of agents.splice(0)) {
    a.child.kill('SIGKILL');
    await exited(a.child);
  }
  await lab?.destroy();
  if (dir) rmSync(dir, { recursive: true, force: true });
  lab = dir = undefined;
});

type LogLine = Record<string, unknown> & { msg?: string };
const logOf = (agent: ReturnType<typeof startCli>): LogLine[] =>
  agent.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as LogLine);
const logged = (agent: ReturnType<typeof startCli>, msg: string, ms = 15_000) =>
  until(`log line "${msg}"`, async () => logOf(agent).find((l) => l.msg === msg), ms);

describe('an agent killed with SIGKILL and restarted', () => {
  it('replaces the RST guard its killed life left; after the takeover a connect where nothing listens is refused', async () => {
    lab = await Lab.create({ hosts: ['a', 'b', 'c'] });
    dir = mkdtempSync(path.join(tmpdir(), 'tko-restart-'));
    const l = lab;
    const vip = `198.18.${l.subnet}.100`;
    await l.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
    const links = (n: string) => [{ id: 0, address: l.host(n).ipv4, port: 7400 }];
    const configFile = (n: string) => path.join(dir!, `${n}.json`);
    for (const n of ['a', 'b']) {
      const config = {
        cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: path.join(dir, `${n}.sock`),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover: { address: vip, port: 7000, interface: 'eth0', prefixLength: 24, method: 'fin' } }],
        quorum: { twoNode: true }, // two agents, no fencing: a silent a is taken over
      };
      writeFileSync(configFile(n), JSON.stringify(config));
    }
    const startAgent = (n: string) => {
      const agent = startCli(['agent', '--config', configFile(n)], { netns: l.host(n).ns });
      agents.push(agent);
      return agent;
    };
    const guards = async () => {
      const { stdout } = await l.exec('b', 'nft', ['list', 'tables', 'inet']);
      return stdout.split('\n').map((t) => t.replace(/^table inet /, '').trim()).filter((t) => t.startsWith(GUARD_TABLE_PREFIX));
    };

    startAgent('a');
    const first = startAgent('b');
    await logged(first, 'agent started');
    const [left] = await guards();
    expect(left).toBeDefined();
    first.child.kill('SIGKILL');
    await exited(first.child);
    expect(await guards()).toEqual([left]); // nothing removed it: the process had no chance

    const second = startAgent('b');
    await logged(second, 'agent started');
    const current = await guards();
    expect(current).toHaveLength(1);
    expect(current[0]).not.toBe(left);
    expect(logOf(second).find((x) => x.msg?.startsWith('removed RST guards'))).toMatchObject({ level: 40, staleGuards: { removed: [left], foreign: [] } });
    await logged(second, 'node-up');

    await l.killSilently('a', 'nft');
    await logged(second, 'peer taken over');
    expect(await guards()).toEqual([]); // the takeover removed its own guard when done
    const client = l.spawn('c', fixturePath('client'), ['--host', vip, '--port', '7000']);
    // A refusal takes a round trip; a RST+ACK dropped by a leftover guard would leave the SYN
    // retransmitting (first retry after 1 s) until a connect timeout minutes later.
    expect(await client.waitFor('error', 2500)).toMatchObject({ code: 'ECONNREFUSED' });
  });
});
