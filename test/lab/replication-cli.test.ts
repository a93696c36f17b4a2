// Replication as an operator sees it: `takeover agent --config FILE` running on two nodes of a
// learning bridge, `takeover status` and `takeover flows --peer` asked of the backup's agent
// (all as processes, inside the nodes' namespaces), before and after the serving node's death,
// and the takeover in the backup's log.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixturePath } from '../../src/lab/node-child.js';
import { runCli, startCli } from '../cli-process.js';
import { agentsLab } from './agents-lab.js';
import { until } from './replication-cluster.js';

describe('takeover status and takeover flows --peer, against agents run as processes', () => {
  it('the backup shows its copy of the server\'s connections, frozen once the server is dead; the takeover is in its log', async () => {
    const { lab, dir, agents, vip, links } = await agentsLab({ hosts: ['a', 'b', 'c'], failsafeLink: true }, 'tko-repl-cli-');
    const l = lab;
    const sock = (n: string) => path.join(dir!, `${n}.sock`);
    for (const n of ['a', 'b']) {
      const config = {
        cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: sock(n),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 }, quorum: { twoNode: true },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover: { address: vip, port: 7000, interface: 'eth0', prefixLength: 24 } }],
      };
      writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
      agents.push(startCli(['agent', '--config', path.join(dir, `${n}.json`)], { netns: l.host(n).ns }));
    }
    const server = l.spawn('a', fixturePath('server'), ['--port', '7000']);
    await server.waitFor('listening');
    const status = async () => JSON.parse((await runCli(['status', '--json', '--control', sock('b')], { netns: l.host('b').ns })).stdout);
    await until('B synced with A', async () => {
      try {
        return (await status()).replication.peers[0]?.synced ? true : undefined;
      } catch {
        return undefined; // not listening yet
      }
    }, 15_000);
    const client = l.spawn('c', fixturePath('client'), ['--host', vip, '--port', '7000', '--request', 'Q']);
    const { localPort } = await client.waitFor('connected');
    await until('B\'s copy of the connection with its state', async () => {
      const p = (await status()).replication.peers[0];
      return p.connections === 1 ? true : undefined;
    });
    await new Promise((r) => setTimeout(r, 300));

    // Five reads of the two agents (one refused), a CLI process each, at once.
    const [text, onA, flows, flowsJson, nobody] = await Promise.all([
      runCli(['status', '--control', sock('b')], { netns: l.host('b').ns }),
      runCli(['status', '--control', sock('a')], { netns: l.host('a').ns }),
      runCli(['flows', '--peer', 'a', '--control', sock('b')], { netns: l.host('b').ns }),
      runCli(['flows', '--peer', 'a', '--json', '--control', sock('b')], { netns: l.host('b').ns }),
      runCli(['flows', '--peer', 'nobody', '--control', sock('b')], { netns: l.host('b').ns }),
    ]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/COPY OF PEER\s+CONNECTIONS\s+SYNCED\s+LAST UPDATE/);
    expect(text.stdout).toMatch(/\na\s+1\s+yes \(epoch \d+\)\s+\d+ ms ago\s+1 \(0 pending\)/);
    expect(onA.stdout).toMatch(/COPY HELD BY\s+CONNECTIONS SENT\s+PENDING\s+BYTES\nb\s+1\s+0\s+\d+/);

    expect(flows.code).toBe(0);
    expect(flows.stdout).toMatch(/^peer a \(up\): 1 connections known, synced \(epoch \d+\), last update \d+ ms ago\n/);
    expect(flows.stdout).toContain(`${vip}:7000  ${l.host('c').ipv4}:${localPort}`);
    const json = JSON.parse(flowsJson.stdout);
    expect(json.connections).toEqual([expect.objectContaining({ peer: { address: l.host('c').ipv4, port: localPort }, state: expect.objectContaining({ deadNextSeq: expect.any(Number) }) })]);
    expect(nobody).toMatchObject({ code: 2, stderr: 'takeover: unknown peer nobody\n' });

    await l.killSilently('a', 'nft');
    expect(await client.waitFor('error', 5000)).toMatchObject({ code: 'ECONNRESET' });
    const after = await runCli(['flows', '--peer', 'a', '--control', sock('b')], { netns: l.host('b').ns });
    expect(after.stdout).toMatch(/^peer a \(DOWN: the copy is frozen\): 1 connections known/);
    // The backup's log: one line for the takeover, a summary of what was closed.
    const log = agents[1]!.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
    const taken = log.find((e) => e.msg === 'peer taken over');
    expect(taken).toMatchObject({ peer: 'a', replicated: 1, closed: { connections: 1, outcomes: { reset: 1 }, seqSources: { tracked: 1 } } });
  });
});
