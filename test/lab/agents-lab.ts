// For lab tests that run `takeover agent` as processes: the lab, a scratch directory and the
// agents' processes of one test, all removed after it, even when it fails; host a's service
// address (the one a peer takes over) and each host's heartbeat links.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, type TestContext } from 'vitest';
import { controlRequest } from '../../src/agent/control.js';
import { Lab } from '../../src/lab/lab.js';
import { startCli } from '../cli-process.js';
import { until } from './replication-cluster.js';

type CliProcess = ReturnType<typeof startCli>;
type Made = { lab: Lab; dir: string; agents: CliProcess[] };
const made: Made[] = [];

async function remove(m: Made): Promise<void> {
  for (const a of m.agents) a.child.kill('SIGKILL');
  await m.lab.destroy();
  rmSync(m.dir, { recursive: true, force: true });
}

afterEach(async () => {
  for (const m of made.splice(0)) await remove(m);
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
 * Removed after the test; `test` (a concurrent test's context) ties it to that test alone, where
 * the file's afterEach would remove every lab made so far, a concurrent test's too.
 */
export async function agentsLab(options: Parameters<typeof Lab.create>[0], prefix: string, { addVip = true, test }: { addVip?: boolean; test?: TestContext } = {}): Promise<AgentsLab> {
  const lab = await Lab.create(options);
  const m = { lab, dir: mkdtempSync(path.join(tmpdir(), prefix)), agents: [] as CliProcess[] };
  if (test) test.onTestFinished(() => remove(m));
  else made.push(m);
  const vip = `198.18.${lab.subnet}.100`;
  if (addVip) await lab.exec('a', 'ip', ['addr', 'add', `${vip}/24`, 'dev', 'eth0']);
  const links = (host: string) => {
    const h = lab.host(host);
    return [{ id: 0, address: h.ipv4, port: 7400 }, ...(h.failsafe ? [{ id: 1, address: h.failsafe.ipv4, port: 7400 }] : [])];
  };
  return { ...m, vip, links };
}

/**
 * The continue tests' pair (issue 12): `takeover agent` processes on a (the primary) and b, b's
 * takeover of a's service port on the service address with `continue` as given, two nodes
 * without fencing (quorum.twoNode: the silenced a is what fencing would make it). `aExtra` goes
 * into a's config (e.g. its connectionStream), `bExtra` into b's (e.g. relayKeeper); `heartbeat` replaces the 100 ms x 3 misses (a
 * test that needs no fast detection on a loaded machine). Returns each agent's log as parsed JSON lines, and its process.
 */
export function startContinueAgents(
  m: AgentsLab,
  port: number,
  continueSection: Record<string, unknown>,
  aExtra: Record<string, unknown> = {},
  heartbeat: { intervalMs: number; misses: number } = { intervalMs: 100, misses: 3 },
  bExtra: Record<string, unknown> = {},
): { log: (node: 'a' | 'b') => Array<Record<string, any>>; agent: (node: 'a' | 'b') => CliProcess } {
  const { lab, dir, agents, vip, links } = m;
  const started = new Map<'a' | 'b', CliProcess>();
  for (const n of ['a', 'b'] as const) {
    const takeover = { address: vip, port, interface: 'eth0', prefixLength: 24, continue: continueSection };
    const config = {
      cluster: 'ops', node: n, database: 'db', key: 'the operators cluster key', control: path.join(dir, `${n}.sock`),
      heartbeat: { ...heartbeat, links: links(n) }, notify: { port: 0 },
      peers: [n === 'a' ? { node: 'b', links: links('b') } : { node: 'a', links: links('a'), takeover }],
      quorum: { twoNode: true },
      ...(n === 'a' ? aExtra : bExtra),
    };
    writeFileSync(path.join(dir, `${n}.json`), JSON.stringify(config));
    // b at debug: a line per continued connection, for a test following one client.
    const agent = startCli(['agent', '--config', path.join(dir, `${n}.json`), ...(n === 'b' ? ['--log-level', 'debug'] : [])], { netns: lab.host(n).ns });
    agents.push(agent);
    started.set(n, agent);
  }
  return { log: (node) => started.get(node)!.stdout().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, any>), agent: (node) => started.get(node)! };
}

/**
 * `host`'s agent's status, as `takeover status --json` prints it (the same control request, from
 * this process: the control socket is a file, reachable from outside the namespace; ~1 s less
 * than a CLI process for each poll of a wait); undefined when the agent does not answer. Tests
 * that check what the CLI prints run the CLI.
 */
export async function controlStatus<T = Record<string, unknown>>(m: AgentsLab, host: string): Promise<T | undefined> {
  let status: T | undefined;
  try {
    await controlRequest(path.join(m.dir, `${host}.sock`), { cmd: 'status' }, (msg) => {
      if (typeof msg.error !== 'string') status = msg as T;
    });
  } catch {
    return undefined;
  }
  return status;
}

/**
 * Resolves once `host`'s agent follows its peer's connections, as `takeover status --json` says
 * (every shadow's mirror capture set up, or its stream connected): a connection opened before
 * is not followed, and a takeover resets it (a loaded CI machine took longer than the 500 ms the
 * tests used to wait). Rejects after `ms`.
 */
export async function shadowFollowing(m: AgentsLab, host: string, ms = 15_000): Promise<void> {
  await until(`${host}'s shadow capturing`, async () => {
    const shadows = (await controlStatus<{ shadows?: Array<{ capturing?: boolean; connected?: boolean }> }>(m, host))?.shadows ?? [];
    return shadows.length > 0 && shadows.every((s) => s.capturing === true || s.connected === true) ? true : undefined;
  }, ms);
}
