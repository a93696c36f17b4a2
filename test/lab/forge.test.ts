// Forged segments against a real kernel: a server in namespace A forges, with the exact
// sequence numbers of its own socket, segments towards a client in namespace B that is
// blocked reading. The client's kernel is the judge of whether each segment is acceptable.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import type { NodeChild, LabEvent } from '../../src/lab/node-child.js';
import { TCP_ACK, TCP_FIN, TCP_RST } from '../../src/native.js';
import { FORGE_MARK } from '../../src/net/forge.js';
import { Lab } from '../../src/lab/lab.js';

const fixture = (name: string) => fileURLToPath(new URL(`fixtures/${name}.ts`, import.meta.url));
const PORT = 7100;

let lab: Lab;
let server: NodeChild;

beforeAll(async () => {
  lab = await Lab.create({ hosts: ['a', 'b'] });
  // Counts what leaves A carrying the forge's mark: proves SO_MARK is set on the sender.
  await lab.exec('a', 'nft', ['-f', '-'], [
    'table inet tko_forge_test {',
    `  chain out { type filter hook output priority 0; policy accept; meta mark ${FORGE_MARK} counter; }`,
    '}',
  ].join('\n'));
  server = lab.spawn('a', fixture('forge-server'), ['--port', String(PORT)]);
  await server.waitFor('listening');
});

afterAll(async () => {
  await lab?.destroy();
});

async function connect(address: string): Promise<{ client: NodeChild; id: number }> {
  const client = lab.spawn('b', fixture('forge-client'), ['--host', address, '--port', String(PORT)]);
  const { localPort } = await client.waitFor('connected');
  const accepted = await server.waitFor('accepted', 10_000, (e) => e.remotePort === localPort);
  return { client, id: accepted.id as number };
}

async function forge(id: number, tag: string, flags: number, seqOffset = 0): Promise<LabEvent> {
  server.send({ cmd: 'forge', id, tag, flags, seqOffset });
  return server.waitFor('forged', 10_000, (e) => e.tag === tag);
}

const ended = (c: NodeChild) => c.events.filter((e) => ['error', 'end', 'closed'].includes(e.event));

describe.each([
  { family: 4 as const, header: 20 },
  { family: 6 as const, header: 40 },
])('IPv$family forged segments', ({ family, header }) => {
  const serverAddress = () => (family === 4 ? lab.host('a').ipv4 : lab.host('a').ipv6);
  it('ignores a RST 1000 bytes into the window (RFC 5961) and resets on the exact sequence number', async () => {
    const { client, id } = await connect(serverAddress());

    const offWindow = await forge(id, `v${family}-rst-plus-1000`, TCP_RST, 1000);
    expect(offWindow.bytes).toBe(header + 20);
    expect(offWindow.family).toBe(family);
    await new Promise((r) => setTimeout(r, 300));
    expect(ended(client)).toEqual([]);
    // Still connected: real data from the server still arrives.
    server.send({ cmd: 'send', id, data: 'still-here' });
    expect((await client.waitFor('data')).text).toBe('still-here');

    const exact = await forge(id, `v${family}-rst-exact`, TCP_RST);
    const error = await client.waitFor('error', 5000);
    expect(error.code).toBe('ECONNRESET');
    const latencyMs = (error.t as number) - (exact.t as number);
    console.log(`IPv${family}: forged RST to ECONNRESET in ${latencyMs.toFixed(2)} ms`);
    expect(latencyMs).toBeLessThan(250);
  });

  it('ends the client read with EOF on FIN+ACK carrying the exact seq and ack', async () => {
    const { client, id } = await connect(serverAddress());
    const fin = await forge(id, `v${family}-fin`, TCP_FIN | TCP_ACK);
    const end = await client.waitFor('end', 5000);
    expect(client.events.find((e) => e.event === 'error')).toBeUndefined();
    console.log(`IPv${family}: forged FIN to EOF in ${((end.t as number) - (fin.t as number)).toFixed(2)} ms`);
  });
});

describe('sender socket', () => {
  it('marks every forged packet with 0x7a6b', async () => {
    const { stdout } = await lab.exec('a', 'nft', ['list', 'table', 'inet', 'tko_forge_test']);
    const packets = Number(/counter packets (\d+)/.exec(stdout)?.[1]);
    // Three forged segments per family; the kernel's own packets carry no mark.
    expect(packets).toBe(6);
  });
});
