// The replication datagram: every message round-trips, every change of a signed datagram is
// refused, and a fuzz of correctly signed random bodies only ever yields a message or a refusal
// (never an exception, never something that does not encode back to the same bytes).
import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  decodeReplication,
  encodeRecord,
  encodeReplication,
  MAX_DATAGRAM,
  recordBytes,
  recordRoom,
  type ConnectionRecord,
  type Envelope,
  type ReplicationMessage,
} from '../../src/agent/replication/wire.js';
import { prng } from './frame-builder.js';

const key = Buffer.from('cluster shared key, 32 bytes ...');
const env = (message: ReplicationMessage, over: Partial<Envelope> = {}): Envelope => ({
  from: 'node-a',
  to: 'nœud-β',
  link: 1,
  fromIncarnation: 1_700_000_000_000n,
  toIncarnation: 2n ** 63n + 5n,
  seq: 42n,
  message,
  ...over,
});

const upsert4: ConnectionRecord = {
  op: 'upsert',
  service: 0,
  peer: { address: '198.18.7.3', port: 40000 },
  ageMs: 12,
  state: {
    deadNextSeq: 0xfffffff0, peerNextSeq: 7, peerAck: 0xfffffff0, deadAck: 7, deadWindow: 502, peerWindow: 8, deadTsval: 123456, peerTsval: 99,
    handshake: { deadWscale: 7, peerWscale: 14, deadMss: 1460, peerMss: 1448, sackPermitted: true },
  },
  boundary: { atBoundary: true, reason: 'at a message boundary' },
};
const upsert6: ConnectionRecord = {
  op: 'upsert',
  service: 15,
  peer: { address: 'fd7a:6b00:7::3', port: 1 },
  ageMs: 0,
  state: { deadNextSeq: 1, peerNextSeq: 2, peerAck: 1, deadAck: 2, deadWindow: 65535, peerWindow: 0, handshake: { deadWscale: -1, peerWscale: 0, deadMss: 0, peerMss: 536, sackPermitted: false } },
  boundary: { atBoundary: false, reason: 'the server is in the middle of a message — ümlaut' },
};
const bare: ConnectionRecord = { op: 'upsert', service: 3, peer: { address: '::ffff:198.18.7.9', port: 65535 }, ageMs: 0 };
const removal: ConnectionRecord = { op: 'remove', service: 1, peer: { address: '198.18.7.4', port: 2 } };

const messages: ReplicationMessage[] = [
  { type: 'subscribe', services: [{ address: '198.18.7.2', port: 6379, goodbye: 'resp' }, { address: 'fd7a:6b00:7::2', port: 5432 }] },
  { type: 'sync', epoch: 3, part: 0, last: false, records: [upsert4, upsert6, bare] },
  { type: 'sync', epoch: 3, part: 1, last: true, records: [] },
  { type: 'delta', epoch: 0xffffffff, records: [upsert4, removal, bare] },
  { type: 'summary', epoch: 9, connections: 10_000, pending: 17 },
  { type: 'subscribe', services: [] }, // the subscriber wants nothing more
];

describe('replication datagrams', () => {
  it.each(messages.map((m) => [m.type, m] as const))('%s round-trips', (_type, m) => {
    const b = encodeReplication(env(m), key);
    expect(b.length).toBeLessThanOrEqual(MAX_DATAGRAM);
    expect(decodeReplication(b, key)).toEqual({ ok: true, envelope: env(m) });
  });

  it('every single-bit change and every truncation is refused; another key is refused', () => {
    const b = encodeReplication(env(messages[3]!), key);
    for (let i = 0; i < b.length * 8; i++) {
      const c = Buffer.from(b);
      c[i >> 3] = c[i >> 3]! ^ (1 << (i & 7));
      expect(decodeReplication(c, key).ok, `bit ${i}`).toBe(false);
    }
    for (let n = 0; n < b.length; n++) expect(decodeReplication(b.subarray(0, n), key).ok).toBe(false);
    expect(decodeReplication(b, Buffer.from('another key of the cluster....'))).toEqual({ ok: false, reason: 'hmac' });
    expect(decodeReplication(Buffer.from('TKHB' + 'x'.repeat(80)), key)).toEqual({ ok: false, reason: 'magic' });
  });

  it('recordBytes is the encoded size of every kind of record', () => {
    const long = { ...upsert6, boundary: { atBoundary: false, reason: 'x'.repeat(300) } };
    const noOptions = { ...upsert4, state: { ...upsert4.state!, handshake: undefined } };
    for (const r of [upsert4, upsert6, bare, removal, long, noOptions, { ...upsert4, state: { ...upsert4.state!, peerTsval: undefined } }]) {
      expect(recordBytes(r), JSON.stringify(r).slice(0, 80)).toBe(encodeRecord(r).length);
    }
    // The largest record fits an empty datagram between the longest node ids (the publisher packs
    // at least one record into each).
    const longest = 'n'.repeat(64);
    const largest = { ...long, state: upsert4.state }; // IPv6, every field, the longest reason
    expect(recordBytes(largest)).toBe(encodeRecord(largest).length);
    expect(recordBytes(largest)).toBeLessThan(recordRoom(longest, longest, 'sync'));
  });

  it('a datagram packed to recordRoom fits; encoding refuses what cannot be sent', () => {
    const room = recordRoom('node-a', 'nœud-β', 'delta');
    const one: ConnectionRecord = { ...upsert4, boundary: undefined };
    const n = recordBytes(one);
    expect(n).toBe(48); // an IPv4 upsert with sequence numbers, timestamps and the handshake's options
    const records: ConnectionRecord[] = [];
    for (let size = 0; size + n <= room; size += n) records.push({ ...one, peer: { address: '198.18.7.3', port: 1000 + records.length } });
    const b = encodeReplication(env({ type: 'delta', epoch: 1, records }), key);
    expect(b.length).toBeLessThanOrEqual(MAX_DATAGRAM);
    expect(b.length).toBeGreaterThan(MAX_DATAGRAM - n);
    expect(recordBytes(removal)).toBe(9);
    expect(() => encodeReplication(env({ type: 'delta', epoch: 1, records: [...records, ...records] }), key)).toThrow(/exceeds 1400/);
    expect(() => encodeReplication(env({ type: 'sync', epoch: 1, part: 0, last: true, records: [removal] }), key)).toThrow(/upserts only/);
    expect(() => encodeReplication(env({ type: 'subscribe', services: Array.from({ length: 17 }, (_, i) => ({ address: '1.2.3.4', port: 1 + i })) }), key)).toThrow(/0\.\.16 services, not 17/);
    expect(() => encodeReplication(env({ type: 'subscribe', services: [{ address: '1.2.3.4', port: 1, goodbye: 'Bad Name' }] }), key)).toThrow(/goodbye name/);
    expect(() => encodeReplication(env(messages[4]!, { from: '' }), key)).toThrow(/node id/);
    expect(() => encodeReplication(env(messages[4]!, { link: 256 }), key)).toThrow(/link id/);
  });

  it('fuzz: correctly signed random and mutated bodies decode to a message that re-encodes to the same bytes, or are refused', () => {
    const rnd = prng(4242);
    const valid = messages.map((m) => encodeReplication(env(m), key));
    let accepted = 0;
    const reasons = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      let body: Buffer;
      if (rnd() < 0.5) {
        // A valid datagram's body with a few bytes changed, a cut or an extension: then signed.
        const v = valid[Math.floor(rnd() * valid.length)]!;
        body = Buffer.from(v.subarray(0, v.length - 32));
        for (let k = Math.floor(rnd() * 4); k >= 0; k--) body[6 + Math.floor(rnd() * (body.length - 6))] = Math.floor(rnd() * 256);
        if (rnd() < 0.2) body = body.subarray(0, 6 + Math.floor(rnd() * (body.length - 6)));
        if (rnd() < 0.1) body = Buffer.concat([body, randomBytes(1 + Math.floor(rnd() * 8))]);
      } else {
        body = Buffer.concat([Buffer.from([0x54, 0x4b, 0x43, 0x52, 1, 1 + Math.floor(rnd() * 4)]), randomBytes(Math.floor(rnd() * 300))]);
      }
      const signed = Buffer.concat([body, createHmac('sha256', key).update(body).digest()]);
      const r = decodeReplication(signed, key);
      if (r.ok) {
        accepted++;
        // What was accepted means exactly what it says: it encodes back to the same bytes.
        expect(encodeReplication(r.envelope, key).equals(signed)).toBe(true);
      } else {
        reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
      }
    }
    expect(accepted).toBeGreaterThan(100);
    expect(reasons.get('body')).toBeGreaterThan(1000);
  });
});
