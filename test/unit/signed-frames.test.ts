// The signed-frame core both wires use (src/wire/signed-frames.ts), on a toy format: seal and
// decode round-trip, each early refusal, the 4 GiB bound before allocating, the key and u64
// checks. The wires' own tests (log-mirror-wire, segment-wire) fuzz it through their readers.
import { describe, expect, it } from 'vitest';
import { BodyError } from '../../src/wire/body-reader.js';
import { checkU64, checkWireKey, fitText, FrameFormat, MAC_BYTES, U64_MAX } from '../../src/wire/signed-frames.js';

const KEY = Buffer.from('signed-frames-test-key-0123456789');
const TOY = new FrameFormat<'ping' | 'pong'>('toy', Buffer.from('TOYS'), 3, { ping: 1, pong: 7 }, 18);

function toy(type: 'ping' | 'pong', id: bigint, body: Buffer): Buffer {
  const b = TOY.alloc(body.length);
  b.writeBigUInt64BE(id, 10);
  body.copy(b, 18);
  return TOY.seal(b, type, KEY);
}
const read = (type: 'ping' | 'pong', r: import('../../src/wire/body-reader.js').BodyReader) => ({ type, text: r.text('text', 0, 20) });

describe('signed frames', () => {
  it('a sealed frame has its length, magic, version, type code and MAC, and decodes', () => {
    const f = toy('pong', 5n, Buffer.from('\x02hi'));
    expect(f.length).toBe(18 + 3 + MAC_BYTES);
    expect(f.readUInt32BE(0)).toBe(f.length - 4);
    expect(f.subarray(4, 10)).toEqual(Buffer.from([0x54, 0x4f, 0x59, 0x53, 3, 7]));
    expect(TOY.decode(f, KEY, read)).toEqual({ ok: true, frame: { type: 'pong', text: 'hi' } });
    expect(TOY.minFrameBytes).toBe(18 + MAC_BYTES);
  });

  it('each refusal of decode(), with its detail', () => {
    const f = toy('ping', 1n, Buffer.from('\x01x'));
    const mod = (at: number, v: number) => {
      const c = Buffer.from(f);
      c[at] = v;
      return c;
    };
    const reasonOf = (b: Buffer, key = KEY) => TOY.decode(b, key, read);
    expect(reasonOf(f.subarray(0, 40))).toMatchObject({ ok: false, reason: 'short' });
    expect(reasonOf(mod(4, 0x41))).toMatchObject({ ok: false, reason: 'magic', detail: 'not a toy frame (magic 414f5953)' });
    expect(reasonOf(mod(8, 4))).toMatchObject({ ok: false, reason: 'version', detail: 'version 4, this code speaks 3' });
    expect(reasonOf(mod(9, 2))).toMatchObject({ ok: false, reason: 'type', detail: 'type code 2' });
    expect(reasonOf(mod(12, 9))).toMatchObject({ ok: false, reason: 'hmac' });
    expect(reasonOf(f, Buffer.from('another-key-of-enough-bytes'))).toMatchObject({ ok: false, reason: 'hmac' });
    expect(reasonOf(toy('ping', 1n, Buffer.from('\x01xy')))).toEqual({ ok: false, reason: 'body', detail: 'ping frame has bytes after its body' });
    expect(reasonOf(toy('ping', 1n, Buffer.from('\x05x')))).toEqual({ ok: false, reason: 'body', detail: 'ping frame: truncated text' });
    expect(
      TOY.decode(f, KEY, () => {
        throw new BodyError('no');
      }),
    ).toEqual({ ok: false, reason: 'body', detail: 'ping frame: no' });
    // Not a BodyError: a bug in the reader, thrown.
    expect(() =>
      TOY.decode(f, KEY, () => {
        throw new TypeError('bug');
      }),
    ).toThrow('bug');
  });

  it('checkStart refuses as soon as the bytes are there', () => {
    expect(TOY.checkStart(Buffer.from([0, 0, 0, 9, 0x54, 0x4f, 0x59]))).toBeNull();
    expect(TOY.checkStart(Buffer.from([0, 0, 0, 9, 0x54, 0x4f, 0x59, 0x53, 3]))).toBeNull();
    expect(TOY.checkStart(Buffer.from([0, 0, 0, 9, 0x54, 0x4f, 0x59, 0x53, 3, 0]))).toMatchObject({ reason: 'type' });
  });

  it('alloc refuses a frame above 4 GiB before allocating; the format refuses a bad magic or header', () => {
    expect(() => TOY.alloc(2 ** 32)).toThrow(/does not fit the length field/);
    expect(() => new FrameFormat('x', Buffer.from('ABC'), 1, { a: 1 }, 18)).toThrow(RangeError);
    expect(() => new FrameFormat('x', Buffer.from('ABCD'), 1, { a: 1 }, 9)).toThrow(RangeError);
  });

  it('key, u64 and text checks', () => {
    expect(() => checkWireKey('k' as unknown as Buffer, "the toy's key", 16, ': a hint')).toThrow(new TypeError("the toy's key must be a Buffer (got string): a hint"));
    expect(() => checkWireKey(Buffer.alloc(15), "the toy's key", 16)).toThrow(new RangeError("the toy's key must be at least 16 bytes (got 15)"));
    expect(() => checkWireKey(Buffer.alloc(16), "the toy's key", 16)).not.toThrow();
    expect(() => checkU64('nonce', U64_MAX)).not.toThrow();
    expect(() => checkU64('nonce', U64_MAX + 1n)).toThrow('nonce 18446744073709551616 is not a u64');
    expect(() => checkU64('nonce', -1n)).toThrow(RangeError);
    expect(fitText('aé'.repeat(10), 5).toString()).toBe('aéa');
    expect(fitText('short', 200).toString()).toBe('short');
  });
});
