// Device identity: standard INQUIRY data (vendor, product, revision, peripheral type), the unit
// serial number (VPD 0x80) and designators (VPD 0x83: the NAA/EUI-64 names that say two device
// nodes are the same logical unit), READ CAPACITY. Parsers bounded by the buffer and the
// lengths the device claims, whichever is shorter.
import { inquiry, readCapacity16 } from './cdb.js';
import type { ScsiDevice } from './transport.js';

export interface StandardInquiry {
  peripheralType: number;
  vendor: string;
  product: string;
  revision: string;
  /** SPC version claimed (0x06 = SPC-4). */
  version: number;
}

export interface Designator {
  codeSet: number;
  association: number;
  type: number;
  /** Hex of binary designators, text of ASCII/UTF-8 ones. */
  value: string;
}

const text = (b: Buffer, from: number, to: number) => b.subarray(from, Math.min(to, b.length)).toString('latin1').replace(/\0/g, '').trim();

export function parseStandardInquiry(b: Buffer): StandardInquiry {
  if (b.length < 8) throw new RangeError(`standard INQUIRY data of ${b.length} bytes is truncated`);
  return { peripheralType: b[0]! & 0x1f, version: b[2]!, vendor: text(b, 8, 16), product: text(b, 16, 32), revision: text(b, 32, 36) };
}

export function parseUnitSerial(b: Buffer): string {
  if (b.length < 4 || b[1] !== 0x80) throw new RangeError('not a unit serial number page (0x80)');
  return text(b, 4, 4 + b.readUInt16BE(2));
}

export function parseDesignators(b: Buffer): Designator[] {
  if (b.length < 4 || b[1] !== 0x83) throw new RangeError('not a device identification page (0x83)');
  const end = Math.min(b.length, 4 + b.readUInt16BE(2));
  const out: Designator[] = [];
  for (let at = 4; at + 4 <= end; ) {
    const len = b[at + 3]!;
    if (at + 4 + len > end) break;
    const codeSet = b[at]! & 0x0f;
    const value = b.subarray(at + 4, at + 4 + len);
    out.push({ codeSet, association: (b[at + 1]! >> 4) & 0x03, type: b[at + 1]! & 0x0f, value: codeSet === 2 || codeSet === 3 ? value.toString('utf8').replace(/\0/g, '') : value.toString('hex') });
    at += 4 + len;
  }
  return out;
}

export async function identify(dev: ScsiDevice): Promise<StandardInquiry & { serial?: string; designators: Designator[] }> {
  const std = parseStandardInquiry((await dev.execute({ cdb: inquiry(96), dataIn: 96 })).data);
  const page = async (n: number) => (await dev.execute({ cdb: inquiry(255, n), dataIn: 255 })).data;
  const serial = await page(0x80).then(parseUnitSerial, () => undefined);
  const designators = await page(0x83).then(parseDesignators, () => []);
  return { ...std, ...(serial !== undefined ? { serial } : {}), designators };
}

export async function capacity(dev: ScsiDevice): Promise<{ blocks: bigint; blockSize: number }> {
  const d = (await dev.execute({ cdb: readCapacity16(32), dataIn: 32 })).data;
  if (d.length < 12) throw new RangeError(`READ CAPACITY(16) data of ${d.length} bytes is truncated`);
  return { blocks: d.readBigUInt64BE(0) + 1n, blockSize: d.readUInt32BE(8) };
}
