// A takeover as an operator looks back on it: `takeover agent --config FILE` on two nodes of a
// learning bridge (main and failsafe links), the serving node dies silently, and the backup's
// `takeover status` (text and JSON) and `GET /metrics` say when it was declared dead, why, what
// was taken over from it, when and with what result. All as processes inside the namespaces.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixturePath } from '../../src/lab/node-child.js';
import { runCli, startCli } from '../cli-process.js';
import { parseExposition } from '../metrics-scrape.js';
import { agentsLab } from './agents-lab.js';
import { until } from './replication-cluster.js';

const METRICS_PORT = 9464;
const ISO = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \([\d.]+ (?:ms|s) ago\)`;

describe('what was taken over, in status and metrics', () => {
  it('the backup shows the dead peer since when and why, the address and connections it took over, and counts them', async () => {
    const { lab, dir, agents, vip, links } = await agentsLab({ hosts: ['a', 'b', 'c'], failsafeLink: true }, 'tko-takeover-status-');
    const l = lab;
    const sock = (n: string) => path.join(dir!, `${n}.sock`);
    for (const n of ['a', 'b']) {
      const config = {
        cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: sock(n),
        heartbeat: { intervalMs: 100, misses: 3, links: links(n) }, notify: { port: 0 },
        peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover: { address: vip, port: 7000, interface: 'eth0', prefixLength: 24 } }],
        quorum: { twoNode: true }, // two agents, no fencing: a silent a is taken over
        ...(n === 'b' ? { metrics: { port: METRICS_PORT } } : {}),
      };
      writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
      agents.push(startCli(['agent', '--config', path.join(dir, `${n}.json`)], { netns: l.host(n).ns }));
    }
    const onB = (args: string[]) => runCli([...args, '--control', sock('b')], { netns: l.host('b').ns });
    const scrape = async () => parseExposition((await l.exec('b', 'curl', ['-sf', `http://127.0.0.1:${METRICS_PORT}/metrics`])).stdout);
    const server = l.spawn('a', fixturePath('server'), ['--port', '7000']);
    await server.waitFor('listening');
    await until('B synced with A', async () => {
      const r = await onB(['status', '--json']);
      return r.code === 0 && JSON.parse(r.stdout).replication.peers[0]?.synced ? true : undefined;
    }, 15_000);
    const client = l.spawn('c', fixturePath('client'), ['--host', vip, '--port', '7000', '--request', 'Q']);
    await client.waitFor('connected');
    await until('B\'s copy of the connection', async () => (JSON.parse((await onB(['status', '--json'])).stdout).replication.peers[0].connections === 1 ? true : undefined));
    const before = await scrape();
    expect(before.get('takeover_peer_up', { peer: 'a' })).toBe(1);
    for (const link of [0, 1]) expect(before.get('takeover_heartbeats_received_total', { peer: 'a', link })).toBeGreaterThan(0);
    expect(before.get('takeover_replication_copy_connections', { peer: 'a' })).toBe(1);
    expect(before.get('takeover_replication_copy_synced', { peer: 'a' })).toBe(1);
    expect(['ok', 'incomplete', 'failed'].map((result) => before.get('takeover_peer_takeovers_total', { peer: 'a', result }))).toEqual([0, 0, 0]);

    await l.killSilently('a', 'nft');
    expect(await client.waitFor('error', 5000)).toMatchObject({ code: 'ECONNRESET' });
    const log = () => agents[1]!.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, any>);
    await until('the takeover in B\'s log', async () => log().find((e) => e.msg === 'peer taken over'));
    const down = log().find((e) => e.msg === 'node-down')!.detector as { at: number; lastHeardAt: number };
    const silentMs = Math.round(down.at - down.lastHeardAt);

    const status = JSON.parse((await onB(['status', '--json'])).stdout);
    const peer = status.peers.find((p: { node: string }) => p.node === 'a');
    expect(peer).toMatchObject({ up: false, since: down.at, death: { at: down.at, cause: 'silence', silentMs, why: `silent on every link (0, 1) for ${silentMs} ms` } });
    expect(peer.takenOver).toEqual([{ address: vip, port: 7000, decidedAt: down.at, at: expect.any(Number), result: 'ok', connections: 1, notClosed: 0, addressAdded: true }]);
    const took = peer.takenOver[0] as { at: number; decidedAt: number };
    expect(took.at).toBeGreaterThan(took.decidedAt);

    const text = (await onB(['status'])).stdout;
    expect(text).toMatch(new RegExp(`\\npeer a: DOWN since ${ISO}: silent on every link \\(0, 1\\) for ${silentMs} ms\\n  took over ${vip.replaceAll('.', '\\.')}:7000 ${ISO}, ${Math.round(took.at - took.decidedAt)} ms after the decision: ok, 1 connection\\(s\\) closed, address added here\\n`));

    const after = await scrape();
    expect(after.get('takeover_peer_up', { peer: 'a' })).toBe(0);
    expect(after.get('takeover_peer_takeovers_total', { peer: 'a', result: 'ok' })).toBe(1);
    expect(after.get('takeover_peer_takeovers_total', { peer: 'a', result: 'failed' })).toBe(0);
    expect(after.get('takeover_peer_takeover_seconds_count', { peer: 'a' })).toBe(1);
    expect(after.get('takeover_peer_takeover_seconds_sum', { peer: 'a' })).toBeCloseTo((took.at - took.decidedAt) / 1000, 6);
    expect(after.get('takeover_plan_connections_total', { plan: 'peer', outcome: 'reset' })).toBe(1);
    expect(after.get('takeover_peer_down_detection_seconds_sum', { peer: 'a' })).toBeCloseTo((down.at - down.lastHeardAt) / 1000, 6);
    expect(after.get('takeover_events_published_total', { type: 'node', status: 'DOWN' })).toBe(1);
  }, 60_000);
});
