// The SCSI layer without a device: CDB layouts byte for byte (SPC-4/SBC-3), sense in both
// formats with names, PR IN parsers, and ScsiDevice's reading of replies (conflict, check
// condition, transport failure, timeout, unit-attention retry after TEST UNIT READY, a target
// without persistent reservations) against a transport that replays what a target answers.
// Every parser is fuzzed: truncations and random bytes give a result or the parser's own error.
import { describe, expect, it } from 'vitest';
import * as cdb from '../../src/scsi/cdb.js';
import { capacity, identify, parseDesignators, parseStandardInquiry, parseUnitSerial } from '../../src/scsi/inquiry.js';
import { parseReadFullStatus, parseReadKeys, parseReadReservation, parseReportCapabilities, PersistentReservations, PrFormatError } from '../../src/scsi/reservations.js';
import { decodeSense } from '../../src/scsi/sense.js';
import { Fencer } from '../../src/fence/fencer.js';
import { NoPersistentReservationsError, ReservationConflictError, ScsiDevice, ScsiTimeoutError, TransportError, type RawReply, type ScsiCommand, type ScsiTransport } from '../../src/scsi/transport.js';
import { prng } from './frame-builder.js';

const hex = (b: Buffer) => b.toString('hex');
const fixedSense = (key: number, asc: number, ascq: number) => Buffer.from([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0]);
const reply = (o: Partial<RawReply> = {}): RawReply => ({ status: 0, hostStatus: 0, driverStatus: 0, sense: Buffer.alloc(0), data: Buffer.alloc(0), resid: 0, ...o });

/** Replays replies in order and records the commands. */
class Replay implements ScsiTransport {
  readonly name = '/dev/sg9';
  readonly sent: ScsiCommand[] = [];
  constructor(private readonly replies: RawReply[]) {}
  async execute(cmd: ScsiCommand): Promise<RawReply> {
    this.sent.push(cmd);
    const r = this.replies.shift();
    if (!r) throw new Error('no more replies');
    return r;
  }
}

describe('CDBs', () => {
  it('have the SPC-4/SBC-3 layouts', () => {
    expect(hex(cdb.testUnitReady())).toBe('000000000000');
    expect(hex(cdb.inquiry(96))).toBe('120000006000');
    expect(hex(cdb.inquiry(255, 0x83))).toBe('12018300ff00');
    expect(hex(cdb.reserve6())).toBe('160000000000');
    expect(hex(cdb.release10())).toBe('57000000000000000000');
    expect(hex(cdb.readCapacity16())).toBe('9e100000000000000000000000200000');
    expect(hex(cdb.write10(0x01020304, 1))).toBe('2a000102030400000100');
    expect(hex(cdb.persistentReserveIn(cdb.PR_IN.readKeys, 8192))).toBe('5e000000000000200000');
    expect(hex(cdb.persistentReserveIn(cdb.PR_IN.readFullStatus, 512))).toBe('5e030000000000020000');
    const reg = cdb.persistentReserveOut(cdb.PR_OUT.registerAndIgnore, { key: 0n, serviceActionKey: 0x1122334455667788n, aptpl: true });
    expect(hex(reg.cdb)).toBe('5f060000000000001800');
    expect(hex(reg.data)).toBe('0000000000000000' + '1122334455667788' + '00000000' + '01000000');
    const pa = cdb.persistentReserveOut(cdb.PR_OUT.preemptAndAbort, { key: 0xan, serviceActionKey: 0xbn, type: 5 });
    expect(hex(pa.cdb)).toBe('5f050500000000001800');
    expect(hex(pa.data.subarray(0, 16))).toBe('000000000000000a000000000000000b');
  });

  it('refuse bad keys, types and combinations before anything is sent', () => {
    const out = (sa: number, p: cdb.PrOutParams) => () => cdb.persistentReserveOut(sa, p);
    expect(out(cdb.PR_OUT.reserve, { key: 0n, type: 5 })).toThrow(/key must be 1/);
    expect(out(cdb.PR_OUT.reserve, { key: 1n, type: 2 })).toThrow(/type 2/);
    expect(out(cdb.PR_OUT.reserve, { key: 1n })).toThrow(/needs a reservation type/);
    expect(out(cdb.PR_OUT.clear, { key: 1n, type: 5 })).toThrow(/only RESERVE, RELEASE and PREEMPT/);
    expect(out(cdb.PR_OUT.reserve, { key: 1n, type: 5, aptpl: true })).toThrow(/APTPL/);
    expect(out(cdb.PR_OUT.register, { key: 0n, serviceActionKey: 1n << 64n })).toThrow(/serviceActionKey/);
    expect(out(cdb.PR_OUT.preempt, { key: 1n, serviceActionKey: 0n, type: 5 })).toThrow(/serviceActionKey must be 1/);
    expect(out(cdb.PR_OUT.preempt, { key: 1n, serviceActionKey: 0n, type: 7 })).not.toThrow();
    expect(out(cdb.PR_OUT.clear, { key: 1n, serviceActionKey: 3n })).toThrow(/only REGISTER and PREEMPT/);
    expect(out(9, { key: 1n })).toThrow(/service action 9/);
    expect(() => cdb.persistentReserveIn(7)).toThrow(RangeError);
    expect(() => cdb.inquiry(70000)).toThrow(RangeError);
    expect(() => cdb.write10(-1)).toThrow(RangeError);
    expect(cdb.parsePrType('wero')).toBe(5);
    expect(cdb.parsePrType('exclusive-access-all-registrants')).toBe(8);
    expect(cdb.parsePrType('7')).toBe(7);
    for (const bad of ['2', '4', 'x', '', '9']) expect(() => cdb.parsePrType(bad)).toThrow(RangeError);
  });
});

describe('sense', () => {
  it('fixed and descriptor formats, with names', () => {
    expect(decodeSense(fixedSense(6, 0x2a, 0x03))).toMatchObject({ valid: true, format: 'fixed', key: 6, asc: 0x2a, ascq: 3, description: 'UNIT ATTENTION: reservations preempted (2A/03)' });
    expect(decodeSense(fixedSense(5, 0x20, 0))).toMatchObject({ description: 'ILLEGAL REQUEST: invalid command operation code (20/00)' });
    const desc = Buffer.from([0x72, 0x06, 0x29, 0x00, 0, 0, 0, 12, 0x00, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]);
    expect(decodeSense(desc)).toMatchObject({ valid: true, format: 'descriptor', keyName: 'UNIT ATTENTION', description: 'UNIT ATTENTION: power on, reset, or bus device reset occurred (29/00)', information: 0x1234n });
    expect(decodeSense(Buffer.from([0x71, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0]))).toMatchObject({ deferred: true, description: 'MEDIUM ERROR: unrecovered read error (11/00)' });
    expect(decodeSense(Buffer.from([0x70, 0, 2, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0x04, 0x01]))).toMatchObject({ asc: 0, ascq: 0 }); // ASC past the additional length
    expect(decodeSense(Buffer.alloc(0))).toEqual({ valid: false, reason: 'no sense data' });
    expect(decodeSense(Buffer.from([0x7f, 1, 2]))).toMatchObject({ valid: false, reason: expect.stringMatching(/not sense data/) });
    expect(decodeSense(Buffer.from([0x70, 0]))).toMatchObject({ valid: false });
  });

  it('fuzz: every truncation and random buffers decode without throwing', () => {
    const rand = prng(0x5e45e);
    const samples = [fixedSense(6, 0x2a, 3), Buffer.from([0x72, 6, 0x29, 0, 0, 0, 0, 12, 0, 10, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34])];
    for (const s of samples) for (let n = 0; n <= s.length; n++) expect(decodeSense(s.subarray(0, n)).valid !== undefined).toBe(true);
    for (let i = 0; i < 20_000; i++) {
      const b = Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)));
      if (rand() < 0.5 && b.length > 0) b[0] = 0x70 + Math.floor(rand() * 4);
      const r = decodeSense(b);
      if (r.valid) expect(r.key).toBeLessThan(16);
    }
  });
});

describe('PR IN and INQUIRY parsers', () => {
  const keys = Buffer.from('00000007' + '00000010' + '1111111111111111' + '2222222222222222', 'hex');
  const resv = Buffer.from('00000007' + '00000010' + '1111111111111111' + '00000000' + '00' + '05' + '0000', 'hex');
  const caps = Buffer.from('0008' + '19' + '81' + 'ea01' + '0000', 'hex');
  const full = Buffer.from('00000003' + '00000022' + '1111111111111111' + '00000000' + '01' + '05' + '00000000' + '0001' + '0000000a' + '41414141414141414141', 'hex');

  it('parse the formats of SPC-4', () => {
    expect(parseReadKeys(keys)).toEqual({ generation: 7, keys: [0x1111111111111111n, 0x2222222222222222n] });
    expect(parseReadReservation(resv)).toEqual({ generation: 7, reservation: { key: 0x1111111111111111n, scope: 0, type: 5 } });
    expect(parseReadReservation(Buffer.from('0000000700000000', 'hex'))).toEqual({ generation: 7 });
    expect(parseReportCapabilities(caps)).toEqual({ crh: true, sipC: true, atpC: false, ptplC: true, ptplA: true, types: [1, 3, 5, 6, 7, 8] });
    expect(parseReadFullStatus(full)).toEqual({ generation: 3, entries: [{ key: 0x1111111111111111n, holder: true, allTargetPorts: false, scope: 0, type: 5, relativeTargetPort: 1, transportId: Buffer.from('AAAAAAAAAA') }] });
    const std = Buffer.concat([Buffer.from([0, 0, 6, 2, 91, 0, 0, 0]), Buffer.from('LIO-ORG FILEIO          4.0 ')]);
    expect(parseStandardInquiry(std)).toEqual({ peripheralType: 0, version: 6, vendor: 'LIO-ORG', product: 'FILEIO', revision: '4.0' });
    expect(parseUnitSerial(Buffer.from([0, 0x80, 0, 4, 0x61, 0x62, 0x63, 0x64]))).toBe('abcd');
    expect(parseDesignators(Buffer.from([0, 0x83, 0, 12, 1, 3, 0, 8, 0x60, 0x01, 0x40, 0x5a, 0, 0, 0, 1]))).toEqual([{ codeSet: 1, association: 0, type: 3, value: '6001405a00000001' }]);
  });

  it('fuzz: truncations and random bytes give a result or the parser\'s own error', () => {
    const rand = prng(0x9e1);
    const parsers: Array<[(b: Buffer) => unknown, Buffer, new (...a: any[]) => Error]> = [
      [parseReadKeys, keys, PrFormatError], [parseReadReservation, resv, PrFormatError], [parseReportCapabilities, caps, PrFormatError], [parseReadFullStatus, full, PrFormatError],
      [parseStandardInquiry, Buffer.alloc(36), RangeError], [parseUnitSerial, Buffer.from([0, 0x80, 0, 4, 1, 2, 3, 4]), RangeError], [parseDesignators, Buffer.from([0, 0x83, 0, 8, 1, 3, 0, 4, 1, 2, 3, 4]), RangeError],
    ];
    for (const [parse, sample, errorClass] of parsers) {
      const attempt = (b: Buffer) => {
        try {
          parse(b);
        } catch (err) {
          expect(err).toBeInstanceOf(errorClass);
        }
      };
      for (let n = 0; n <= sample.length; n++) attempt(sample.subarray(0, n));
      for (let i = 0; i < 3000; i++) {
        const b = Buffer.from(sample);
        for (let k = 0; k < 3; k++) if (b.length) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
        attempt(rand() < 0.3 ? Buffer.from(Array.from({ length: Math.floor(rand() * 80) }, () => Math.floor(rand() * 256))) : b);
      }
    }
  });
});

describe('ScsiDevice over a replayed transport', () => {
  it('GOOD gives the data; RESERVATION CONFLICT, CHECK CONDITION, transport failures and timeouts are their own errors', async () => {
    const t = new Replay([
      reply({ data: Buffer.from('00000001000000081111111111111111', 'hex') }),
      reply({ status: 0x18 }),
      reply({ status: 2, sense: fixedSense(2, 0x04, 0x03) }),
      reply({ hostStatus: 0x01 }),
      reply({ hostStatus: 0x03 }),
      reply({ status: 0x08 }),
    ]);
    const d = new ScsiDevice(t);
    const pr = new PersistentReservations(d);
    expect(await pr.readKeys()).toEqual({ generation: 1, keys: [0x1111111111111111n] });
    await expect(pr.reserve(1n, 5)).rejects.toBeInstanceOf(ReservationConflictError);
    await expect(d.execute({ cdb: cdb.testUnitReady() })).rejects.toThrow(expect.objectContaining({ name: 'CheckConditionError', message: '/dev/sg9: opcode 0x00: CHECK CONDITION: NOT READY: logical unit not ready, manual intervention required (04/03)' }));
    await expect(d.execute({ cdb: cdb.testUnitReady() })).rejects.toBeInstanceOf(TransportError);
    await expect(d.execute({ cdb: cdb.testUnitReady(), timeoutMs: 500 })).rejects.toThrow(ScsiTimeoutError);
    await expect(d.execute({ cdb: cdb.testUnitReady() })).rejects.toThrow(/status 0x08/);
    expect(t.sent[1]!.dataOut!.length).toBe(24);
    expect(t.sent[4]!.timeoutMs).toBe(500);
  });

  it('a command the kernel never answers (stuck in driver or target) fails with ScsiTimeoutError instead of hanging; a fence reports it', async () => {
    const never: ScsiTransport = { name: '/dev/sg7', execute: () => new Promise<RawReply>(() => {}) };
    const d = new ScsiDevice(never, 50);
    const t0 = performance.now();
    const err = await d.execute({ cdb: cdb.testUnitReady() }).catch((e: unknown) => e);
    const waited = performance.now() - t0;
    expect(err).toBeInstanceOf(ScsiTimeoutError);
    expect(err).toMatchObject({ code: 'ERR_SCSI_TIMEOUT', message: '/dev/sg7: opcode 0x00: no reply 1100 ms after it was sent (timeout 50 ms): stuck in the driver or the target' });
    // The deadline is 2 × timeout + 1 s = 1100 ms after the command was sent; + 100 ms for
    // the timer on a loaded 2-core machine.
    expect(waited).toBeGreaterThanOrEqual(1090);
    expect(waited).toBeLessThan(1100 + 100);
    const fencer = new Fencer({ cluster: 'c', node: 'b', nodes: ['a', 'b'], devices: [new PersistentReservations(d)] });
    const r = await fencer.fence('a');
    expect(r.devices[0]).toMatchObject({ ok: false, outcome: 'failed', error: expect.stringMatching(/opcode 0x5e: no reply .* stuck/) });
  });

  it('a unit attention is cleared with TEST UNIT READY and the command retried once', async () => {
    const ua = reply({ status: 2, sense: fixedSense(6, 0x2a, 0x03) });
    const t = new Replay([ua, ua, reply(), reply({ data: Buffer.from('0000000200000000', 'hex') })]);
    const d = new ScsiDevice(t);
    expect(await new PersistentReservations(d).readReservation()).toEqual({ generation: 2 });
    expect(t.sent.map((c) => c.cdb[0])).toEqual([0x5e, 0x00, 0x00, 0x5e]);
    expect(d.unitAttentions).toBe(1);
    // A second unit attention on the retry is not retried again.
    const t2 = new Replay([ua, reply(), ua]);
    await expect(new ScsiDevice(t2).execute({ cdb: cdb.testUnitReady() })).rejects.toThrow(/reservations preempted/);
  });

  it('a target without persistent reservations is reported as such (scsi_debug answers invalid opcode)', async () => {
    const invalid = reply({ status: 2, sense: fixedSense(5, 0x20, 0x00) });
    const pr = new PersistentReservations(new ScsiDevice(new Replay([invalid, invalid])));
    await expect(pr.readKeys()).rejects.toThrow(expect.objectContaining({ code: 'ERR_SCSI_NO_PR', message: '/dev/sg9: target does not support persistent reservations (PERSISTENT RESERVE IN/OUT is an invalid opcode)' }));
    await expect(pr.registerAndIgnore(5n)).rejects.toBeInstanceOf(NoPersistentReservationsError);
  });

  it('identify and capacity read INQUIRY pages and READ CAPACITY(16)', async () => {
    const std = Buffer.concat([Buffer.from([0, 0, 6, 2, 91, 0, 0, 0]), Buffer.from('LIO-ORG FILEIO          4.0 ')]);
    const t = new Replay([reply({ data: std }), reply({ data: Buffer.from([0, 0x80, 0, 3, 0x78, 0x79, 0x7a]) }), reply({ status: 2, sense: fixedSense(5, 0x24, 0) }), reply({ data: Buffer.from('00000000000003ff0000020000000000', 'hex') })]);
    const d = new ScsiDevice(t);
    expect(await identify(d)).toEqual({ peripheralType: 0, version: 6, vendor: 'LIO-ORG', product: 'FILEIO', revision: '4.0', serial: 'xyz', designators: [] });
    expect(await capacity(d)).toEqual({ blocks: 1024n, blockSize: 512 });
  });
});
