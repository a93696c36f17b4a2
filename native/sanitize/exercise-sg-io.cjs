// The SG_IO success paths under ASan + UBSan, inside the test guest on real devices (the host has
// no SCSI): every /dev/sgN the guest has, with data in, data out, no data, CHECK CONDITION with
// sense, RESERVATION CONFLICT, and 16 commands in flight on one fd. Run by guest.ts; argv[2] is
// the sanitizer build of the addon. Prints one "TKO {json}" line.
const fs = require('node:fs');
const addon = require(process.argv[2]);
const cdb = (...b) => Buffer.from(b);
const TUR = cdb(0, 0, 0, 0, 0, 0);
const INQUIRY = cdb(0x12, 0, 0, 0, 96, 0);
const VPD83 = cdb(0x12, 1, 0x83, 0, 255, 0);
const READ_KEYS = cdb(0x5e, 0, 0, 0, 0, 0, 0, 0x20, 0, 0);
const READ10 = cdb(0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0);
const WRITE10 = cdb(0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0);
const BAD_OPCODE = cdb(0xff, 0, 0, 0, 0, 0);
const RESERVE6 = cdb(0x16, 0, 0, 0, 0, 0);
const RELEASE6 = cdb(0x17, 0, 0, 0, 0, 0);
(async () => {
  const sgs = fs.readdirSync('/dev').filter((d) => /^sg\d+$/.test(d)).map((d) => `/dev/${d}`);
  const fds = sgs.map((p) => fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK));
  const seen = { good: 0, checkCondition: 0, conflict: 0, dataIn: 0, sense: 0 };
  const count = (r) => {
    if (r.status === 0) seen.good++;
    if (r.status === 2) seen.checkCondition++;
    if (r.status === 0x18) seen.conflict++;
    if (r.data.length) seen.dataIn++;
    if (r.sense.length) seen.sense++;
  };
  for (let round = 0; round < 50; round++) {
    for (const fd of fds) {
      const all = [];
      for (let i = 0; i < 16; i++) all.push(addon.sgIo(fd, [TUR, INQUIRY, VPD83, READ10][i % 4], [0, 96, 255, 512][i % 4], undefined, 5000));
      all.push(addon.sgIo(fd, WRITE10, 0, Buffer.alloc(512, round), 5000));
      all.push(addon.sgIo(fd, READ_KEYS, 8192, undefined, 5000));
      all.push(addon.sgIo(fd, BAD_OPCODE, 0, undefined, 5000));
      for (const r of await Promise.all(all)) count(r);
    }
    // SPC-2 RESERVE on the first device: the others that reach the same LUN conflict.
    if (fds.length > 1) {
      count(await addon.sgIo(fds[0], RESERVE6, 0, undefined, 5000));
      for (const fd of fds.slice(1)) count(await addon.sgIo(fd, TUR, 0, undefined, 5000));
      count(await addon.sgIo(fds[0], RELEASE6, 0, undefined, 5000));
    }
    if (global.gc) global.gc();
  }
  for (const fd of fds) fs.closeSync(fd);
  const ok = sgs.length > 0 && seen.good > 0 && seen.checkCondition > 0 && seen.conflict > 0 && seen.sense > 0;
  console.log(`TKO ${JSON.stringify({ check: 'SG_IO under ASan + UBSan', ok, devices: sgs.length, ...seen })}`);
  process.exit(ok ? 0 : 1);
})().catch((e) => {
  console.log(`TKO ${JSON.stringify({ check: 'SG_IO under ASan + UBSan', ok: false, error: String(e && e.stack) })}`);
  process.exit(1);
});
