// For lab tests that run `takeover agent` as processes: the lab, a scratch directory and the
// agents' processes of one test, all removed after it, even when it fails; host a's service
// address (the one a peer takes over) and each host's heartbeat links.
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

export interface AgentsLab {
  lab: Lab;
  dir: string;
  /** The agents the test starts: killed after it. */
  agents: CliProcess[];
  /** 198.18.SUBNET.100/24, added on host a's eth0 (unless addVip is false): the service address its peer takes over. */
  vip: string;
  /** A host's heartbeat links, port 7400: id 0 on eth0, id 1 on eth1 when the lab has a failsafe link. */
  links: (host: string) => Array<{ id: number; address: string; port: number }>;
}

/**
 * A lab, a scratch directory named after `prefix`, a's service address, and the agents' list.
 * `addVip: false` leaves the address off a (a cluster manager adds it where the service runs).
 */
export async function agentsLab(options: Parameters<typeof Lab.create>[0], prefix: string, { addVip = true } = {}): Promise<AgentsLab> {
  const lab = await Lab.create(options);
  const m = { lab, dir: mkdtempSync(path.join(tmpdir(), prefix)), agents: [] as CliProcess[] };
  made.push(m);
  const vip = `198.18.${lab.subnet}.100`;
  if (addVip) await lab.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
  const links = (host: string) => {
    const h = lab.host(host);
    return [{ id: 0, address: h.ipv4, port: 7400 }, ...(h.failsafe ? [{ id: 1, address: h.failsafe.ipv4, port: 7400 }] : [])];
  };
  return { ...m, vip, links };
}
