// A network lab made of namespaces: every host is a namespace with one `eth0` on a bridge that
// lives in a switch namespace of its own, so nothing touches the machine's own interfaces.
// Used by `takeover demo`, the tests and the benchmarks. Addresses come from the benchmarking
// range 198.18.0.0/15 and the ULA fd7a:6b00::/48, never from a range a real network uses.
import { randomBytes } from 'node:crypto';
import { run, runQuiet } from './exec.js';
import { NodeChild, spawnInNamespace, spawnNode } from './node-child.js';

export interface LabHost {
  name: string;
  ns: string;
  ifname: 'eth0';
  ipv4: string;
  ipv6: string;
  mac: string;
  /** The bridge port in the switch namespace that this host hangs on. */
  port: string;
  /** The second link (seed 004's failsafe link) when the lab has one: eth1 on its own bridge. */
  failsafe?: { ifname: 'eth1'; ipv4: string; ipv6: string; port: string };
}

export interface LabOptions {
  hosts: string[];
  /** Third octet of 198.18.X.0/24 and 16-bit group of fd7a:6b00:X::/64; default random. */
  subnet?: number;
  /** Give every host a second link (eth1, 198.19.X.0/24, fd7a:6b01:X::/64) on a second bridge. */
  failsafeLink?: boolean;
}

/** Prefix of every namespace the lab makes; a sweep removes leftovers of crashed runs. */
export const LAB_PREFIX = 'tko';

export class Lab {
  readonly id: string;
  readonly switchNs: string;
  readonly hosts = new Map<string, LabHost>();
  readonly subnet: number;
  private readonly children = new Set<NodeChild>();
  private destroyed = false;
  private mirrors = 0;
  private readonly mirrorsIn = new Map<string, number>();
  private readonly clsact = new Set<string>();

  private constructor(id: string, subnet: number) {
    this.id = id;
    this.subnet = subnet;
    this.switchNs = `${LAB_PREFIX}${id}-sw`;
  }

  /** Builds the lab; on any failure everything made so far is removed before rethrowing. */
  static async create(options: LabOptions): Promise<Lab> {
    const subnet = options.subnet ?? 1 + (randomBytes(1)[0]! % 250);
    // The creating pid is part of the name: a sweep removes only labs whose creator is gone.
    const lab = new Lab(`${process.pid.toString(16)}x${randomBytes(2).toString('hex')}`, subnet);
    try {
      await lab.build(options);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  host(name: string): LabHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`lab has no host named ${name}`);
    return h;
  }

  /** Runs a command inside a host's namespace. */
  exec(host: string, cmd: string, args: string[], input?: string) {
    return run('ip', ['netns', 'exec', this.host(host).ns, cmd, ...args], input);
  }

  /** Starts a Node script (TS or JS) inside a host's namespace; killed by destroy(). */
  spawn(host: string, script: string, args: string[] = [], env: Record<string, string> = {}): NodeChild {
    return this.adopt(spawnNode(this.host(host).ns, script, args, env));
  }

  /** Starts any command that speaks JSON lines inside a host's namespace; killed by destroy(). */
  spawnCommand(host: string, cmd: string, args: string[] = []): NodeChild {
    return this.adopt(spawnInNamespace(this.host(host).ns, cmd, args));
  }

  private adopt(child: NodeChild): NodeChild {
    this.children.add(child);
    child.process.once('exit', () => this.children.delete(child));
    return child;
  }

  /**
   * Makes a host die silently, as a panicked node does: no FIN, no RST, no ARP or ND answers.
   * 'nft' drops everything inside the host (inet and arp families); 'port' takes its bridge
   * port down, which the other hosts cannot tell from a panic either.
   */
  async killSilently(host: string, mode: 'nft' | 'port' = 'nft'): Promise<void> {
    const h = this.host(host);
    if (mode === 'port') {
      for (const port of [h.port, ...(h.failsafe ? [h.failsafe.port] : [])]) {
        await run('ip', ['-n', this.switchNs, 'link', 'set', 'dev', port, 'down']);
      }
      return;
    }
    const rules = [
      'table inet takeover_lab_dead {',
      '  chain drop_in { type filter hook input priority -400; policy drop; }',
      '  chain drop_out { type filter hook output priority -400; policy drop; }',
      '  chain drop_fwd { type filter hook forward priority -400; policy drop; }',
      '}',
      'table arp takeover_lab_dead {',
      '  chain drop_in { type filter hook input priority -400; policy drop; }',
      '  chain drop_out { type filter hook output priority -400; policy drop; }',
      '}',
    ].join('\n');
    await run('ip', ['netns', 'exec', h.ns, 'nft', '-f', '-'], rules);
  }

  /**
   * The node dies: silent at once (killSilently 'nft'), then every process in its namespace is
   * SIGKILLed (its agent, its services). heal() makes it reachable again, with nothing running.
   */
  async crash(host: string): Promise<void> {
    await this.killSilently(host, 'nft');
    await killNamespaceProcesses(this.host(host).ns);
  }

  /** Undoes killSilently(host, 'nft'): the host is heard again (a partition heals). */
  async heal(host: string): Promise<void> {
    const h = this.host(host);
    await run('ip', ['netns', 'exec', h.ns, 'nft', '-f', '-'], 'delete table inet takeover_lab_dead\ndelete table arp takeover_lab_dead\n');
  }

  /**
   * A partition between two hosts only: the switch drops every frame from one's port to the
   * other's (ARP and floods included), both ways; each still reaches every other host.
   * healBetween() undoes it.
   */
  async cutBetween(x: string, y: string): Promise<void> {
    const [px, py] = [this.host(x).port, this.host(y).port];
    const rules = [
      `table bridge ${cutTable(x, y)} {`,
      '  chain cut { type filter hook forward priority -400;',
      `    iifname "${px}" oifname "${py}" drop`,
      `    iifname "${py}" oifname "${px}" drop`,
      '  }',
      '}',
    ].join('\n');
    await run('ip', ['netns', 'exec', this.switchNs, 'nft', '-f', '-'], rules);
  }

  /** Undoes cutBetween(x, y). */
  async healBetween(x: string, y: string): Promise<void> {
    await run('ip', ['netns', 'exec', this.switchNs, 'nft', 'delete', 'table', 'bridge', cutTable(x, y)]);
  }

  /** Cuts one of a host's links at the switch (its bridge port goes down); the host lives on. */
  async cutLink(host: string, link: 'main' | 'failsafe'): Promise<void> {
    const h = this.host(host);
    const port = link === 'main' ? h.port : h.failsafe?.port;
    if (!port) throw new Error(`lab host ${host} has no ${link} link`);
    await run('ip', ['-n', this.switchNs, 'link', 'set', 'dev', port, 'down']);
  }

  /**
   * One of a host's links dies the way a cable or a switch port does, the host living on: the
   * switch drops every frame to or from that link's port (ARP and floods included), nothing is
   * closed or reset. restoreLink() undoes it.
   */
  async dropLink(host: string, link: 'main' | 'failsafe'): Promise<void> {
    const port = this.linkPort(host, link);
    const rules = [
      `table bridge ${dropTable(host, link)} {`,
      '  chain down { type filter hook forward priority -400;',
      `    iifname "${port}" drop`,
      `    oifname "${port}" drop`,
      '  }',
      '}',
    ].join('\n');
    await run('ip', ['netns', 'exec', this.switchNs, 'nft', '-f', '-'], rules);
  }

  /** Undoes dropLink(host, link). */
  async restoreLink(host: string, link: 'main' | 'failsafe'): Promise<void> {
    this.linkPort(host, link);
    await run('ip', ['netns', 'exec', this.switchNs, 'nft', 'delete', 'table', 'bridge', dropTable(host, link)]);
  }

  /**
   * A port mirror at the switch (seed 003 FIG. 1: the routing device copies the primary's
   * traffic to the backup), as a managed switch's SPAN port: every frame that enters or leaves
   * `of`'s bridge port is copied (tc clsact, u32 match-all, `mirred egress mirror`) into a veth
   * pair whose switch end is NOT a bridge port and whose other end is a capture interface in
   * host `to`: up, no address, no ARP, IPv6 off, so that host only listens on it (its stack
   * drops the copies: they are addressed to other MACs). Frames are copied as the kernel holds
   * them: a GSO super-frame stays one frame, and a checksum the sender offloaded is not filled
   * in. Returns the capture interface's name in `to` (mir0, mir1, ... per host).
   * Everything lives in the lab's namespaces, so destroy() removes it with them.
   * Throws for an unknown host or when `of` is `to`.
   */
  async mirrorPort(of: string, to: string): Promise<{ ifname: string }> {
    const src = this.host(of);
    const dst = this.host(to);
    if (of === to) throw new Error(`lab cannot mirror host ${of}'s port to itself`);
    const n = this.mirrors++;
    const ifname = `mir${this.mirrorsIn.get(to) ?? 0}`;
    this.mirrorsIn.set(to, (this.mirrorsIn.get(to) ?? 0) + 1);
    const swEnd = `m${n}-${to}`;
    const sw = ['-n', this.switchNs];
    await run('ip', [...sw, 'link', 'add', 'name', swEnd, 'type', 'veth', 'peer', 'name', ifname, 'netns', dst.ns]);
    // Quiet ends: no IPv6 link-local address or router solicitations, no ARP, on either side.
    for (const [ns, dev] of [[this.switchNs, swEnd], [dst.ns, ifname]] as const) {
      await run('ip', ['netns', 'exec', ns, 'sh', '-c', `echo 1 > /proc/sys/net/ipv6/conf/${dev}/disable_ipv6`]);
      await run('ip', ['-n', ns, 'link', 'set', 'dev', dev, 'arp', 'off', 'up']);
    }
    // clsact once per port (a second mirror of the same port adds filters to it).
    if (!this.clsact.has(src.port)) {
      await run('ip', ['netns', 'exec', this.switchNs, 'tc', 'qdisc', 'add', 'dev', src.port, 'clsact']);
      this.clsact.add(src.port);
    }
    // ingress of the switch's port = frames the host sent; egress = frames sent to the host.
    for (const dir of ['ingress', 'egress']) {
      await run('ip', ['netns', 'exec', this.switchNs, 'tc', 'filter', 'add', 'dev', src.port, dir, 'protocol', 'all',
        'u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'mirror', 'dev', swEnd]);
    }
    return { ifname };
  }

  private linkPort(host: string, link: 'main' | 'failsafe'): string {
    const h = this.host(host);
    const port = link === 'main' ? h.port : h.failsafe?.port;
    if (!port) throw new Error(`lab host ${host} has no ${link} link`);
    return port;
  }

  /** Kills every child, deletes every namespace. Safe to call twice and after a failed build. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await Promise.all([...this.children].map((c) => c.kill()));
    const namespaces = [...[...this.hosts.values()].map((h) => h.ns), this.switchNs];
    await Promise.all(namespaces.map((ns) => killNamespaceProcesses(ns)));
    // One process for all (-force: each is attempted even when one is already gone).
    await run('ip', ['-force', '-batch', '-'], namespaces.map((ns) => `netns del ${ns}\n`).join('')).catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.destroy();
  }

  private async build(options: LabOptions): Promise<void> {
    const bridges = options.failsafeLink ? ['br0', 'br1'] : ['br0'];
    let n = 1;
    for (const name of options.hosts) {
      if (!/^[a-z][a-z0-9]{0,7}$/.test(name)) throw new Error(`lab host name must be [a-z][a-z0-9]{0,7}: ${name}`);
      const index = n++;
      const mac = `02:7a:6b:${this.subnet.toString(16).padStart(2, '0')}:00:${index.toString(16).padStart(2, '0')}`;
      this.hosts.set(name, {
        name,
        ns: `${LAB_PREFIX}${this.id}-${name}`,
        ifname: 'eth0',
        ipv4: `198.18.${this.subnet}.${index}`,
        ipv6: `fd7a:6b00:${this.subnet.toString(16)}::${index}`,
        mac,
        port: `p-${name}`,
        ...(options.failsafeLink
          ? { failsafe: { ifname: 'eth1' as const, ipv4: `198.19.${this.subnet}.${index}`, ipv6: `fd7a:6b01:${this.subnet.toString(16)}::${index}`, port: `q-${name}` } }
          : {}),
      });
    }
    const hosts = [...this.hosts.values()];
    // One `ip -batch` per namespace instead of one `ip` per step (it stops at the first command
    // that fails, and run() rejects with its message): a three-host lab is 6 processes, not 30,
    // ~10 ms each on a loaded machine, and a suite builds ~70 labs.
    const batch = (ns: string | undefined, lines: string[]) => run('ip', [...(ns ? ['-n', ns] : []), '-batch', '-'], `${lines.join('\n')}\n`);
    await batch(undefined, [this.switchNs, ...hosts.map((h) => h.ns)].map((ns) => `netns add ${ns}`));
    // A switch forwards frames; with br_netfilter loaded a Linux bridge would also validate and
    // drop malformed IP packets, which the parser tests send on purpose.
    // (sh, not sysctl: procps may be missing; the files are missing without br_netfilter.)
    await run('ip', ['netns', 'exec', this.switchNs, 'sh', '-c', 'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 > "$f"; done; true']);
    await batch(this.switchNs, [
      ...bridges.flatMap((br) => [`link add ${br} type bridge`, `link set ${br} up`]),
      ...hosts.flatMap((h) => [
        `link add name ${h.port} type veth peer name eth0 netns ${h.ns}`,
        `link set dev ${h.port} master br0 up`,
        ...(h.failsafe ? [`link add name ${h.failsafe.port} type veth peer name eth1 netns ${h.ns}`, `link set dev ${h.failsafe.port} master br1 up`] : []),
      ]),
    ]);
    // The hosts' own ends, each in its namespace: independent, so all at once.
    await Promise.all(hosts.map((h) => batch(h.ns, [
      'link set lo up',
      `link set eth0 address ${h.mac}`,
      `addr add ${h.ipv4}/24 dev eth0`,
      `addr add ${h.ipv6}/64 dev eth0 nodad`,
      'link set eth0 up',
      ...(h.failsafe ? [`addr add ${h.failsafe.ipv4}/24 dev eth1`, `addr add ${h.failsafe.ipv6}/64 dev eth1 nodad`, 'link set eth1 up'] : []),
    ])));
    // Until linkwatch reports a new veth up (up to a second later) IPv6 has no ff00::/8 route
    // on it and drops every multicast packet, unsolicited neighbour advertisements included.
    await Promise.all(hosts.map(async (h) => {
      const deadline = Date.now() + 5000;
      while (!(await run('ip', ['-n', h.ns, '-6', 'route', 'show', 'table', 'local', 'ff00::/8', 'dev', 'eth0'])).stdout.trim()) {
        if (Date.now() > deadline) throw new Error(`no IPv6 multicast route on ${h.ns} after 5 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }));
  }
}

async function killNamespaceProcesses(ns: string): Promise<void> {
  try {
    const { stdout } = await run('ip', ['netns', 'pids', ns]);
    const pids = stdout.split(/\s+/).filter(Boolean).map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  } catch {
    // namespace already gone
  }
}

const LAB_NAME = new RegExp(`^${LAB_PREFIX}([0-9a-f]+)x[0-9a-f]{4}-`);

/** Whether a process exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Namespaces of labs whose creating process is gone (a run that crashed before its teardown). */
export async function staleLabNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((ns) => {
      const m = LAB_NAME.exec(ns);
      return m !== null && !processAlive(parseInt(m[1]!, 16));
    });
}

/** Removes the namespaces of labs whose creator is gone; labs of live processes are left alone. */
export async function sweepStaleLabs(): Promise<string[]> {
  const stale = await staleLabNamespaces();
  for (const ns of stale) {
    await killNamespaceProcesses(ns);
    await runQuiet('ip', ['netns', 'del', ns]);
  }
  return stale;
}

/** The kernel's TCP timer sysctls in a namespace, for computing what TCP alone would do. */
export async function tcpTimerSysctls(lab: Lab, host: string) {
  const read = async (key: string) => Number((await lab.exec(host, 'sysctl', ['-n', key])).stdout.trim());
  return {
    retries2: await read('net.ipv4.tcp_retries2'),
    keepaliveTime: await read('net.ipv4.tcp_keepalive_time'),
    keepaliveIntvl: await read('net.ipv4.tcp_keepalive_intvl'),
    keepaliveProbes: await read('net.ipv4.tcp_keepalive_probes'),
  };
}

/** The switch's nft table for dropLink(host, link). */
function dropTable(host: string, link: 'main' | 'failsafe'): string {
  return `takeover_lab_drop_${host}_${link}`;
}

/** The switch's nft table for a cut between two hosts (the same whichever is named first). */
function cutTable(x: string, y: string): string {
  return `takeover_lab_cut_${[x, y].sort().join('_')}`;
}
