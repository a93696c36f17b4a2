// Sense data (SPC-4 §4.5): fixed format (0x70/0x71) and descriptor format (0x72/0x73), to the
// sense key and additional sense code with their names. Total on any input: a buffer that is
// truncated, empty or garbage decodes to { valid: false, reason } and never throws or reads out
// of bounds, because sense comes from devices and drivers we do not control.

export const SENSE_KEYS = [
  'NO SENSE', 'RECOVERED ERROR', 'NOT READY', 'MEDIUM ERROR', 'HARDWARE ERROR', 'ILLEGAL REQUEST', 'UNIT ATTENTION', 'DATA PROTECT',
  'BLANK CHECK', 'VENDOR SPECIFIC', 'COPY ABORTED', 'ABORTED COMMAND', 'RESERVED (0xC)', 'VOLUME OVERFLOW', 'MISCOMPARE', 'COMPLETED',
] as const;

export const KEY = { noSense: 0, notReady: 2, mediumError: 3, hardwareError: 4, illegalRequest: 5, unitAttention: 6, dataProtect: 7, abortedCommand: 0xb } as const;

/** The additional sense codes takeover acts on or reports (ASC/ASCQ as 0xAAQQ). */
const ASC_NAMES: ReadonlyMap<number, string> = new Map([
  [0x0000, 'no additional sense information'],
  [0x0401, 'logical unit is in process of becoming ready'],
  [0x0402, 'logical unit not ready, initializing command required'],
  [0x0403, 'logical unit not ready, manual intervention required'],
  [0x0500, 'logical unit does not respond to selection'],
  [0x0800, 'logical unit communication failure'],
  [0x1100, 'unrecovered read error'],
  [0x1a00, 'parameter list length error'],
  [0x2000, 'invalid command operation code'],
  [0x2100, 'logical block address out of range'],
  [0x2400, 'invalid field in cdb'],
  [0x2500, 'logical unit not supported'],
  [0x2600, 'invalid field in parameter list'],
  [0x2700, 'write protected'],
  [0x2800, 'not ready to ready change, medium may have changed'],
  [0x2900, 'power on, reset, or bus device reset occurred'],
  [0x2901, 'power on occurred'],
  [0x2902, 'scsi bus reset occurred'],
  [0x2903, 'bus device reset function occurred'],
  [0x2907, 'i_t nexus loss occurred'],
  [0x2a01, 'mode parameters changed'],
  [0x2a03, 'reservations preempted'],
  [0x2a04, 'reservations released'],
  [0x2a05, 'registrations preempted'],
  [0x2a09, 'capacity data has changed'],
  [0x2c00, 'command sequence error'],
  [0x2f00, 'commands cleared by another initiator'],
  [0x3a00, 'medium not present'],
  [0x3f0e, 'reported luns data has changed'],
  [0x4700, 'scsi parity error'],
  [0x5500, 'system resource failure'],
]);

export interface Sense {
  valid: true;
  format: 'fixed' | 'descriptor';
  deferred: boolean;
  key: number;
  keyName: string;
  asc: number;
  ascq: number;
  /** e.g. "UNIT ATTENTION: reservations preempted (2A/03)" */
  description: string;
  /** Fixed format's INFORMATION field when VALID is set, or a descriptor type 0's. */
  information?: bigint;
}

export type SenseResult = Sense | { valid: false; reason: string };

export function ascName(asc: number, ascq: number): string {
  return ASC_NAMES.get((asc << 8) | ascq) ?? (asc >= 0x80 || ascq >= 0x80 ? 'vendor specific' : 'unknown additional sense code');
}

const hex2 = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');

export function decodeSense(buf: Uint8Array): SenseResult {
  if (buf.length === 0) return { valid: false, reason: 'no sense data' };
  const code = buf[0]! & 0x7f;
  let key: number;
  let asc: number;
  let ascq: number;
  let information: bigint | undefined;
  let format: Sense['format'];
  if (code === 0x70 || code === 0x71) {
    if (buf.length < 3) return { valid: false, reason: `fixed-format sense of ${buf.length} bytes is truncated before the sense key` };
    format = 'fixed';
    key = buf[2]! & 0x0f;
    // ASC/ASCQ sit at 12-13 and are covered by the additional length (byte 7); a short one means none.
    const end = buf.length >= 8 ? Math.min(buf.length, 8 + buf[7]!) : buf.length;
    asc = end > 12 ? buf[12]! : 0;
    ascq = end > 13 ? buf[13]! : 0;
    if (buf[0]! & 0x80 && buf.length >= 7) information = BigInt((buf[3]! << 24 >>> 0) + (buf[4]! << 16) + (buf[5]! << 8) + buf[6]!);
  } else if (code === 0x72 || code === 0x73) {
    if (buf.length < 4) return { valid: false, reason: `descriptor-format sense of ${buf.length} bytes is truncated before ASC/ASCQ` };
    format = 'descriptor';
    key = buf[1]! & 0x0f;
    asc = buf[2]!;
    ascq = buf[3]!;
    // Walk the descriptors for an INFORMATION one (type 0), within both the buffer and byte 7.
    const end = buf.length >= 8 ? Math.min(buf.length, 8 + buf[7]!) : buf.length;
    for (let at = 8; at + 2 <= end; ) {
      const type = buf[at]!;
      const len = buf[at + 1]!;
      if (at + 2 + len > end) break;
      if (type === 0 && len >= 10) information = Buffer.from(buf.subarray(at + 4, at + 12)).readBigUInt64BE(0);
      at += 2 + len;
    }
  } else {
    return { valid: false, reason: `response code 0x${hex2(code)} is not sense data (0x70-0x73)` };
  }
  const keyName = SENSE_KEYS[key]!;
  return {
    valid: true,
    format,
    deferred: code === 0x71 || code === 0x73,
    key,
    keyName,
    asc,
    ascq,
    description: `${keyName}: ${ascName(asc, ascq)} (${hex2(asc)}/${hex2(ascq)})`,
    ...(information !== undefined ? { information } : {}),
  };
}
