import { readdirSync, readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

// Each project takes these; the global setup (root, network namespaces swept, dist/ built)
// stays at the root, so it runs once for the whole run.
const common = { testTimeout: 60_000, hookTimeout: 60_000 };

// Unit test files that measure or wait on the clock (a bound in ms, a sleep, a wait for
// something to happen in time) run one at a time: two at once on 2 cores made a heartbeat
// grid test miss its bound. The rest (pure logic, parsers, fuzz, builds) run two at a time.
const TIMED = /performance\.now\(\)|Date\.now\(\)|elapsed|Ms\)\.toBeLessThan|toBeLessThan\([0-9_ +*A-Z]+\)|setTimeout\(r,|sleep\(|until\(/;
// Files the pattern catches that read the clock without measuring or waiting on it: dates
// written or checked (a certificate's validity, a record's start time), a fuzz loop's time cap,
// fake timers (Date.now() of vi's clock), simulated or injected clocks (close-engine,
// address-probe, replication: their `elapsed` and bounds are in the fake time), a sleep in
// another program's text (goodbye: pg_sleep in SQL bytes; socket-ops: a python child that only
// holds a socket), polls bounded at 1 s for what the kernel does at once (borrowed-socket: a
// SIGSTOPped process's state). They run with the parallel ones.
const CLOCK_WITHOUT_TIMING = new Set([
  'address-lease.test.ts', 'etcd-credentials.test.ts', 'instance-record.test.ts', 'tcp-repair-state.test.ts',
  'close-engine.test.ts', 'address-probe.test.ts', 'replication.test.ts', 'goodbye.test.ts', 'socket-ops.test.ts', 'borrowed-socket.test.ts',
]);
const unitDir = new URL('test/unit/', import.meta.url);
const timedUnit = readdirSync(unitDir)
  .filter((f) => f.endsWith('.test.ts') && !CLOCK_WITHOUT_TIMING.has(f) && TIMED.test(readFileSync(new URL(f, unitDir), 'utf8')))
  .map((f) => `test/unit/${f}`);

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        test: { ...common, name: 'unit', include: ['test/unit/**/*.test.ts'], exclude: timedUnit, fileParallelism: true, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        test: { ...common, name: 'unit-timed', include: timedUnit, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
      {
        // Lab and guest tests build network namespaces, child processes and qemu guests; run
        // their files one at a time, so two labs never compete for the 2 cores and their
        // timings stay meaningful.
        test: { ...common, name: 'lab', include: ['test/lab/**/*.test.ts', 'test/vm/**/*.test.ts'], fileParallelism: false, sequence: { groupOrder: 2 } },
      },
    ],
  },
});
