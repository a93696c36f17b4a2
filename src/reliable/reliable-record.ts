// What the reliable server writes to the mirrored log for each request it applies (seed 004
// step 240: the transaction record; steps 212-214: the stored reply a duplicate gets). Pure.
//
// One record per applied request (little endian, as the log's own files):
//    0  1  version = 1
//    1  1  client ID length n (1..64)
//    2  n  client ID (UTF-8)
//  2+n  8  message ID (u64, 1 .. 2^53-1)
// 10+n  8  acknowledged below (u64): the client held the replies of its messages below this
// 18+n  4  request length r (u32), then r bytes of request
//   ..  4  reply length q (u32), then q bytes of reply
// The reply is stored, not only the request: the duplicate table is rebuilt from the log as it
// was (the reply a client may already have seen), and a replay can check that the application is
// deterministic (the recomputed reply equals the stored one).

export interface ReliableRecord {
  clientId: string;
  msgId: number;
  ackBelow: number;
  request: Buffer;
  reply: Buffer;
}

/** A record that is not one of ours (or another version): the log holds something else. */
export class ReliableRecordError extends Error {
  override readonly name = 'ReliableRecordError';
  readonly code = 'ERELIABLERECORD';
}

export function encodeRecord(r: ReliableRecord): Buffer {
  const id = Buffer.from(r.clientId, 'utf8');
  if (id.length < 1 || id.length > 64) throw new RangeError(`client ID of ${id.length} bytes (1..64)`);
  const out = Buffer.alloc(2 + id.length + 16 + 4 + r.request.length + 4 + r.reply.length);
  let p = 0;
  out[p++] = 1;
  out[p++] = id.length;
  p += id.copy(out, p);
  out.writeBigUInt64LE(BigInt(r.msgId), p);
  out.writeBigUInt64LE(BigInt(r.ackBelow), p + 8);
  p += 16;
  out.writeUInt32LE(r.request.length, p);
  p += 4 + r.request.copy(out, p + 4);
  out.writeUInt32LE(r.reply.length, p);
  r.reply.copy(out, p + 4);
  return out;
}

/** Decodes a record; ReliableRecordError when it is malformed (the log is not this server's). */
export function decodeRecord(b: Buffer): ReliableRecord {
  const bad = (why: string) => new ReliableRecordError(`not a reliable-server record: ${why}`);
  if (b.length < 2 || b[0] !== 1) throw bad('version');
  const n = b[1]!;
  if (n < 1 || n > 64 || b.length < 2 + n + 20) throw bad('client ID');
  let p = 2;
  const clientId = b.toString('utf8', p, p + n);
  p += n;
  const msgId = Number(b.readBigUInt64LE(p));
  const ackBelow = Number(b.readBigUInt64LE(p + 8));
  p += 16;
  const rl = b.readUInt32LE(p);
  p += 4;
  if (p + rl + 4 > b.length) throw bad('request length');
  const request = Buffer.from(b.subarray(p, p + rl));
  p += rl;
  const ql = b.readUInt32LE(p);
  p += 4;
  if (p + ql !== b.length) throw bad('reply length');
  return { clientId, msgId, ackBelow, request, reply: Buffer.from(b.subarray(p)) };
}
