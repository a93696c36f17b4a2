import { defineConfig } from 'vitest/config';

// Each project takes these; the global setup (root, network namespaces swept, dist/ built)
// stays at the root, so it runs once for the whole run.
const common = { testTimeout: 60_000, hookTimeout: 60_000 };

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        // Unit tests: no lab, few and short timed claims; two files at a time (2 cores), first.
        test: { ...common, name: 'unit', include: ['test/unit/**/*.test.ts'], fileParallelism: true, maxWorkers: 2, sequence: { groupOrder: 0 } },
      },
      {
        // Lab and guest tests build network namespaces, child processes and qemu guests; run
        // their files one at a time, after the unit tests, so two labs never compete for the 2
        // cores and their timings stay meaningful.
        test: { ...common, name: 'lab', include: ['test/lab/**/*.test.ts', 'test/vm/**/*.test.ts'], fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
