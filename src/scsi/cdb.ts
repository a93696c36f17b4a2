// SCSI command descriptor blocks (SPC-4, SBC-3) for the commands takeover uses: identity,
// readiness, SPC-2 and SPC-3 reservations, and one-block reads and writes for tests. Pure
// byte layout; every argument is checked so a bad key or type never reaches a device.

export const OP = {
  testUnitReady: 0x00,
  reserve6: 0x16,
  release6: 0x17,
  inquiry: 0x12,
  readCapacity10: 0x25,
  read10: 0x28,
  write10: 0x2a,
  reserve10: 0x56,
  release10: 0x57,
  prIn: 0x5e,
  prOut: 0x5f,
  serviceActionIn16: 0x9e,
} as const;

export const PR_IN = { readKeys: 0, readReservation: 1, reportCapabilities: 2, readFullStatus: 3 } as const;
export const PR_OUT = { register: 0, reserve: 1, release: 2, clear: 3, preempt: 4, preemptAndAbort: 5, registerAndIgnore: 6 } as const;

/** PERSISTENT RESERVE TYPE codes, by name (SPC-4 table 212). */
export const PR_TYPES = {
  'write-exclusive': 1,
  'exclusive-access': 3,
  'write-exclusive-registrants-only': 5,
  'exclusive-access-registrants-only': 6,
  'write-exclusive-all-registrants': 7,
  'exclusive-access-all-registrants': 8,
} as const;
export type PrTypeName = keyof typeof PR_TYPES;

export function prTypeName(type: number): string {
  return Object.entries(PR_TYPES).find(([, v]) => v === type)?.[0] ?? `type-${type}`;
}

/** Accepts a name (`write-exclusive-registrants-only`), a short name (`wero`) or the number. */
export function parsePrType(text: string): number {
  const short: Record<string, number> = { we: 1, ea: 3, wero: 5, earo: 6, wear: 7, eaar: 8 };
  const v = (PR_TYPES as Record<string, number>)[text] ?? short[text] ?? (/^[1-8]$/.test(text) ? Number(text) : undefined);
  if (v === undefined || v === 2 || v === 4) throw new RangeError(`reservation type must be one of ${Object.keys(PR_TYPES).join(', ')} (or we, ea, wero, earo, wear, eaar, 1, 3, 5-8): "${text}"`);
  return v;
}

function checkKey(key: bigint, name: string, allowZero: boolean): void {
  if (typeof key !== 'bigint' || key < 0n || key >= 1n << 64n || (!allowZero && key === 0n)) {
    throw new RangeError(`${name} must be ${allowZero ? '0' : '1'} to 2^64-1`);
  }
}

function checkType(type: number): void {
  if (![1, 3, 5, 6, 7, 8].includes(type)) throw new RangeError(`reservation type ${type} is not one of 1, 3, 5, 6, 7, 8`);
}

function u16(n: number, name: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`${name} must be 0 to 65535`);
  return n;
}

export const testUnitReady = () => Buffer.from([OP.testUnitReady, 0, 0, 0, 0, 0]);
export const reserve6 = () => Buffer.from([OP.reserve6, 0, 0, 0, 0, 0]);
export const release6 = () => Buffer.from([OP.release6, 0, 0, 0, 0, 0]);
export const reserve10 = () => Buffer.from([OP.reserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
export const release10 = () => Buffer.from([OP.release10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** INQUIRY: standard data, or a VPD page (0x00 supported pages, 0x80 serial number, 0x83 identification). */
export function inquiry(allocationLength = 96, vpdPage?: number): Buffer {
  u16(allocationLength, 'allocationLength');
  if (vpdPage !== undefined && (!Number.isInteger(vpdPage) || vpdPage < 0 || vpdPage > 0xff)) throw new RangeError('vpdPage must be 0 to 255');
  return Buffer.from([OP.inquiry, vpdPage === undefined ? 0 : 1, vpdPage ?? 0, allocationLength >> 8, allocationLength & 0xff, 0]);
}

export const readCapacity10 = () => Buffer.from([OP.readCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

export function readCapacity16(allocationLength = 32): Buffer {
  const b = Buffer.alloc(16);
  b[0] = OP.serviceActionIn16;
  b[1] = 0x10;
  b.writeUInt32BE(allocationLength, 10);
  return b;
}

function rw10(op: number, lba: number, blocks: number): Buffer {
  if (!Number.isInteger(lba) || lba < 0 || lba > 0xffffffff) throw new RangeError('lba must be 0 to 2^32-1');
  u16(blocks, 'blocks');
  const b = Buffer.alloc(10);
  b[0] = op;
  b.writeUInt32BE(lba, 2);
  b.writeUInt16BE(blocks, 7);
  return b;
}
export const read10 = (lba: number, blocks = 1) => rw10(OP.read10, lba, blocks);
export const write10 = (lba: number, blocks = 1) => rw10(OP.write10, lba, blocks);

export function persistentReserveIn(serviceAction: number, allocationLength = 8192): Buffer {
  if (!Object.values(PR_IN).includes(serviceAction as 0)) throw new RangeError(`PR IN service action ${serviceAction} is not one of 0-3`);
  u16(allocationLength, 'allocationLength');
  const b = Buffer.alloc(10);
  b[0] = OP.prIn;
  b[1] = serviceAction;
  b.writeUInt16BE(allocationLength, 7);
  return b;
}

export interface PrOutParams {
  /** The key this I_T nexus is registered with (0 when not registered). */
  key: bigint;
  /** REGISTER*: the new key (0 unregisters); PREEMPT*: the key to preempt. */
  serviceActionKey?: bigint;
  /** RESERVE, RELEASE, PREEMPT*: the reservation type. */
  type?: number;
  /** Activate persist through power loss (REGISTER*). */
  aptpl?: boolean;
  allTargetPorts?: boolean;
}

/** PERSISTENT RESERVE OUT: the CDB and its 24-byte parameter list. */
export function persistentReserveOut(serviceAction: number, p: PrOutParams): { cdb: Buffer; data: Buffer } {
  if (!Object.values(PR_OUT).includes(serviceAction as 0)) throw new RangeError(`PR OUT service action ${serviceAction} is not one of 0-6`);
  const registering = serviceAction === PR_OUT.register || serviceAction === PR_OUT.registerAndIgnore;
  checkKey(p.key, 'key', registering);
  const sak = p.serviceActionKey ?? 0n;
  const preempting = serviceAction === PR_OUT.preempt || serviceAction === PR_OUT.preemptAndAbort;
  // REGISTER*: the new key (0 unregisters). PREEMPT*: the key to remove (0 only for the
  // all-registrants types, where it means every registrant). Others carry none.
  if (registering) checkKey(sak, 'serviceActionKey', true);
  else if (preempting) checkKey(sak, 'serviceActionKey', p.type === 7 || p.type === 8);
  else if (sak !== 0n) throw new RangeError('only REGISTER and PREEMPT take a serviceActionKey');
  const typed = serviceAction === PR_OUT.reserve || serviceAction === PR_OUT.release || serviceAction === PR_OUT.preempt || serviceAction === PR_OUT.preemptAndAbort;
  if (typed) {
    if (p.type === undefined) throw new RangeError('this service action needs a reservation type');
    checkType(p.type);
  } else if (p.type !== undefined) throw new RangeError('only RESERVE, RELEASE and PREEMPT take a reservation type');
  if (p.aptpl && !registering) throw new RangeError('APTPL is set with REGISTER or REGISTER AND IGNORE EXISTING KEY');
  const cdb = Buffer.alloc(10);
  cdb[0] = OP.prOut;
  cdb[1] = serviceAction;
  cdb[2] = typed ? p.type! : 0; // scope 0: logical unit
  cdb.writeUInt32BE(24, 5);
  const data = Buffer.alloc(24);
  data.writeBigUInt64BE(p.key, 0);
  data.writeBigUInt64BE(sak, 8);
  data[20] = (p.allTargetPorts ? 0x04 : 0) | (p.aptpl ? 0x01 : 0);
  return { cdb, data };
}
