// One end of a log mirror on two links, for the lab test test/lab/mirror-links.test.ts (a host
// namespace each). JSON lines: events on stdout (each with `t`, wall ms comparable across
// processes), commands on stdin; stdin closing ends it.
//   --role backup  --dir D --main IP --failsafe IP --port P --key HEX
//     listens on IP:P of both links; events listening, attached {link}, detached, stats, closed.
//   --role primary --dir D --main IP --failsafe IP --port P --key HEX --ack-timeout MS
//     dials both; events state {to, from, why}, link {type, link...}, progress, slow {start, ms}
//     (an append that waited 50 ms or more), load-done {acked per appender, errors, maxWaitMs},
//     closed. Commands: {cmd:'load', appenders, maxRecords, maxMs}, {cmd:'stop'}, {cmd:'close'}.
// Payloads are `appender W record N` padded to 64 bytes, so the test can rebuild what was acked.
import { MirrorBackup } from '../src/log/mirror-backup.js';
import { MirroredLog } from '../src/log/mirrored-log.js';
import { emit, fixtureArgs, onCommands } from '../src/lab/fixtures/args.js';

const args = fixtureArgs();
const need = (k: string) => {
  const v = args.get(k);
  if (v === undefined) {
    process.stderr.write(`missing --${k}\n`);
    process.exit(2);
  }
  return v;
};
const role = need('role');
const dir = need('dir');
const main = need('main');
const failsafe = need('failsafe');
const port = Number(need('port'));
const key = Buffer.from(need('key'), 'hex');

export function payloadOf(appender: number, n: number): Buffer {
  return Buffer.from(`appender ${appender} record ${n} `.padEnd(64, String.fromCharCode(97 + (n % 26))));
}

if (role === 'backup') {
  const b = await MirrorBackup.listen({ dir, host: main, port, failsafe: { host: failsafe, port }, key, node: 'lab-b', log: 'orders' });
  b.on('attached', (i) => emit('attached', { link: i.link, fromLsn: i.fromLsn, remote: i.remote }));
  b.on('detached', (i) => emit('detached', { message: i.error.message }));
  b.on('rejected', (i) => emit('rejected', { message: i.error.message }));
  emit('listening', { listening: b.listening });
  onCommands(async (c) => {
    if (c.cmd === 'stats') emit('stats', { stats: b.stats, heldLsn: b.heldLsn, attachedLink: b.attachedLink, tag: c.tag });
    if (c.cmd === 'close') {
      await b.close();
      emit('closed', { heldLsn: b.heldLsn });
      process.exit(0);
    }
  });
} else {
  const log = await MirroredLog.open({
    dir,
    backup: { host: main, port, failsafe: { host: failsafe, port } },
    key,
    node: 'lab-a',
    log: 'orders',
    ackTimeoutMs: Number(need('ack-timeout')),
    reconnect: { minMs: 20, maxMs: 250 },
  });
  const where = () => ({ held: log.backupHeldLsn, acked: log.ackedLsn, next: log.nextLsn, durable: log.durableLsn, fromDisk: log.stats.recordsFromDisk, sent: log.stats.recordsSent, acks: log.stats.acksReceived });
  log.on('state', (to, from, why) => emit('state', { to, from, why, ...where() }));
  // While catching up: where the backup and the acknowledgements are, every 10 ms (what a slow catch-up waits for).
  setInterval(() => log.state === 'catching-up' && emit('catching-up', where()), 10).unref();
  log.on('link', (i) => emit('link', { ...i, ...('error' in i ? { error: i.error.message } : {}) }));
  let stop = false;
  let runs: Array<Promise<void>> = [];
  const acked: number[] = [];
  let errors = 0;
  let maxWaitMs = 0;
  let slow = 0;
  let progress: NodeJS.Timeout | null = null;
  onCommands(async (c) => {
    if (c.cmd === 'load') {
      const appenders = Number(c.appenders);
      const maxRecords = Number(c.maxRecords);
      const maxMs = Number(c.maxMs);
      const t0 = performance.now();
      let started = 0;
      acked.push(...Array.from({ length: appenders }, () => 0));
      progress = setInterval(() => emit('progress', { acked: acked.reduce((a, b) => a + b, 0), state: log.state, link: log.mirrorLink?.link ?? null }), 100);
      runs = Array.from({ length: appenders }, async (_, w) => {
        // Bounded in count and time; each appender waits for its commit before the next.
        for (let n = 0; !stop && started < maxRecords && performance.now() - t0 < maxMs; n++) {
          started++;
          const start = performance.now();
          try {
            await log.append(payloadOf(w, n));
            acked[w] = n + 1;
          } catch (err) {
            errors++;
            emit('append-error', { message: (err as Error).message });
            return; // the appender's records after a failure would not be a prefix
          }
          const ms = performance.now() - start;
          maxWaitMs = Math.max(maxWaitMs, ms);
          if (ms >= 50 && slow++ < 1000) emit('slow', { start: performance.timeOrigin + start, ms });
        }
      });
    }
    if (c.cmd === 'stop') {
      stop = true;
      await Promise.all(runs);
      if (progress) clearInterval(progress);
      emit('load-done', { acked, errors, maxWaitMs, stats: log.stats, state: log.state });
    }
    if (c.cmd === 'close') {
      await log.close();
      emit('closed', { nextLsn: log.nextLsn });
      process.exit(0);
    }
  });
}
