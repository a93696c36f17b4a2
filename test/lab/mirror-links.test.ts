// The log mirror over both paths of the replication link, in network namespaces (seed 004
// [0031], [0039]: main link 82 and failsafe link 86; normal while either works): the primary
// (MirroredLog) on host a, the backup (MirrorBackup) on host b, each in its own process, two
// links on two bridges (a switch each). Under a bounded load (4 appenders, each waiting for its
// commit): the main link dies as a cable does (the switch drops every frame of a's main port,
// ARP included; nothing is closed): normal goes on over the failsafe; then the failsafe's port
// goes down too: primary-only, appends acknowledged on a's disk; the main link back: normal.
// Every append resolved, none waited beyond the documented bound, and b's log equals a's byte
// for byte, each acknowledged record in it once.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { nowMs, type LabEvent, type NodeChild } from '../../src/lab/node-child.js';
import { readLog } from '../../src/log/log-reader.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'mirror-links-child.ts');
const KEY = Buffer.from('lab-mirror-links-key-0123456789ab');
const PORT = 7410;
const ACK_TIMEOUT = 300;
/** Detection of a link that drops everything: no ACK within ackTimeoutMs, checked every ackTimeoutMs / 4 (documented: up to 1.25x), + 300 ms margin for two processes on a 2-core machine other runs load (one run saw 623 ms). */
const DETECT_BOUND = ACK_TIMEOUT * 1.25 + 300;
/** Out of normal once the loss is noticed: a handshake on the failsafe and the catch-up of what was in flight (measured: printed); margin for the loaded machine. */
const SWITCH_BOUND = 300;
/** What an append may wait, as documented: detection + one flush on leaving normal; + 300 ms margin (as DETECT_BOUND's). */
const APPEND_BOUND = ACK_TIMEOUT * 1.25 + 300;

let lab: Lab | undefined;
let root: string | undefined;
afterEach(async () => {
  await lab?.destroy();
  lab = undefined;
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

function payloadOf(appender: number, n: number): Buffer {
  return Buffer.from(`appender ${appender} record ${n} `.padEnd(64, String.fromCharCode(97 + (n % 26))));
}

/** The first event named `name` matching, among those seen after index `from`. */
function after(child: NodeChild, from: number, name: string, match: (e: LabEvent) => boolean, timeoutMs: number): Promise<LabEvent> {
  return child.waitFor(name, timeoutMs, (e) => child.events.indexOf(e) >= from && match(e));
}

describe('log mirror over two links in namespaces', () => {
  it('main link dropped under load: normal over the failsafe; both down: primary-only; main back: normal; logs equal', async () => {
    lab = await Lab.create({ hosts: ['a', 'b'], failsafeLink: true });
    root = mkdtempSync(path.join(tmpdir(), 'tko-mirror-links-'));
    const b = lab.host('b');
    const common = ['--main', b.ipv4, '--failsafe', b.failsafe!.ipv4, '--port', String(PORT), '--key', KEY.toString('hex')];
    const backup = lab.spawn('b', CHILD, ['--role', 'backup', '--dir', path.join(root, 'b'), ...common]);
    await backup.waitFor('listening', 20_000);
    const primary = lab.spawn('a', CHILD, ['--role', 'primary', '--dir', path.join(root, 'a'), '--ack-timeout', String(ACK_TIMEOUT), ...common]);
    await primary.waitFor('state', 20_000, (e) => e.to === 'normal');
    expect((await backup.waitFor('attached', 5000)).link).toBe('main');

    primary.send({ cmd: 'load', appenders: 4, maxRecords: 300_000, maxMs: 40_000 });
    await primary.waitFor('progress', 5000, (e) => (e.acked as number) > 500);

    // 1. The main link dies (frames dropped at the switch, ARP included).
    let mark = primary.events.length;
    const dropAt = nowMs();
    await lab.dropLink('a', 'main');
    const left = await after(primary, mark, 'state', (e) => e.from === 'normal', DETECT_BOUND + 1000);
    const sw = await after(primary, mark, 'link', (e) => e.type === 'switch', 1000);
    const attached = await after(primary, mark, 'link', (e) => e.type === 'attached', SWITCH_BOUND + 1000);
    const back = await after(primary, mark, 'state', (e) => e.to === 'normal', SWITCH_BOUND + 1000);
    expect(sw).toMatchObject({ from: 'main', to: 'failsafe', reason: 'ack-timeout' });
    expect(attached.link).toBe('failsafe');
    const detectMs = (left.t as number) - dropAt;
    const outMs = (back.t as number) - (left.t as number);
    await after(backup, 0, 'attached', (e) => e.link === 'failsafe', 2000);
    // The backup never saw its main connection end (the link is silent): the primary's START
    // on the failsafe replaced it, one primary attached at a time.
    backup.send({ cmd: 'stats', tag: 1 });
    const s1 = await backup.waitFor('stats', 5000, (e) => e.tag === 1);
    expect(s1.attachedLink).toBe('failsafe');
    expect((s1.stats as { replaced: number }).replaced).toBe(1);
    const acked1 = (await after(primary, primary.events.length, 'progress', () => true, 2000)).acked as number;
    await after(primary, mark, 'progress', (e) => (e.acked as number) > acked1 + 500 && e.state === 'normal' && e.link === 'failsafe', 10_000);

    // 2. The failsafe too (its switch port down): primary-only, appends acknowledged locally.
    mark = primary.events.length;
    const downAt = nowMs();
    await lab.cutLink('a', 'failsafe');
    const po = await after(primary, mark, 'state', (e) => e.to === 'primary-only', DETECT_BOUND + 1000);
    const poMs = (po.t as number) - downAt;
    const acked2 = (await after(primary, primary.events.length, 'progress', () => true, 2000)).acked as number;
    await after(primary, mark, 'progress', (e) => (e.acked as number) > acked2 + 200, 10_000);
    expect(primary.events.slice(mark).filter((e) => e.event === 'state' && e.to === 'normal')).toEqual([]);

    // 3. The main link back: normal over it (the redial alternates the links, at most 250 ms apart).
    mark = primary.events.length;
    const upAt = nowMs();
    await lab.restoreLink('a', 'main');
    const again = await after(primary, mark, 'state', (e) => e.to === 'normal', 5000);
    const againMs = (again.t as number) - upAt;
    expect((await after(primary, mark, 'link', (e) => e.type === 'attached', 1000)).link).toBe('main');
    await after(primary, mark, 'progress', (e) => e.state === 'normal' && (e.acked as number) > 0, 2000);

    primary.send({ cmd: 'stop' });
    const done = await primary.waitFor('load-done', 20_000);
    const slow = primary.events.filter((e) => e.event === 'slow');
    const ackedTotal = (done.acked as number[]).reduce((x, y) => x + y, 0);
    console.log(
      `main link dropped: noticed ${detectMs.toFixed(0)} ms after (ackTimeoutMs ${ACK_TIMEOUT}), out of normal ${outMs.toFixed(1)} ms (attached on the failsafe ${((attached.t as number) - (left.t as number)).toFixed(1)} ms after leaving normal), normal again over the failsafe ${((back.t as number) - dropAt).toFixed(0)} ms after the drop; ` +
        `failsafe down too: primary-only ${poMs.toFixed(0)} ms after; main back: normal ${againMs.toFixed(0)} ms after; ` +
        `${ackedTotal} commits, longest append wait ${(done.maxWaitMs as number).toFixed(1)} ms, ${slow.length} waits >= 50 ms`,
    );
    if (outMs > SWITCH_BOUND) console.log(JSON.stringify(primary.events.filter((e) => (e.t as number) >= (left.t as number) - 5 && (e.t as number) <= (back.t as number) + 5 && e.event !== 'slow' && e.event !== 'progress')));
    expect(done.errors).toBe(0);
    expect(detectMs).toBeLessThan(DETECT_BOUND);
    expect(outMs).toBeLessThan(SWITCH_BOUND);
    expect(done.maxWaitMs as number).toBeLessThan(APPEND_BOUND);
    expect((done.stats as { switches: number }).switches).toBeGreaterThanOrEqual(2);

    primary.send({ cmd: 'close' });
    await primary.waitFor('closed', 10_000);
    backup.send({ cmd: 'close' });
    await backup.waitFor('closed', 10_000);
    const [al, bl] = await Promise.all([readLog(path.join(root, 'a')), readLog(path.join(root, 'b'))]);
    expect(bl.records.length).toBe(al.records.length);
    expect(bl.records.every((r, i) => r.equals(al.records[i]!))).toBe(true);
    const seen = new Map<string, number>();
    for (const r of bl.records) seen.set(r.toString(), (seen.get(r.toString()) ?? 0) + 1);
    const missingOrDouble: string[] = [];
    (done.acked as number[]).forEach((count, w) => {
      for (let n = 0; n < count; n++) if (seen.get(payloadOf(w, n).toString()) !== 1) missingOrDouble.push(`${w}/${n}`);
    });
    expect(missingOrDouble).toEqual([]);
    expect(bl.records.length).toBe(ackedTotal);
  });
});
