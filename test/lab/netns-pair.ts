// Two namespaces joined by one veth pair, for the forge and address lab tests. Only
// 198.18.0.0/24 and fd7a:6b00::/64 are used; everything is deleted by destroy(), which the
// tests call in afterAll even when a step failed.
import { run, runQuiet } from '../../src/lab/exec.js';
import { spawnNode, type NodeChild } from '../../src/lab/node-child.js';

export interface PairHost {
  ns: string;
  ifname: string;
  mac: string;
  ipv4: string;
  ipv6: string;
}

export class NetnsPair {
  readonly a: PairHost;
  readonly b: PairHost;
  private readonly children = new Set<NodeChild>();

  private constructor(tag: string) {
    const prefix = `tko-forge-${process.pid}-${tag}`;
    this.a = { ns: `${prefix}-a`, ifname: 'a0', mac: '02:7a:6b:00:00:01', ipv4: '198.18.0.1', ipv6: 'fd7a:6b00::1' };
    this.b = { ns: `${prefix}-b`, ifname: 'b0', mac: '02:7a:6b:00:00:02', ipv4: '198.18.0.2', ipv6: 'fd7a:6b00::2' };
  }

  /** Builds the pair; on failure removes what was made and rethrows. */
  static async create(tag: string): Promise<NetnsPair> {
    const pair = new NetnsPair(tag);
    try {
      await pair.build();
    } catch (err) {
      await pair.destroy();
      throw err;
    }
    return pair;
  }

  /** Runs `ip -n NS args...`. */
  ip(host: PairHost, args: string[]) {
    return run('ip', ['-n', host.ns, ...args]);
  }

  exec(host: PairHost, cmd: string, args: string[], input?: string) {
    return run('ip', ['netns', 'exec', host.ns, cmd, ...args], input);
  }

  spawn(host: PairHost, script: string, args: string[] = []): NodeChild {
    const child = spawnNode(host.ns, script, args);
    this.children.add(child);
    return child;
  }

  async destroy(): Promise<void> {
    await Promise.all([...this.children].map((c) => c.kill()));
    for (const h of [this.a, this.b]) await runQuiet('ip', ['netns', 'del', h.ns]);
  }

  private async build(): Promise<void> {
    for (const h of [this.a, this.b]) await run('ip', ['netns', 'add', h.ns]);
    await run('ip', ['link', 'add', 'name', this.a.ifname, 'netns', this.a.ns, 'address', this.a.mac, 'type', 'veth',
      'peer', 'name', this.b.ifname, 'netns', this.b.ns, 'address', this.b.mac]);
    for (const h of [this.a, this.b]) {
      await this.ip(h, ['link', 'set', 'lo', 'up']);
      await this.ip(h, ['addr', 'add', `${h.ipv4}/24`, 'dev', h.ifname]);
      await this.ip(h, ['addr', 'add', `${h.ipv6}/64`, 'dev', h.ifname, 'nodad']);
      await this.ip(h, ['link', 'set', h.ifname, 'up']);
    }
    // Until linkwatch reports the veth up (up to a second later), IPv6 has no ff00::/8 route
    // on it and silently drops every multicast packet, neighbour advertisements included.
    for (const h of [this.a, this.b]) {
      await eventually(async () => {
        const { stdout } = await this.ip(h, ['-6', 'route', 'show', 'table', 'local', 'ff00::/8', 'dev', h.ifname]);
        return stdout.trim() ? true : undefined;
      }, 5000, `IPv6 multicast route on ${h.ns}`);
    }
  }
}

/** Polls fn until it returns a value other than undefined, or throws after timeoutMs. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 3000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
