// The reservation and fencing code against replies recorded from real targets, without a device:
// LIO over iSCSI and tgtd (test/recorded/*.json, made by `npm run record:scsi` in qemu guests).
// The scenario's commands must come out byte for byte as recorded, and what the code makes of
// the replies must equal what it made of them live; then the facts that matter are asserted.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fenceKey, formatKey } from '../../src/fence/fence-keys.js';
import { PR_TYPE } from '../../src/fence/fencer.js';
import { decodeSense, KEY } from '../../src/scsi/sense.js';
import { STATUS } from '../../src/scsi/transport.js';
import { CLUSTER, runScenario } from '../recorded/scenario.js';
import { ReplayTransport, type Exchange } from '../recorded/transcript.js';

interface Recording {
  target: string;
  nexuses: { a: string; b: string };
  summary: Record<string, unknown>;
  transcripts: { a: Exchange[]; b: Exchange[] };
}

const load = (name: string) => JSON.parse(readFileSync(new URL(`../recorded/${name}.json`, import.meta.url), 'utf8')) as Recording;
const kA = formatKey(fenceKey(CLUSTER, 'a'));
const kB = formatKey(fenceKey(CLUSTER, 'b'));
const conflict = { error: 'ReservationConflictError', code: 'ERR_SCSI_RESERVATION_CONFLICT' };
// What each target queued for the preempted node, as the recordings show.
const UNIT_ATTENTIONS: Record<string, string[]> = {
  lio: ['UNIT ATTENTION: registrations preempted (2A/05)', 'UNIT ATTENTION: reservations preempted (2A/03)'],
  tgtd: ['UNIT ATTENTION: reservations preempted (2A/03)', 'UNIT ATTENTION: reservations preempted (2A/03)'],
};

async function replay(rec: Recording) {
  const a = new ReplayTransport(rec.nexuses.a, rec.transcripts.a);
  const b = new ReplayTransport(rec.nexuses.b, rec.transcripts.b);
  const summary = await runScenario(a, b);
  return { summary, a, b };
}

describe.each(['lio', 'tgtd'])('recorded replies from %s', (name) => {
  const rec = load(name);

  it('a replay sends the recorded commands and reproduces the live results', async () => {
    const { summary, a, b } = await replay(rec);
    expect(summary).toEqual(rec.summary);
    expect([a.done, b.done]).toEqual([true, true]);
  });

  it('join, keys and the reservation: both registered, a holds Write Exclusive – Registrants Only', async () => {
    const { summary: s } = await replay(rec);
    expect(s.keysEmpty).toMatchObject({ keys: [] });
    expect(s.reservationNone).not.toHaveProperty('reservation');
    expect((s.keys as { keys: string[] }).keys.sort()).toEqual([kA, kB].sort());
    expect(s.reservation).toMatchObject({ reservation: { key: kA, type: PR_TYPE.writeExclusiveRegistrantsOnly } });
    expect(s.bReserveOther).toMatchObject(conflict);
    expect(s.aWriteHolder).toBe('ok');
  });

  it('fencing a: its key is gone, b holds the reservation, a cannot write but can read, after one unit attention', async () => {
    const { summary: s } = await replay(rec);
    expect(s.fence).toMatchObject({ node: 'a', key: kA, ok: true, devices: [{ outcome: 'fenced', ok: true }] });
    expect(s.aWriteFenced).toMatchObject(conflict);
    expect(s.aUnitAttentions).toBe(1);
    expect(s.aReadFenced).toBe('ok');
    expect(s.keysAfterFence).toMatchObject({ keys: [kB] });
    expect(s.reservationAfterFence).toMatchObject({ reservation: { key: kB, type: PR_TYPE.writeExclusiveRegistrantsOnly } });
    expect(s.rejoin).toMatchObject([{ outcome: 'registered', ok: true }]);
  });

  it("the fenced node's unit attentions, decoded from the target's own sense bytes", () => {
    const sense = rec.transcripts.a.filter((e) => e.status === STATUS.checkCondition).map((e) => decodeSense(Buffer.from(e.sense, 'hex')));
    const ua = sense.filter((s) => s.valid && s.key === KEY.unitAttention).map((s) => (s.valid ? s.description : ''));
    // Both pending ones: the first answers the write, the TEST UNIT READY that follows clears the other.
    expect(ua).toEqual(UNIT_ATTENTIONS[name]);
  });

  it("SPC-2 RESERVE(6): the other initiator's TEST UNIT READY conflicts until the release", async () => {
    const { summary: s } = await replay(rec);
    expect(s.bTurReserved6).toMatchObject({ ...conflict, message: expect.stringMatching(/opcode 0x00/) });
    expect(s.bTurReleased).toBe('ok');
  });
});

describe('what differs between the targets', () => {
  it('LIO completes PREEMPT AND ABORT and reports full status with the holder', async () => {
    const { summary: s } = await replay(load('lio'));
    expect(s.fence).toMatchObject({ devices: [{ method: 'preempt-and-abort' }] });
    expect((s.fence as { devices: object[] }).devices[0]).not.toHaveProperty('note');
    expect(s.fullStatus).toMatchObject({ entries: expect.arrayContaining([expect.objectContaining({ key: kA, holder: true, type: PR_TYPE.writeExclusiveRegistrantsOnly })]) });
    expect(s.capabilities).toMatchObject({ ptplC: true, types: [1, 3, 5, 6, 7, 8] });
  });

  it('tgtd rejects PREEMPT AND ABORT and READ FULL STATUS (24/00): fenced with PREEMPT, and the report says so', async () => {
    const { summary: s } = await replay(load('tgtd'));
    expect(s.fence).toMatchObject({ ok: true, devices: [{ outcome: 'fenced', method: 'preempt', note: expect.stringMatching(/rejected PREEMPT AND ABORT \(ILLEGAL REQUEST: invalid field in cdb \(24\/00\)\)/) }] });
    expect(s.fullStatus).toMatchObject({ error: 'CheckConditionError', message: expect.stringMatching(/24\/00/) });
    expect(s.capabilities).toMatchObject({ ptplC: false });
  });

  it('a replay that diverges from the recording fails loudly, naming the exchange', async () => {
    const rec = load('tgtd');
    const t = new ReplayTransport('x', rec.transcripts.a);
    await expect(t.execute({ cdb: Buffer.from('00000000000000', 'hex') })).rejects.toThrow(/replay diverged at exchange 0: recorded CDB 12/);
  });
});
