// For lab tests that run `takeover agent` as processes: the lab, a scratch directory and the
// agents' processes of one test, all removed after it, even when it fails.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import type { startCli } from '../cli-process.js';

type CliProcess = ReturnType<typeof startCli>;
const made: Array<{ lab: Lab; dir: string; agents: CliProcess[] }> = [];

afterEach(async () => {
  for (const m of made.splice(0)) {
    for (const a of m.agents) a.child.kill('SIGKILL');
    await m.lab.destroy();
    rmSync(m.dir, { recursive: true, force: true });
  }
});

/** A lab, a scratch directory named after `prefix`, and the list the test puts its agents in. */
export async function agentsLab(options: Parameters<typeof Lab.create>[0], prefix: string): Promise<{ lab: Lab; dir: string; agents: CliProcess[] }> {
  const lab = await Lab.create(options);
  const m = { lab, dir: mkdtempSync(path.join(tmpdir(), prefix)), agents: [] as CliProcess[] };
  made.push(m);
  return m;
}
