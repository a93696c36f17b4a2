// One address, one holder: the settlement between a taker and the node it took an address from,
// over the claims their heartbeats carry (no network: a fake host and heartbeat source).
import { createHmac } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AddressHolding, type AddressReleased } from '../../src/agent/address-holding.js';
import type { AddressClaim } from '../../src/monitor/heartbeat-packet.js';
import { decodeHeartbeat, encodeHeartbeat, MAX_CLAIMS } from '../../src/monitor/heartbeat-packet.js';
import { prng } from './frame-builder.js';

const scratch = mkdtempSync(path.join(tmpdir(), 'tko-hold-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function node(opts: { takeovers?: Array<{ peer: string; address: string }>; have: string[]; fenced?: boolean; stateFile?: string }) {
  const hb = new EventEmitter<{ heard: [{ node: string; claims: AddressClaim[] }] }>();
  const have = new Set(opts.have);
  const removed: string[] = [];
  const h = new AddressHolding({
    takeovers: opts.takeovers ?? [],
    heartbeat: hb,
    isFenced: () => opts.fenced ?? false,
    freshMs: 1000,
    stateFile: opts.stateFile ?? path.join(mkdtempSync(path.join(scratch, 'hold-')), 'taken.json'),
    find: (a) => (have.has(a) ? { ifname: 'eth0', prefixLength: 24 } : undefined),
    remove: (_i, a) => {
      removed.push(a);
      have.delete(a);
    },
  });
  const released: AddressReleased[] = [];
  h.on('released', (r) => released.push(r));
  return { h, hb, have, removed, released, hear: (from: string, claims: AddressClaim[]) => hb.emit('heard', { node: from, claims }) };
}

describe('AddressHolding', () => {
  it('the taker gives a taken address back when the node it took it from claims it: one exchange, one holder', async () => {
    const dir = mkdtempSync(path.join(scratch, 'hold-'));
    const b = node({ takeovers: [{ peer: 'a', address: '10.0.0.100' }], have: ['10.0.0.100'], stateFile: path.join(dir, 'b.json') });
    const a = node({ have: ['10.0.0.100'] });
    b.h.tookOver('a', '10.0.0.100');
    expect(b.h.claims()).toEqual([{ address: '10.0.0.100', taken: true }]);
    expect(a.h.claims()).toEqual([]); // a claims its own address only when a peer contests it
    a.hear('b', b.h.claims());
    expect(a.h.claims()).toEqual([{ address: '10.0.0.100', taken: false }]);
    b.hear('a', a.h.claims());
    expect(b.removed).toEqual(['10.0.0.100']);
    expect(b.released).toEqual([{ address: '10.0.0.100', to: 'a', why: 'gave-back', at: expect.any(Number) }]);
    expect(b.h.claims()).toEqual([]);
    expect(a.removed).toEqual([]);
    await new Promise((r) => setTimeout(r, 50));
    expect(JSON.parse(readFileSync(path.join(dir, 'b.json'), 'utf8'))).toEqual({});
  });

  it('the owner announces its address again once the taker gave it back (the clients\' neighbour caches still point at the taker)', async () => {
    const announced: string[] = [];
    const hb = new EventEmitter<{ heard: [{ node: string; claims: AddressClaim[] }] }>();
    const a = new AddressHolding({
      takeovers: [], heartbeat: hb, isFenced: () => false, freshMs: 1000,
      stateFile: path.join(mkdtempSync(path.join(scratch, 'hold-')), 'taken.json'),
      find: (x) => (x === '10.0.0.100' ? { ifname: 'eth0', prefixLength: 24 } : undefined),
      remove: () => undefined,
      announce: async (ifname, address) => void announced.push(`${ifname} ${address}`),
    });
    const reclaimed = new Promise((r) => a.once('reclaimed', r));
    hb.emit('heard', { node: 'b', claims: [{ address: '10.0.0.100', taken: true }] });
    hb.emit('heard', { node: 'b', claims: [{ address: '10.0.0.100', taken: true }] }); // still taken: nothing
    expect(announced).toEqual([]);
    hb.emit('heard', { node: 'c', claims: [] }); // another peer's heartbeat says nothing of it
    expect(announced).toEqual([]);
    hb.emit('heard', { node: 'b', claims: [] }); // b gave it back
    expect(await reclaimed).toEqual({ address: '10.0.0.100', from: 'b', at: expect.any(Number) });
    expect(announced).toEqual(['eth0 10.0.0.100']);
    hb.emit('heard', { node: 'b', claims: [] });
    expect(announced).toHaveLength(1); // once
    a.close();
  });

  it('a fenced node gives up what a peer took over instead of claiming it', () => {
    const a = node({ have: ['10.0.0.100'], fenced: true });
    a.hear('b', [{ address: '10.0.0.100', taken: true }]);
    expect(a.removed).toEqual(['10.0.0.100']);
    expect(a.released[0]).toMatchObject({ to: 'b', why: 'gave-up' });
  });

  it('a claim from another peer than the one the address was taken from, or for an address not here, changes nothing', () => {
    const b = node({ takeovers: [{ peer: 'a', address: '10.0.0.100' }], have: ['10.0.0.100'] });
    b.h.tookOver('a', '10.0.0.100');
    b.hear('c', [{ address: '10.0.0.100', taken: false }]);
    b.hear('a', [{ address: '10.0.0.7', taken: false }, { address: '10.0.0.8', taken: true }]);
    expect(b.removed).toEqual([]);
    expect(b.h.claims()).toEqual([{ address: '10.0.0.100', taken: true }]);
  });

  it('a restarted taker still knows which addresses it took (persisted), if they are still on the host', async () => {
    const stateFile = path.join(mkdtempSync(path.join(scratch, 'hold-')), 'taken.json');
    const first = node({ takeovers: [{ peer: 'a', address: '10.0.0.100' }], have: ['10.0.0.100'], stateFile });
    first.h.tookOver('a', '10.0.0.100');
    await new Promise((r) => setTimeout(r, 50));
    expect(node({ have: ['10.0.0.100'], stateFile }).h.holding()).toEqual([{ address: '10.0.0.100', from: 'a' }]);
    expect(node({ have: [], stateFile }).h.holding()).toEqual([]);
  });

  it('claims ride the heartbeat, authenticated, both families; malformed claim lists are refused', () => {
    const key = Buffer.from('a cluster key of 16+ bytes');
    const rnd = prng(7);
    for (let i = 0; i < 200; i++) {
      const claims: AddressClaim[] = Array.from({ length: Math.floor(rnd() * (MAX_CLAIMS + 1)) }, () => {
        const address =
          rnd() < 0.5
            ? Array.from({ length: 4 }, () => Math.floor(rnd() * 256)).join('.')
            : new URL(`http://[${Array.from({ length: 8 }, () => Math.floor(rnd() * 4) === 0 ? '0' : Math.floor(rnd() * 65536).toString(16)).join(':')}]`).hostname.slice(1, -1);
        // Taken, own, or own under a lease (1..65535 s).
        const kind = rnd();
        return kind < 0.33 ? { address, taken: true } : kind < 0.66 ? { address, taken: false } : { address, taken: false, leaseSeconds: 1 + Math.floor(rnd() * 65535) };
      });
      const hb = { node: 'b', link: 0, incarnation: 1n, seq: BigInt(i + 1), sentAtMs: 1, ...(claims.length ? { claims } : {}) };
      expect(decodeHeartbeat(encodeHeartbeat(hb, key), key)).toEqual({ ok: true, heartbeat: hb });
    }
    expect(() => encodeHeartbeat({ node: 'b', link: 0, incarnation: 1n, seq: 1n, sentAtMs: 1, claims: Array(MAX_CLAIMS + 1).fill({ address: '10.0.0.1', taken: false }) }, key)).toThrow(RangeError);
  });
});

describe('a leased claim on the wire', () => {
  const VIP = '10.0.0.100';
  const key = Buffer.from('a cluster key of 16+ bytes');
  const resign = (buf: Buffer) => {
    const body = buf.subarray(0, buf.length - 32);
    return Buffer.concat([body, createHmac('sha256', key).update(body).digest()]);
  };
  const hb = (claims: AddressClaim[]) => ({ node: 'a', link: 0, incarnation: 1n, seq: 1n, sentAtMs: 1, claims });

  it('carries the lease (u16 seconds) after the flags; a taken claim is never leased', () => {
    const claims = [{ address: VIP, taken: false, leaseSeconds: 65535 }, { address: 'fd00::1', taken: false, leaseSeconds: 1 }, { address: '10.0.0.9', taken: true }];
    expect(decodeHeartbeat(encodeHeartbeat(hb(claims), key), key)).toEqual({ ok: true, heartbeat: hb(claims) });
    expect(() => encodeHeartbeat(hb([{ address: VIP, taken: true, leaseSeconds: 5 }]), key)).toThrow(RangeError);
    for (const s of [0, 65536, 1.5]) expect(() => encodeHeartbeat(hb([{ address: VIP, taken: false, leaseSeconds: s }]), key)).toThrow(RangeError);
  });

  it('refuses (claims) a lease of 0, a cut lease, and taken + leased, even when signed', () => {
    const good = encodeHeartbeat(hb([{ address: VIP, taken: false, leaseSeconds: 5 }]), key);
    const flagsAt = good.length - 32 - 3; // flags, then the u16 lease, then the HMAC
    expect(good[flagsAt]).toBe(2);
    const zero = Buffer.from(good);
    zero.writeUInt16BE(0, flagsAt + 1);
    const both = Buffer.from(good);
    both[flagsAt] = 3;
    const unknown = Buffer.from(good);
    unknown[flagsAt] = 4;
    const cut = Buffer.concat([good.subarray(0, flagsAt + 2), good.subarray(good.length - 32)]);
    for (const bad of [zero, both, unknown, cut]) expect(decodeHeartbeat(resign(bad), key)).toEqual({ ok: false, reason: 'claims' });
  });
});
