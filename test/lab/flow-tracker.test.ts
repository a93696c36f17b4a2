// The tracker against the kernel: a real connection moves 1 MB each way while a third host
// watches on a switch's port mirror of the server's port (Lab.mirrorPort: its mir0); the
// tracked next-seq and ack of each side must equal what the endpoints' own kernels hold (read
// with TCP_REPAIR).
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { eventually } from './eventually.js';
import { fixturePath } from '../../src/lab/node-child.js';
import type { FlowRecord } from '../../src/native.js';

const MB = 1 << 20;
let lab: Lab | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
});

describe.each([4, 6] as const)('FlowTracker over IPv%s', (family) => {
  it('tracks 1 MB each way with the kernel\'s exact sequence numbers', async () => {
    lab = await Lab.create({ hosts: ['client', 'server', 'watch'] });
    const { ifname: mirror } = await lab.mirrorPort('server', 'watch');
    const addr = (h: string) => (family === 4 ? lab!.host(h).ipv4 : lab!.host(h).ipv6);
    const server = lab.spawn('server', fixturePath('server'), ['--port', '7200']);
    await server.waitFor('listening');
    const watch = lab.spawn('watch', fixturePath('survivor'), ['--interface', 'eth0', '--capture', mirror, '--address', addr('server'), '--port', '7200']);
    await watch.waitFor('tracking');
    const client = lab.spawn('client', fixturePath('client'), ['--host', addr('server'), '--port', '7200', '--quiet-data', String(MB)]);
    await client.waitFor('connected');
    const { id } = await server.waitFor('accepted');
    server.send({ cmd: 'send', id, bytes: MB });
    client.send({ cmd: 'write', bytes: MB });
    await client.waitFor('data', 20_000, (e) => e.received === MB);
    await server.waitFor('sent', 20_000);
    // Let delayed ACKs go out: the kernel's rcv_nxt is only on the wire once acked.
    await new Promise((r) => setTimeout(r, 500));

    server.send({ cmd: 'repair-seq', id });
    client.send({ cmd: 'repair-seq' });
    const srvSeq = await server.waitFor('repair-seq');
    const cliSeq = await client.waitFor('repair-seq');
    watch.send({ cmd: 'flows' });
    const { flows } = (await watch.waitFor('flows')) as unknown as { flows: FlowRecord[] };
    expect(flows).toHaveLength(1);
    const f = flows[0]!;
    expect(f).toMatchObject({ family, state: 'ESTABLISHED', handshakeSeen: true });
    // 'a' is the side that sent the SYN: the client.
    expect(f.a).toMatchObject({ address: addr('client'), nextSeq: cliSeq.sendSeq, ack: cliSeq.recvSeq });
    expect(f.b).toMatchObject({ address: addr('server'), port: 7200, nextSeq: srvSeq.sendSeq, ack: srvSeq.recvSeq });
    // Payload bytes seen on the wire: retransmissions count again.
    expect(f.a.bytes).toBeGreaterThanOrEqual(MB);
    expect(f.b.bytes).toBeGreaterThanOrEqual(MB);
    expect(f.a.wscale).toBeGreaterThanOrEqual(0);
    expect(f.a.mss).toBeGreaterThan(0);
    expect(f.a.tsval).toBeGreaterThan(0);
    watch.send({ cmd: 'stats' });
    const stats = await watch.waitFor('stats');
    expect(stats).toMatchObject({ drops: 0, flows: 1 });
  });
});

describe('FlowTracker on an interface that goes down and comes back', () => {
  it('keeps capturing: the socket\'s error (ENETDOWN) is taken and the poll resumes', async () => {
    lab = await Lab.create({ hosts: ['client', 'server'] });
    const server = lab.spawn('server', fixturePath('server'), ['--port', '7201']);
    await server.waitFor('listening');
    // The server's own agent's view: a capture bound to its interface.
    const watch = lab.spawn('server', fixturePath('survivor'), ['--interface', 'eth0', '--address', lab.host('server').ipv4, '--port', '7201']);
    await watch.waitFor('tracking');
    const connect = async () => {
      const c = lab!.spawn('client', fixturePath('client'), ['--host', lab!.host('server').ipv4, '--port', '7201']);
      return (await c.waitFor('connected')) as unknown as { localPort: number };
    };
    // The answer to this request (waitFor finds the first event of a name otherwise).
    const ask = async (cmd: string) => {
      const sentAt = Date.now();
      watch.send({ cmd });
      return watch.waitFor(cmd, 10_000, (e) => Number(e.t) >= sentAt);
    };
    const flowPorts = async () => ((await ask('flows')) as unknown as { flows: FlowRecord[] }).flows.map((f) => f.a.port);
    // The ring hands blocks over every few ms; a loaded run's loops take longer (a fixed 100 ms
    // was once too short in CI, and so was none at all for the first flow). A capture that
    // stopped would never list it.
    const listed = (port: number, when: string) =>
      eventually(async () => ((await flowPorts()).includes(port) ? true : undefined), 5000, `the flow of port ${port} ${when}`).catch(async (err: Error) => {
        throw new Error(`${err.message}; capture stats ${JSON.stringify(await ask('stats'))}`);
      });
    const first = await connect();
    await listed(first.localPort, 'before the link went down');
    await lab.exec('server', 'ip', ['link', 'set', 'eth0', 'down']);
    await lab.exec('server', 'ip', ['link', 'set', 'eth0', 'up']);
    const second = await connect();
    await listed(second.localPort, 'after the link came back');
    expect(await ask('stats')).toMatchObject({ pollErrors: 1, lastErrno: 100 /* ENETDOWN */, polling: true });
  });
});
