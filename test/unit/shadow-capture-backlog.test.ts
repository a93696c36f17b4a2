// A mirror's copy can be dropped in this host's input backlog before any ring sees it
// (softnet_stat): ShadowCapture counts those drops as capture losses, so the connections open
// then must prove their tails before they are continued (ShadowConnection.suspect). A real ring
// on loopback, a real connection; the counter is given (a real overflow cannot be made to order).
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { respContinue } from '../../src/net/shadow/resp-continue.js';
import { ShadowCapture } from '../../src/net/shadow/shadow-capture.js';
import { parseSoftnetDrops, softnetDrops } from '../../src/net/softnet-drops.js';

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close();
});

describe('softnet_stat', () => {
  it('sums the drops column (hex) over CPUs; this host\'s file reads', async () => {
    expect(parseSoftnetDrops('0000a000 00000003 00000000\n0000b000 0000000f 00000001\n')).toBe(18);
    expect(parseSoftnetDrops('')).toBe(0);
    expect(await softnetDrops()).toEqual(expect.any(Number));
  });
});

describe('ShadowCapture and the input backlog', () => {
  it('marks the connections open when the host dropped input frames as unproven; none before', async () => {
    const server = net.createServer((s) => s.on('data', (d) => s.write(d.length > 0 ? '+OK\r\n' : ''))).listen(0, '127.0.0.1');
    open.push(server);
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as net.AddressInfo).port;
    let drops = 100;
    const shadow = new ShadowCapture({ interface: 'lo', services: [{ address: '127.0.0.1', port }], plugin: respContinue, checkIntervalMs: 20, backlogDropCounter: async () => drops });
    open.push(shadow);
    await shadow.ready;
    await new Promise((r) => setTimeout(r, 60)); // the counter's first read is the base
    const client = net.connect(port, '127.0.0.1');
    open.push({ close: () => client.destroy() });
    await new Promise((r) => client.once('connect', r));
    client.write('*1\r\n$4\r\nPING\r\n');
    await new Promise((r) => client.once('data', r));
    // The ring hands a block over within 10 ms: wait (1 s at most) until the shadow has the exchange.
    const planOf = async () => (await shadow.plans('127.0.0.1')).find((p) => p.client.port === client.localPort);
    for (const end = Date.now() + 1000; Date.now() < end && (await planOf())?.kind !== 'restore'; ) await new Promise((r) => setTimeout(r, 20));
    const before = (await planOf())!;
    expect(before.kind).toBe('restore');
    expect(before.kind === 'restore' && before.unproven).toBeUndefined();
    drops += 3;
    const after = (await planOf())!;
    expect(after.kind === 'restore' && after.unproven).toMatch(/the capture lost 3 frames/);
    expect(shadow.stats()).toMatchObject({ captureDrops: 0, backlogDrops: 3 });
  });
});
