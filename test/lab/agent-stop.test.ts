// SIGTERM to `takeover agent` in the middle of its takeover of a dead peer: the takeover is not
// cut short (its tracker and RST guard closed under it, the process left running after "agent
// stopped" until the close's deadline); it finishes, is logged, and then the agent exits, within
// the close's 5 s deadline plus FAST_MS (test/unit/agent-stop.test.ts states that margin).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixturePath } from '../../src/lab/node-child.js';
import { runCli, startCli } from '../cli-process.js';
import { agentsLab } from './agents-lab.js';
import { until } from './replication-cluster.js';

const CLOSE_DEADLINE_MS = 5000; // closePeers' default timeoutMs, which a takeover uses
const FAST_MS = 500;

const logLines = (a: ReturnType<typeof startCli>) =>
  a.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('takeover agent stopped during a takeover', () => {
  it('finishes the takeover, logs it, then exits', async () => {
    const { lab, dir, agents, vip, links } = await agentsLab({ hosts: ['a', 'b', 'c'] }, 'tko-agent-stop-');
    const l = lab;
    const sock = (n: string) => path.join(dir!, `${n}.sock`);
    for (const n of ['a', 'b']) {
      const config = {
        cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: sock(n),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover: { address: vip, port: 7000, interface: 'eth0', prefixLength: 24, method: 'fin' } }],
        quorum: { twoNode: true }, // two agents, no fencing: a silent a is taken over
      };
      writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
      agents.push(startCli(['agent', '--config', path.join(dir, `${n}.json`)], { netns: l.host(n).ns }));
    }
    const b = agents[1]!;
    const server = l.spawn('a', fixturePath('server'), ['--port', '7000']);
    await server.waitFor('listening');
    const client = l.spawn('c', fixturePath('client'), ['--host', vip, '--port', '7000']);
    await client.waitFor('connected');
    await until('B\'s copy of the connection', async () => {
      try {
        const s = JSON.parse((await runCli(['status', '--json', '--control', sock('b')], { netns: l.host('b').ns })).stdout);
        return s.replication.peers[0]?.connections === 1 ? true : undefined;
      } catch {
        return undefined; // not listening yet
      }
    }, 20_000);

    // The client dies too, so the takeover's FIN goes unanswered and the close engine retries:
    // the takeover lasts long enough to be stopped in the middle.
    await l.killSilently('c');
    await l.killSilently('a');
    await until('B declares A down', async () => (logLines(b).some((e) => e.msg === 'node-down') ? true : undefined));
    const t0 = performance.now();
    b.child.kill('SIGTERM');
    const { code } = await b.done;
    const ms = performance.now() - t0;

    const msgs = logLines(b).map((e) => e.msg);
    expect(code).toBe(0);
    expect(msgs.slice(msgs.indexOf('stopping'))).toEqual(['stopping', 'peer taken over', 'agent stopped']);
    expect(ms).toBeLessThan(CLOSE_DEADLINE_MS + FAST_MS);
  });
});
