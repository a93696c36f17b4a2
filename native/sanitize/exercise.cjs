// Exercises every native entry point of the sanitizer build (path in argv[2]), successes and
// failures, with real loopback traffic through the capture. Run by run.sh.
const net = require('node:net');
const addon = require(process.argv[2]);
const { spawn } = require('node:child_process');
function attempt(f) { try { return f(); } catch (e) { return e; } }
(async () => {
  // parser on random and valid-ish input
  let seed = 7;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let i = 0; i < 20000; i++) {
    const b = Buffer.alloc(Math.floor(rnd() * 200));
    for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
    if (b.length > 14 && rnd() < 0.5) { b[12] = 8; b[13] = 0; if (b.length > 23) { b[14] = 0x45; b[23] = 6; } }
    addon.parsePacket(b, i % 2, { verifyChecksum: i % 3 === 0 });
  }
  const server = net.createServer((s) => { s.on('data', () => {}); s.on('error', () => {}); });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  const cap = new addon.Capture({ interface: 'lo', payloadBytes: 64 });
  let segs = 0;
  cap.start((batch) => { segs += batch.length; });
  cap.setDeliver(true);
  const clients = [];
  for (let i = 0; i < 20; i++) clients.push(await new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => r(c)); c.on('error', () => {}); }));
  for (const c of clients) c.write(Buffer.alloc(100000, 1));
  await new Promise((r) => setTimeout(r, 500));
  const flows = cap.flows();
  const stats = cap.stats();
  // The capture's other modes: every interface through the IP header, a wake-up per packet with
  // a flags mask, no flow table; a filter replaced live; partial and single-flow snapshots.
  const any = new addon.Capture({ interface: 'any', wakeup: 'packet', deliverFlags: 0x07, payloadBytes: 16 });
  const ctrl = new addon.Capture({ interface: 'any', wakeup: 'packet', trackFlows: false, blockTimeoutMs: 20 });
  let anySegs = 0;
  any.start((batch) => { anySegs += batch.length; });
  any.setDeliver(true);
  ctrl.start(() => {});
  ctrl.setDeliver(true);
  for (const c of clients.slice(0, 5)) c.write(Buffer.alloc(3000, 2));
  const extra = [];
  for (let i = 0; i < 20; i++) extra.push(await new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => r(c)); c.on('error', () => {}); }));
  await new Promise((r) => setTimeout(r, 200));
  const gen = any.flows().generation;
  attempt(() => any.setFilter(Buffer.from([6, 0, 0, 0, 0, 0, 0, 0]), 100)); // one instruction: ret 0
  attempt(() => any.setFilter(Buffer.alloc(3)));
  attempt(() => any.setFilter('x'));
  any.flows(gen); any.flows(0);
  attempt(() => any.flows('x'));
  any.find('127.0.0.1', port, '127.0.0.1', extra[0].localPort);
  attempt(() => any.find('127.0.0.1', port, '::1', 1));
  attempt(() => any.find('nope', 1, '127.0.0.1', 1));
  attempt(() => new addon.Capture({ interface: 'lo', wakeup: 'sideways' }));
  attempt(() => new addon.Capture({ interface: 'lo', blockTimeoutMs: 0 }));
  for (let i = 0; i < 3; i++) { const r = new addon.Capture({ interface: 'lo', blockSize: 4096, blockCount: 2, blockTimeoutMs: 1 }); r.start(() => {}); await r.close(); }
  // A ring set up on a worker: started before it is ready, closed while opening, opened twice,
  // left to the collector, and a ring too big to be set up (the open rejects).
  {
    let bgSegs = 0;
    const bg = new addon.Capture({ interface: 'lo', background: true });
    bg.start((batch) => { bgSegs += batch.length; });
    bg.setDeliver(true);
    const opened = bg.open();
    attempt(() => bg.open());
    await opened;
    for (const c of clients.slice(0, 3)) c.write(Buffer.alloc(1000, 3));
    await new Promise((r) => setTimeout(r, 50));
    if (bgSegs === 0) throw new Error('the background capture saw nothing');
    await Promise.all([bg.close(), bg.close()]);
    await bg.open();
    for (let i = 0; i < 3; i++) {
      const early = new addon.Capture({ interface: 'lo', background: true });
      early.start(() => {});
      const o = early.open();
      await Promise.all([early.close(), early.close(), o]);
    }
    new addon.Capture({ interface: 'lo', background: true }).open().then(() => {});
    // Its interface is gone by the time the worker binds: ENODEV.
    require('node:child_process').execFileSync('ip', ['link', 'add', 'tko-gone', 'type', 'veth', 'peer', 'name', 'tko-gone-p']);
    const gone = new addon.Capture({ interface: 'tko-gone', background: true });
    require('node:child_process').execFileSync('ip', ['link', 'del', 'tko-gone']);
    const err = await gone.open().then(() => null, (e) => e);
    if (!err || err.code !== 'ENODEV' || gone.stats().lastErrno === 0) throw new Error(`open on a vanished interface: ${err && err.message}`);
    gone.start(() => {}); // after the failed open: nothing to poll
    if (gone.stats().polling) throw new Error('a capture whose ring failed says it polls');
    await gone.close();
    global.gc();
  }
  // The interface goes down under a running capture (ENETDOWN: the poll error path, resumed).
  const bounced = new addon.Capture({ interface: 'lo' });
  bounced.start(() => {});
  require('node:child_process').execFileSync('ip', ['link', 'set', 'lo', 'down']);
  await new Promise((r) => setTimeout(r, 50));
  require('node:child_process').execFileSync('ip', ['link', 'set', 'lo', 'up']);
  await new Promise((r) => setTimeout(r, 50));
  const bouncedStats = bounced.stats();
  if (bouncedStats.pollErrors !== 1 || !bouncedStats.polling) throw new Error(`capture after lo went down: ${JSON.stringify(bouncedStats)}`);
  bounced.close();
  any.close(); ctrl.close();
  for (const c of extra) c.destroy();
  // sock_diag and /proc on libuv workers: dumps, batches of SOCK_DESTROY, owner scans.
  const flat = await addon.tcpSocketsAsync(4, { states: 1 << 1, localPorts: [port] });
  await addon.tcpSocketsAsync(6);
  attempt(() => addon.tcpSocketsAsync(4, { localPorts: [0] }));
  attempt(() => addon.tcpSocketsAsync(4, { states: 0 }));
  const victims = [];
  for (let i = 0; i < flat.count && victims.length < 3; i++) {
    const o = i * 11;
    victims.push({ family: 4, src: flat.addresses[2 * i], sport: flat.numbers[o + 2], dst: flat.addresses[2 * i + 1], dport: flat.numbers[o + 3], cookie: String(flat.numbers[o + 7]) });
  }
  await addon.destroySocketsAsync(victims);
  await addon.destroySocketsAsync([...victims, { family: 6, src: '::1', sport: 1, dst: '::1', dport: 2, cookie: '18446744073709551615' }]);
  attempt(() => addon.destroySocketsAsync([{ family: 4 }]));
  attempt(() => addon.destroySocketsAsync('x'));
  await addon.socketOwnersAsync();
  await addon.socketOwnersAsync([1, 2, 3]);
  await addon.socketOwnersAsync([], process.pid);
  await addon.socketOwnersAsync(undefined, process.pid);
  await addon.socketOwnersAsync(undefined, 0x3fffff).catch((e) => e.code);
  attempt(() => addon.socketOwnersAsync(['x']));
  const socks = addon.tcpSockets(4).filter((s) => s.sport === port && s.state === 1);
  for (const s of socks.slice(0, 5)) addon.destroySocket(s);
  attempt(() => addon.destroySocket({ family: 4, src: '127.0.0.1', sport: 1, dst: '127.0.0.1', dport: 2, cookie: '5' }));
  // A client the destroys above left open (which ones they reset depends on the dump's order).
  const fd = clients.find((c) => c._handle && c._handle.fd >= 0)._handle.fd;
  const seq = attempt(() => addon.tcpRepairSeq(fd));
  const borrowed = addon.borrowFd(process.pid, fd);
  attempt(() => addon.sendOnFd(borrowed, Buffer.from('x'), true)); // the peer may be one we destroyed
  attempt(() => addon.sendOnFd(borrowed, Buffer.from('hello'), false));
  attempt(() => addon.shutdownRead(borrowed));
  attempt(() => addon.shutdownRead(-1));
  attempt(() => addon.shutdownWrite(borrowed));
  addon.closeFd(borrowed);
  attempt(() => addon.borrowFd(0x3fffff, 0));
  const f4 = new addon.RawSender(4), f6 = new addon.RawSender(6);
  for (let i = 0; i < 1000; i++) {
    f4.send({ src: '127.0.0.1', dst: '127.0.0.1', sport: 9, dport: port, seq: i, ack: 1, flags: 0x14, tsval: i, tsecr: 1, payload: Buffer.alloc(i % 50) });
    f6.send({ src: '::1', dst: '::1', sport: 9, dport: port, seq: i, ack: 1, flags: 0x18, urgentPointer: 1, payload: Buffer.alloc(1) });
    attempt(() => addon.buildSegment({ src: 'x', dst: '::1', sport: 1, dport: 2, seq: 0, ack: 0, flags: 0 }));
  }
  f4.close(); f6.close(); attempt(() => f4.send({}));
  // Link-local destinations: refused without an interface; through one (IP_PKTINFO / scope id).
  const l4 = new addon.RawSender(4, 'lo'), l6 = new addon.RawSender(6, 'lo');
  for (let i = 0; i < 100; i++) {
    attempt(() => l4.send({ src: '169.254.0.1', dst: '169.254.0.2', sport: 9, dport: port, seq: i, ack: 1, flags: 0x14 }));
    attempt(() => l6.send({ src: 'fe80::1', dst: 'fe80::2', sport: 9, dport: port, seq: i, ack: 1, flags: 0x14 }));
  }
  l4.close(); l6.close();
  attempt(() => new addon.RawSender(6).send({ src: 'fe80::1', dst: 'fe80::2', sport: 9, dport: 1, seq: 0, ack: 0, flags: 0x10 }));
  attempt(() => new addon.RawSender(4, 'nosuch0'));
  attempt(() => addon.addAddress('nosuch0', '198.18.0.1', 24));
  for (const a of ['127.0.0.1', '::1', '198.18.0.1']) {
    if (!Array.isArray(addon.addressEntries('lo', a))) throw new Error('addressEntries: not an array');
  }
  attempt(() => addon.addressEntries('nosuch0', '::1'));
  if (addon.routesLocally('lo', '127.0.0.1') !== true || addon.routesLocally('lo', '::1') !== true) throw new Error('routesLocally: loopback is not local');
  attempt(() => addon.routesLocally('lo', '198.18.0.9'));
  attempt(() => addon.routesLocally('nosuch0', '::1'));
  attempt(() => addon.routesLocally('lo', 'x'));
  // Lifetimes (the address lease): on an address of this throwaway namespace, both families.
  for (const [a, p, f] of [['198.18.0.2', 32, 0], ['fd7a:6b00::2', 128, 0x02]]) {
    addon.addAddress('lo', a, p);
    for (const s of [5, 4294967294, -1]) addon.setAddressLifetime('lo', a, p, s, f);
    const e = addon.addressEntries('lo', a);
    if (e.length !== 1 || e[0].validLifetime !== -1) throw new Error(`setAddressLifetime: ${JSON.stringify(e)}`);
    addon.removeAddress('lo', a, p);
  }
  attempt(() => addon.setAddressLifetime('nosuch0', '198.18.0.1', 24, 5, 0));
  attempt(() => addon.setAddressLifetime('lo', '198.18.0.1', 24, 0, 0));
  attempt(() => addon.setAddressLifetime('lo', '198.18.0.1', 24, 2 ** 32, 0));
  attempt(() => addon.setAddressLifetime('lo', '198.18.0.1', 24, 5, -1));
  attempt(() => addon.setAddressLifetime('lo', '198.18.0.1', 24));
  attempt(() => addon.addressEntries('lo', 'x'));
  attempt(() => addon.announceAddress('lo', '127.0.0.1'));
  cap.close(); cap.close();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const watch = new addon.ProcessWatch(child.pid);
  const exited = new Promise((r) => watch.start(r));
  child.kill('SIGKILL');
  await exited;
  watch.close();
  attempt(() => new addon.ProcessWatch(0x3fffff));
  // Spawned: exit codes, a signal, killGroup before and after the reap, spawn errors, bad args.
  {
    const run = (file, args) => { const c = new addon.Spawned(file, args); return [c, new Promise((r) => c.start((code, sig) => r([code, sig])))]; };
    const [, ok] = run('true', []);
    const [, three] = run('sh', ['-c', 'exit 3']);
    const [sleeper, killed] = run('sh', ['-c', 'sleep 30 & sleep 30']);
    sleeper.killGroup(9);
    const results = await Promise.all([ok, three, killed]);
    if (JSON.stringify(results) !== '[[0,null],[3,null],[null,9]]') throw new Error(`Spawned results: ${JSON.stringify(results)}`);
    if (sleeper.killGroup(9) !== false) throw new Error('killGroup after the reap');
    attempt(() => sleeper.start(() => {}));
    attempt(() => new addon.Spawned('/nonexistent', []));
    attempt(() => new addon.Spawned('true', [1]));
    attempt(() => new addon.Spawned('tr\0ue', []));
    attempt(() => new addon.Spawned('', []));
    attempt(() => sleeper.killGroup(0));
  }
  // Address probes (ARP probe, DAD solicitation) across a veth pair of this namespace: pb holds
  // the addresses and answers what pa asks; frames through the poll and through read(); an
  // address nobody holds; the interface going down under a watching probe; close twice; refusals.
  {
    const { execFileSync } = require('node:child_process');
    const ipc = (...a) => execFileSync('ip', a);
    ipc('link', 'add', 'pa', 'type', 'veth', 'peer', 'name', 'pb');
    ipc('link', 'set', 'pa', 'up'); ipc('link', 'set', 'pb', 'up');
    ipc('addr', 'add', '198.18.0.9/24', 'dev', 'pb');
    ipc('addr', 'add', 'fd7a:6b00::9/64', 'dev', 'pb', 'nodad');
    await new Promise((r) => setTimeout(r, 1500)); // IPv6 multicast routes once the veth is up
    const accept = Buffer.from([6, 0, 0, 0, 128, 0, 0, 0]); // ret 128: every frame
    let answers = 0;
    for (const a of ['198.18.0.9', 'fd7a:6b00::9', '198.18.0.10', 'fd7a:6b00::10']) {
      const p = new addon.AddressProbe('pa', a, accept);
      p.start((frames) => { answers += frames.length; }, () => {});
      for (let i = 0; i < 20; i++) { p.send(); await new Promise((r) => setTimeout(r, 2)); }
      p.send();
      answers += p.read().length;
      await new Promise((r) => setTimeout(r, 20));
      await p.close(); await p.close();
      attempt(() => p.send()); attempt(() => p.start(() => {}, () => {})); p.read();
    }
    if (answers === 0) throw new Error('AddressProbe: no answer from pb');
    const down = new addon.AddressProbe('pa', '198.18.0.9', accept);
    let errors = 0;
    down.start(() => {}, () => { errors++; });
    ipc('link', 'set', 'pa', 'down');
    attempt(() => down.send());
    await new Promise((r) => setTimeout(r, 50));
    ipc('link', 'set', 'pa', 'up');
    await down.close();
    const unwatched = new addon.AddressProbe('pa', 'fd7a:6b00::9', accept); // closed by GC / teardown
    unwatched.send();
    attempt(() => new addon.AddressProbe('lo', '127.0.0.1', accept));
    attempt(() => new addon.AddressProbe('nosuch0', '198.18.0.9', accept));
    attempt(() => new addon.AddressProbe('pa', 'nope', accept));
    attempt(() => new addon.AddressProbe('pa', '198.18.0.9', Buffer.alloc(3)));
    attempt(() => new addon.AddressProbe('pa', '198.18.0.9'));
    attempt(() => { const p = new addon.AddressProbe('pa', '198.18.0.9', accept); p.start('x'); });
    ipc('link', 'del', 'pa');
  }
  // SG_IO: the host has no SCSI, so the worker's ioctl fails (ENOTTY) on every path; the
  // argument checks and the AsyncWorker's life (copy in, reject, free) are what run here.
  const fs = require('node:fs');
  const nul = fs.openSync('/dev/null', 'r+');
  const pending = [];
  for (let i = 0; i < 500; i++) {
    pending.push(addon.sgIo(nul, Buffer.alloc(6 + (i % 11)), i % 3 === 0 ? 512 : 0, i % 3 === 1 ? Buffer.alloc(24, i) : undefined, 1000).catch((e) => e.code));
    attempt(() => addon.sgIo(nul, Buffer.alloc(3), 0, undefined, 1000));
    attempt(() => addon.sgIo(nul, Buffer.alloc(6), 8, Buffer.alloc(8), 1000));
    attempt(() => addon.sgIo(-1, Buffer.alloc(6), 0, undefined, 1000));
    attempt(() => addon.sgIo(nul, 'x', 0, undefined, 1000));
  }
  const codes = new Set(await Promise.all(pending));
  fs.closeSync(nul);
  if (codes.size !== 1 || !codes.has('ENOTTY')) throw new Error(`sgIo on /dev/null: ${[...codes]}`);
  // TCP_REPAIR: a connection with bytes queued both ways dumped frozen, closed, restored (one
  // by one and as a batch), re-frozen and closed; then every refusal path.
  {
    const rs = net.createServer({ pauseOnConnect: true });
    await new Promise((r) => rs.listen(0, '127.0.0.1', r));
    const acceptedP = new Promise((r) => rs.once('connection', r));
    const rc = net.connect(rs.address().port, '127.0.0.1');
    rc.on('error', () => {});
    await new Promise((r) => rc.once('connect', r));
    rc.pause();
    const srv = await acceptedP;
    rc.write(Buffer.alloc(30000, 3));
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 50; i++) { try { if (addon.sendOnFd(srv._handle.fd, Buffer.alloc(65536, 4), false) < 65536) break; } catch { break; } }
    let st = addon.tcpRepairDump(srv._handle.fd, true);
    srv.destroy();
    for (let i = 0; i < 20; i++) {
      const r = addon.tcpRepairRestore(st);
      st = addon.tcpRepairDump(r.fd, true);
      addon.closeFd(r.fd);
    }
    // An odd TSval clock (rounded up to even by the restore), then the silent close of the copy.
    const odd = addon.tcpRepairRestore({ ...st, timestamp: (st.timestamp | 1) >>> 0 });
    addon.tcpRepairClose(odd.fd);
    attempt(() => addon.tcpRepairClose(-1));
    attempt(() => addon.tcpRepairClose('x'));
    const batch = await addon.tcpRepairRestoreAsync([st, { ...st, local: { ...st.local, address: '198.18.254.254' } }]);
    // The peer may already have reset a restored copy (it sees each of the 20 above come alive and
    // go silent): the dump then fails with ENOTCONN, as it should. What matters here is that the
    // path runs under the sanitizers (one run in three failed on that before, with either build).
    for (const b of batch) if (b.fd !== undefined) { attempt(() => addon.tcpRepairDump(b.fd, true)); addon.closeFd(b.fd); }
    attempt(() => addon.tcpRepairDump(rs._handle.fd, true));
    attempt(() => addon.tcpRepairDump(-1, true));
    attempt(() => addon.tcpRepairDump(rc._handle.fd, 'x'));
    attempt(() => addon.tcpRepairRestore({ ...st, mss: 0 }));
    attempt(() => addon.tcpRepairRestore({ ...st, sendUnsent: st.sendQueue.length + 1 }));
    attempt(() => addon.tcpRepairRestore({ ...st, local: { address: '::1', port: 1 } }));
    attempt(() => addon.tcpRepairRestore({ ...st, recvQueue: 'x' }));
    attempt(() => addon.tcpRepairRestore(null));
    attempt(() => addon.tcpRepairRestoreAsync('x'));
    attempt(() => addon.tcpRepairRestore({ ...st, window: undefined, sndWl1: 1, rcvWup: 2 ** 31 }));
    attempt(() => addon.tcpInfoOf(rc._handle.fd));
    attempt(() => addon.tcpRepairDump(rc._handle.fd, false)); // a look: repair mode left at once
    rc.destroy();
    rs.close();
  }
  {
    // The log directory lock: taken, refused to a second open file, freed by close.
    const fs = require('node:fs');
    const lockPath = require('node:path').join(require('node:os').tmpdir(), `tko-sanitize-lock-${process.pid}`);
    const a = fs.openSync(lockPath, 'w'), b = fs.openSync(lockPath, 'r');
    if (addon.tryLockExclusive(a) !== true || addon.tryLockExclusive(b) !== false) throw new Error('flock: wrong answers');
    fs.closeSync(a);
    if (addon.tryLockExclusive(b) !== true) throw new Error('flock: not freed by close');
    fs.closeSync(b);
    fs.unlinkSync(lockPath);
    attempt(() => addon.tryLockExclusive(-1));
    attempt(() => addon.tryLockExclusive('x'));
  }
  let spliced = 0;
  {
    // The splice relay: both ways with leftovers and half-close, a peer's reset, close() while
    // running, a relay never started, and bad arguments.
    const ls = net.createServer((s) => s.on('error', () => {}));
    await new Promise((r) => ls.listen(0, '127.0.0.1', r));
    const pair = async () => {
      const acc = new Promise((r) => ls.once('connection', r));
      const c = net.connect(ls.address().port, '127.0.0.1');
      c.on('error', () => {});
      await new Promise((r) => c.once('connect', r));
      const s = await acc;
      return [c, s];
    };
    const joined = async (init) => {
      const [left, x] = await pair();
      const [right, y] = await pair();
      const relay = new addon.SpliceRelay(x._handle.fd, y._handle.fd, 65536);
      x.destroy();
      y.destroy();
      const ended = new Promise((r) => relay.start(init, (err, end) => r({ err, end })));
      return { left, right, relay, ended };
    };
    for (let i = 0; i < 5; i++) {
      const a = await joined({ aToB: Buffer.alloc(100000, 1), bToA: Buffer.from('x'), bEof: i === 4 });
      let got = 0;
      a.right.on('data', (d) => (got += d.length));
      a.left.on('data', () => {});
      a.left.end(Buffer.alloc(3 << 20, 2));
      if (i !== 4) a.right.end('reply');
      const e = await a.ended;
      if (e.err || e.end.aToB !== 100000 + (3 << 20)) throw new Error(`splice relay: ${e.err ? e.err.message : JSON.stringify(e.end)}`);
      spliced += e.end.aToB + e.end.bToA;
      a.relay.bytes();
      a.relay.close();
    }
    const b = await joined({});
    b.left.write('abc');
    await new Promise((r) => setTimeout(r, 20));
    b.left.resetAndDestroy();
    const be = await b.ended;
    if (!be.err || be.err.code !== 'ECONNRESET') throw new Error(`splice relay reset: ${JSON.stringify(be)}`);
    b.right.destroy();
    const c = await joined({});
    c.left.write(Buffer.alloc(1 << 20, 3));
    await new Promise((r) => setTimeout(r, 10));
    c.relay.close();
    attempt(() => c.relay.start({}, () => {}));
    c.left.destroy();
    c.right.destroy();
    // detach() with bytes in the pipe (a reader that reads nothing), then a relay on what it gave back.
    for (let i = 0; i < 3; i++) {
      const e = await joined({});
      e.right.pause();
      let got = 0;
      e.right.on('data', (d) => (got += d.length));
      e.left.on('data', () => {});
      e.left.end(Buffer.alloc(4 << 20, 4));
      await new Promise((r) => setTimeout(r, 50));
      const d = e.relay.detach();
      attempt(() => e.relay.detach());
      const again = new addon.SpliceRelay(d.fdA, d.fdB);
      addon.closeFd(d.fdA);
      addon.closeFd(d.fdB);
      const ended = new Promise((r) => again.start({ aToB: d.aToB, bToA: d.bToA, aEof: d.aEof, bEof: d.bEof }, (err, end) => r({ err, end })));
      e.right.resume();
      e.right.end();
      const f = await ended;
      if (f.err || d.bytes.aToB + f.end.aToB !== 4 << 20) throw new Error(`splice relay detach: ${f.err ? f.err.message : JSON.stringify([d.bytes, f.end])}`);
      spliced += d.bytes.aToB + f.end.aToB;
    }
    const [p, q] = await pair();
    new addon.SpliceRelay(p._handle.fd, q._handle.fd).close();
    attempt(() => new addon.SpliceRelay(p._handle.fd, p._handle.fd));
    attempt(() => new addon.SpliceRelay(p._handle.fd, 0x7ffffff));
    attempt(() => new addon.SpliceRelay(p._handle.fd, 'x'));
    attempt(() => new addon.SpliceRelay(p._handle.fd, q._handle.fd, 1));
    const d = new addon.SpliceRelay(p._handle.fd, q._handle.fd);
    attempt(() => d.start({ aToB: 'x' }, () => {}));
    attempt(() => d.start(null, () => {}));
    d.close();
    if (typeof addon.splicePipesFree() !== 'number') throw new Error('splicePipesFree: not a number');
    p.destroy();
    q.destroy();
    ls.close();
  }
  // EgressQueue (nf_queue.cc): a loopback service's replies held and released in steps under
  // load, a second bind refused, bad arguments, closes with packets held, verdicts after close.
  let queued = 0;
  {
    const { execFileSync } = require('node:child_process');
    const echo = net.createServer((s) => { s.on('error', () => {}); s.on('data', (d) => s.write(d)); });
    await new Promise((r) => echo.listen(0, '127.0.0.1', r));
    const eport = echo.address().port;
    const rule = ['-t', 'mangle', '-I', 'OUTPUT', '-p', 'tcp', '-s', '127.0.0.1', '--sport', String(eport), '-j', 'NFQUEUE', '--queue-num', '21', '--queue-bypass'];
    attempt(() => new addon.EgressQueue(-1, 10, 10));
    attempt(() => new addon.EgressQueue(21, 70000, 10));
    attempt(() => new addon.EgressQueue(21, 10, 0));
    for (let round = 0; round < 3; round++) {
      const q = new addon.EgressQueue(21, round === 2 ? 40 : 65535, 4096);
      attempt(() => new addon.EgressQueue(21, 100, 100)); // held by q: EPERM
      attempt(() => q.start('x'));
      attempt(() => q.verdict(-1, true));
      attempt(() => q.verdict(1, 'yes'));
      let last = 0;
      q.start((batch) => {
        queued += batch.length;
        last = batch[batch.length - 1].id;
        // release all but the newest few, then the rest a turn later
        if (batch.length > 2) q.verdict(batch[batch.length - 3].id, true);
        setImmediate(() => { try { q.verdict(last, true); } catch {} });
      });
      execFileSync('iptables', rule);
      const cs = [];
      for (let i = 0; i < 10; i++) cs.push(await new Promise((r) => { const c = net.connect(eport, '127.0.0.1', () => r(c)); c.on('error', () => {}); }));
      for (const c of cs) for (let k = 0; k < 20; k++) c.write(Buffer.alloc(round === 1 ? 70000 : 100, k));
      await new Promise((r) => setTimeout(r, 300));
      if (round === 1) { q.verdict(last, false); } // drops: TCP sends them again
      q.stats();
      q.close(); // releases what is held
      q.close();
      attempt(() => q.verdict(1, true));
      attempt(() => q.start(() => {}));
      execFileSync('iptables', rule.map((a) => (a === '-I' ? '-D' : a)));
      for (const c of cs) c.destroy();
    }
    // Left to the collector while bound and watching.
    (() => { const q = new addon.EgressQueue(22, 100, 10); q.start(() => {}); q.close(); new addon.EgressQueue(23, 100, 10); })();
    echo.close();
  }
  for (const c of clients) c.destroy();
  server.close();
  console.log(JSON.stringify({ queued, segs, anySegs, flows: flows.count, packets: stats.packets, destroyed: socks.length, seq, spliced }));
  global.gc?.();
})();
