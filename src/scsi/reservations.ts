// SPC-2 and SPC-3 reservations on one device, typed: the PR IN replies parsed, PR OUT sent with
// its parameter list, a target without persistent reservations reported as such (its PR IN/OUT
// is an invalid opcode), and RESERVATION CONFLICT as its own error. Implements what the fencer
// needs (ReservationDevice), so fencing runs over SG_IO unchanged.
import type { ReservationDevice } from '../fence/fencer.js';
import { PR_IN, PR_OUT, persistentReserveIn, persistentReserveOut, release10, release6, reserve10, reserve6 } from './cdb.js';
import { isIllegalRequest, NoPersistentReservationsError, type ScsiDevice } from './transport.js';

export interface Keys {
  generation: number;
  keys: bigint[];
}

export interface Reservation {
  generation: number;
  reservation?: { key: bigint; type: number; scope: number };
}

export interface Capabilities {
  /** Compatible Reservation Handling, Specify Initiator Ports, All Target Ports, Persist Through Power Loss capable. */
  crh: boolean;
  sipC: boolean;
  atpC: boolean;
  ptplC: boolean;
  /** Persist through power loss activated. */
  ptplA: boolean;
  /** Reservation types the device supports (when its type mask is valid). */
  types: number[] | undefined;
}

export interface FullStatusEntry {
  key: bigint;
  holder: boolean;
  allTargetPorts: boolean;
  type: number;
  scope: number;
  relativeTargetPort: number;
  transportId: Buffer;
}

export class PrFormatError extends Error {
  override readonly name = 'PrFormatError';
}

function need(buf: Buffer, n: number, what: string): void {
  if (buf.length < n) throw new PrFormatError(`${what}: ${buf.length} bytes, at least ${n} needed`);
}

/** READ KEYS data: generation, then the keys the additional length covers (whole keys only). */
export function parseReadKeys(buf: Buffer): Keys {
  need(buf, 8, 'READ KEYS');
  const generation = buf.readUInt32BE(0);
  const length = Math.min(buf.readUInt32BE(4), buf.length - 8);
  const keys: bigint[] = [];
  for (let at = 8; at + 8 <= 8 + length; at += 8) keys.push(buf.readBigUInt64BE(at));
  return { generation, keys };
}

export function parseReadReservation(buf: Buffer): Reservation {
  need(buf, 8, 'READ RESERVATION');
  const generation = buf.readUInt32BE(0);
  const length = buf.readUInt32BE(4);
  if (length === 0) return { generation };
  need(buf, 24, 'READ RESERVATION with a reservation');
  return { generation, reservation: { key: buf.readBigUInt64BE(8), scope: buf[21]! >> 4, type: buf[21]! & 0x0f } };
}

export function parseReportCapabilities(buf: Buffer): Capabilities {
  need(buf, 8, 'REPORT CAPABILITIES');
  const tmv = (buf[3]! & 0x80) !== 0;
  const mask = buf.readUInt16BE(4);
  // Type mask bits (SPC-4 table 215): byte 4 bit 7 WR_EX_AR(7), 6 EX_AC_RO(6), 5 WR_EX_RO(5), 3 EX_AC(3), 1 WR_EX(1); byte 5 bit 0 EX_AC_AR(8).
  const bits: Array<[number, number]> = [[0x8000, 7], [0x4000, 6], [0x2000, 5], [0x0800, 3], [0x0200, 1], [0x0001, 8]];
  return {
    crh: (buf[2]! & 0x10) !== 0,
    sipC: (buf[2]! & 0x08) !== 0,
    atpC: (buf[2]! & 0x04) !== 0,
    ptplC: (buf[2]! & 0x01) !== 0,
    ptplA: (buf[3]! & 0x01) !== 0,
    types: tmv ? bits.filter(([bit]) => mask & bit).map(([, t]) => t).sort((a, b) => a - b) : undefined,
  };
}

export function parseReadFullStatus(buf: Buffer): { generation: number; entries: FullStatusEntry[] } {
  need(buf, 8, 'READ FULL STATUS');
  const generation = buf.readUInt32BE(0);
  const end = 8 + Math.min(buf.readUInt32BE(4), buf.length - 8);
  const entries: FullStatusEntry[] = [];
  for (let at = 8; at + 24 <= end; ) {
    const idLen = buf.readUInt32BE(at + 20);
    if (at + 24 + idLen > end) throw new PrFormatError(`READ FULL STATUS: a descriptor's TransportID (${idLen} bytes) runs past the data`);
    entries.push({
      key: buf.readBigUInt64BE(at),
      allTargetPorts: (buf[at + 12]! & 0x02) !== 0,
      holder: (buf[at + 12]! & 0x01) !== 0,
      scope: buf[at + 13]! >> 4,
      type: buf[at + 13]! & 0x0f,
      relativeTargetPort: buf.readUInt16BE(at + 18),
      transportId: Buffer.from(buf.subarray(at + 24, at + 24 + idLen)),
    });
    at += 24 + idLen;
  }
  return { generation, entries };
}

export class PersistentReservations implements ReservationDevice {
  constructor(readonly device: ScsiDevice) {}

  get name(): string {
    return this.device.name;
  }

  async readKeys(): Promise<Keys> {
    return parseReadKeys(await this.prIn(PR_IN.readKeys));
  }

  async readReservation(): Promise<Reservation> {
    return parseReadReservation(await this.prIn(PR_IN.readReservation));
  }

  async reportCapabilities(): Promise<Capabilities> {
    return parseReportCapabilities(await this.prIn(PR_IN.reportCapabilities));
  }

  async readFullStatus(): Promise<{ generation: number; entries: FullStatusEntry[] }> {
    return parseReadFullStatus(await this.prIn(PR_IN.readFullStatus));
  }

  register(key: bigint, newKey: bigint, options: { aptpl?: boolean } = {}): Promise<void> {
    return this.prOut(PR_OUT.register, { key, serviceActionKey: newKey, ...options });
  }

  registerAndIgnore(newKey: bigint, options: { aptpl?: boolean } = {}): Promise<void> {
    return this.prOut(PR_OUT.registerAndIgnore, { key: 0n, serviceActionKey: newKey, ...options });
  }

  reserve(key: bigint, type: number): Promise<void> {
    return this.prOut(PR_OUT.reserve, { key, type });
  }

  release(key: bigint, type: number): Promise<void> {
    return this.prOut(PR_OUT.release, { key, type });
  }

  clear(key: bigint): Promise<void> {
    return this.prOut(PR_OUT.clear, { key });
  }

  preempt(key: bigint, victim: bigint, type: number): Promise<void> {
    return this.prOut(PR_OUT.preempt, { key, serviceActionKey: victim, type });
  }

  preemptAndAbort(key: bigint, victim: bigint, type: number): Promise<void> {
    return this.prOut(PR_OUT.preemptAndAbort, { key, serviceActionKey: victim, type });
  }

  /** SPC-2 RESERVE/RELEASE (6 or 10 byte): the whole logical unit for this initiator. */
  async reserveLegacy(size: 6 | 10 = 6): Promise<void> {
    await this.device.execute({ cdb: size === 6 ? reserve6() : reserve10() });
  }

  async releaseLegacy(size: 6 | 10 = 6): Promise<void> {
    await this.device.execute({ cdb: size === 6 ? release6() : release10() });
  }

  private async prIn(serviceAction: number): Promise<Buffer> {
    return (await this.noPrAsSuch(() => this.device.execute({ cdb: persistentReserveIn(serviceAction, 8192), dataIn: 8192 }))).data;
  }

  private async prOut(serviceAction: number, p: Parameters<typeof persistentReserveOut>[1]): Promise<void> {
    const { cdb, data } = persistentReserveOut(serviceAction, p);
    await this.noPrAsSuch(() => this.device.execute({ cdb, dataOut: data }));
  }

  /** An invalid opcode for PR IN/OUT means the target has no persistent reservations at all. */
  private async noPrAsSuch<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (isIllegalRequest(err, 0x20)) {
        throw new NoPersistentReservationsError(`${this.name}: target does not support persistent reservations (PERSISTENT RESERVE IN/OUT is an invalid opcode)`, this.name, err.opcode, err.reply);
      }
      throw err;
    }
  }
}
