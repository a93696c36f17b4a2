// /proc/net/tcp{,6} read for the switchover's quiet check (src/net/proc-net-tcp.ts): lines as
// the kernel writes them, this host's own file against sockets made here (queues included), the
// quiet verdict, and a seeded fuzz (never throws, only well-formed lines come out).
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { parseProcNetTcp, quietVerdict, readProcNetTcp, type QueueSample } from '../../src/net/proc-net-tcp.js';
import { seededRandom } from './mirror-helpers.js';

const V4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:8351 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19192038 1 00000000840091b6 100 0 0 10 0
   1: 6412C6C6:18EB 0312C6C6:9C40 01 0000001A:00000005 01:00000014 00000000     0        0 4242 4 0000000000000000 20 4 30 10 -1
`;
const V6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0CEA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 34567 1 0000000000000000 100 0 0 10 0
   1: B80D0120000000000000000001000000:18EB 0000000000000000FFFF00000312C6C6:9C40 01 00000100:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1
`;

describe('/proc/net/tcp', () => {
  it('reads addresses, ports, state, both queues and the inode as the kernel writes them', () => {
    expect(parseProcNetTcp(V4)).toEqual([
      { local: { address: '127.0.0.1', port: 0x8351 }, remote: { address: '0.0.0.0', port: 0 }, state: 10, txQueue: 0, rxQueue: 0, inode: 19192038 },
      { local: { address: '198.198.18.100', port: 6379 }, remote: { address: '198.198.18.3', port: 40000 }, state: 1, txQueue: 26, rxQueue: 5, inode: 4242 },
    ]);
    expect(parseProcNetTcp(V6)).toEqual([
      { local: { address: '::1', port: 3306 }, remote: { address: '::', port: 0 }, state: 10, txQueue: 0, rxQueue: 0, inode: 34567 },
      { local: { address: '2001:db8::1', port: 6379 }, remote: { address: '::ffff:c6c6:1203', port: 40000 }, state: 1, txQueue: 256, rxQueue: 0, inode: 777 },
    ]);
  });

  it('this host\'s own file shows a connection made here, with the bytes its server has not read', async () => {
    const server = net.createServer({ pauseOnConnect: true }); // the server reads nothing
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect(port, '127.0.0.1');
    try {
      await new Promise((r) => client.once('connect', r));
      const served = await accepted;
      client.write(Buffer.alloc(1000, 1));
      let mine;
      for (let i = 0; i < 100; i++) {
        mine = (await readProcNetTcp()).find((s) => s.local.port === port && s.remote.port === client.localPort && s.state === 1);
        if (mine?.rxQueue === 1000) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(mine).toMatchObject({ local: { address: '127.0.0.1', port }, remote: { address: '127.0.0.1', port: client.localPort }, rxQueue: 1000, txQueue: 0 });
      served.destroy();
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('quiet: every connection read everything and its send queue stayed; else says what is not', () => {
    const s = (entries: Array<[string, number, number]>): QueueSample => new Map(entries.map(([k, tx, rx]) => [k, [tx, rx] as const]));
    expect(quietVerdict(s([['c|1', 10, 0], ['c|2', 0, 0]]), s([['c|1', 10, 0], ['c|2', 0, 0]]))).toEqual({ quiet: true });
    expect(quietVerdict(s([['c|1', 10, 0]]), s([]))).toEqual({ quiet: true }); // closed meanwhile: not moved
    expect(quietVerdict(s([['c|1', 10, 5]]), s([['c|1', 10, 5]]))).toEqual({ quiet: false, why: '1 with requests not read yet' });
    expect(quietVerdict(s([['c|1', 10, 0]]), s([['c|1', 20, 0]]))).toEqual({ quiet: false, why: '1 still being written to' });
    expect(quietVerdict(s([]), s([['c|1', 0, 0], ['c|2', 0, 3]]))).toEqual({ quiet: false, why: '1 with requests not read yet, 2 new' });
  });

  it('fuzz: 3,000 seeded mutations of real lines never throw, and what comes out is well formed', () => {
    const { int } = seededRandom(0x9e7c9);
    const base = V4 + V6.split('\n').slice(1).join('\n');
    const alphabet = '0123456789ABCDEF: \n-xZ';
    for (let iter = 0; iter < 3000; iter++) {
      const chars = [...base];
      for (let k = 0, n = 1 + int(8); k < n; k++) {
        const at = int(chars.length);
        const op = int(3);
        if (op === 0) chars[at] = alphabet[int(alphabet.length)]!;
        else if (op === 1) chars.splice(at, 1 + int(10));
        else chars.splice(at, 0, alphabet[int(alphabet.length)]!);
      }
      for (const s of parseProcNetTcp(chars.join(''))) {
        expect(net.isIP(s.local.address) && net.isIP(s.remote.address)).toBeTruthy();
        for (const v of [s.local.port, s.remote.port, s.state, s.txQueue, s.rxQueue, s.inode]) expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
        expect(s.local.port).toBeLessThanOrEqual(65535);
      }
    }
  });
});
