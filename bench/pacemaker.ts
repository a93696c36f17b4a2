// A two-node Pacemaker cluster (corosync 3, knet or udpu, + pacemakerd) on two lab hosts, for the
// failover benchmark's baseline. No systemd: each node is `corosync -f` and `pacemakerd -f`
// started by one launcher script inside the host's network namespace and a mount + UTS namespace
// of its own (`unshare -m -u`). The two nodes share this machine's filesystem, so the launcher
// mounts private state over what the daemons would share: /run (pid files, corosync's lock),
// /dev/shm (libqb's IPC ring buffers and flow-control files), /var/lib/pacemaker (the CIB),
// /var/lib/corosync and /var/log/pacemaker. libqb's IPC sockets (cmap, cpg, cib_rw, crmd, ...)
// are abstract unix sockets, which belong to a network namespace: the nodes' daemons do not see
// each other's. The command-line tools (crm_mon, corosync-quorumtool) enter a node's namespaces
// through nsenter, as its daemons' mount namespace holds the /dev/shm they share with them.
// Every process started here lives in a lab host's network namespace: Lab.crash and
// Lab.destroy kill them all, and with them go the mount namespaces; the caller removes `dir`.
// TKO_COROSYNC_DEBUG=1 turns on corosync's debug log (DIR/pcmk-NODE/corosync.log).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Lab } from '../src/lab/lab.js';
import { nowMs } from '../src/lab/node-child.js';

export interface PacemakerOptions {
  /** corosync's totem token in ms; undefined: corosync's default (3000 ms in corosync 3). */
  tokenMs?: number;
  vip: string;
  /** A Node script (a file) serving on the service address: started by ocf:heartbeat:anything. */
  serviceScript: string;
  /** Started first (until its CIB manager answers), then the other. Which one becomes DC is the
   * controllers' election (after dc-deadtime, 20 s, at a fresh start), not this order. */
  first: 'm' | 'b';
  /** More totem lines. */
  totem?: string[];
}

const NODES = ['m', 'b'] as const;
type Node = (typeof NODES)[number];

const launcher = `#!/bin/sh
# $1: the node's directory (corosync.conf, cib.xml, the private mounts' sources, the logs); $2: the node's name
set -eu
D=$1
mount -t tmpfs -o mode=0755 tko-run /run
mount -t tmpfs -o mode=1777 tko-shm /dev/shm
install -d -o hacluster -g haclient -m 0750 "$D/lib-pacemaker" "$D/lib-pacemaker/cib" "$D/lib-pacemaker/pengine" "$D/lib-pacemaker/blackbox" "$D/lib-pacemaker/cores"
install -o hacluster -g haclient -m 0600 "$D/cib.xml" "$D/lib-pacemaker/cib/cib.xml"
install -d -o hacluster -g haclient -m 0770 "$D/log-pacemaker" "$D/log-pacemaker/bundles"
install -d -m 0755 "$D/lib-corosync"
mount --bind "$D/lib-pacemaker" /var/lib/pacemaker
mount --bind "$D/log-pacemaker" /var/log/pacemaker
mount --bind "$D/lib-corosync" /var/lib/corosync
hostname "$2"
corosync -f -c "$D/corosync.conf" &
i=0
until corosync-cmapctl -g totem.cluster_name >/dev/null 2>&1; do
  i=$((i+1)); [ $i -lt 200 ] || { echo "corosync not answering after 10 s" >&2; exit 1; }
  sleep 0.05
done
echo corosync-up
# The daemons run as hacluster, which cannot reach $D (root's temporary directory): pacemaker
# logs to its default, /var/log/pacemaker/pacemaker.log, i.e. $D/log-pacemaker/pacemaker.log.
export PCMK_logfacility=none PCMK_blackbox=no
exec pacemakerd -f
`;

function corosyncConf(lab: Lab, dir: string, tokenMs: number | undefined, extra: string[] = []): string {
  return [
    'totem {',
    '  version: 2',
    '  cluster_name: tko',
    ...(extra.some((l) => l.startsWith('transport:')) ? [] : ['  transport: knet']),
    '  crypto_cipher: none',
    '  crypto_hash: none',
    ...(tokenMs === undefined ? [] : [`  token: ${tokenMs}`]),
    ...extra.map((l) => `  ${l}`),
    '}',
    'nodelist {',
    ...NODES.map((n, i) => `  node {\n    ring0_addr: ${lab.host(n).ipv4}\n    name: ${n}\n    nodeid: ${i + 1}\n  }`),
    '}',
    'quorum {',
    '  provider: corosync_votequorum',
    '  two_node: 1',
    '}',
    'logging {',
    '  to_stderr: no',
    '  to_syslog: no',
    '  to_logfile: yes',
    `  logfile: ${dir}/corosync.log`,
    '  timestamp: hires',
    ...(process.env.TKO_COROSYNC_DEBUG ? ['  debug: on'] : []),
    '}',
    '',
  ].join('\n');
}

/**
 * The CIB both nodes start from: no fencing (none in this bench on any side), the default
 * no-quorum-policy (stop: with corosync's two_node the survivor keeps quorum), and one group
 * (colocated and ordered): IPaddr2 for the service address, then the service, preferring m.
 */
function cib(lab: Lab, o: PacemakerOptions): string {
  const nv = (id: string, name: string, value: string) => `<nvpair id="${id}" name="${name}" value="${value}"/>`;
  return `<cib validate-with="pacemaker-3.0" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        ${nv('opt-stonith', 'stonith-enabled', 'false')}
        ${nv('opt-cluster-name', 'cluster-name', 'tko')}
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources>
      <group id="svc">
        <primitive id="vip" class="ocf" provider="heartbeat" type="IPaddr2">
          <instance_attributes id="vip-ia">
            ${nv('vip-ip', 'ip', o.vip)}
            ${nv('vip-cidr', 'cidr_netmask', '24')}
            ${nv('vip-nic', 'nic', lab.host('m').ifname)}
          </instance_attributes>
          <operations>
            <op id="vip-monitor" name="monitor" interval="10s" timeout="20s"/>
          </operations>
        </primitive>
        <primitive id="app" class="ocf" provider="heartbeat" type="anything">
          <instance_attributes id="app-ia">
            ${nv('app-bin', 'binfile', process.execPath)}
            ${nv('app-args', 'cmdline_options', o.serviceScript)}
          </instance_attributes>
          <operations>
            <op id="app-monitor" name="monitor" interval="10s" timeout="20s"/>
          </operations>
        </primitive>
      </group>
    </resources>
    <constraints>
      <rsc_location id="svc-prefers-m" rsc="svc" node="m" score="100"/>
    </constraints>
  </configuration>
  <status/>
</cib>
`;
}

/** Runs a command in a node's namespaces (net, mount, UTS) through nsenter, killed after timeoutMs. */
function execIn(pid: number, cmd: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('nsenter', ['-t', String(pid), '-m', '-n', '-u', cmd, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} in pid ${pid}'s namespaces: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

export interface ClusterState {
  online: string[];
  dc: string | undefined;
  /** resource id -> the node it is active on */
  running: Record<string, string>;
}

/** crm_mon's XML, reduced to what the bench waits for. */
export function parseCrmMon(xml: string): ClusterState {
  const online = [...xml.matchAll(/<node name="([^"]+)"[^>]*\bonline="true"/g)].map((m) => m[1]!);
  const dc = /<current_dc[^>]*\bname="([^"]+)"/.exec(xml)?.[1];
  const running: Record<string, string> = {};
  for (const m of xml.matchAll(/<resource id="([^"]+)"[^>]*\brole="Started"[^>]*\bactive="true"[^>]*>\s*<node name="([^"]+)"/g)) running[m[1]!] = m[2]!;
  return { online, dc, running };
}

export class PacemakerCluster {
  private readonly daemons = new Map<Node, ChildProcess>();

  private constructor(
    private readonly lab: Lab,
    private readonly dir: string,
  ) {}

  /**
   * Starts both nodes and resolves once both are online, a DC is elected and the group runs on
   * m; rejects (the caller destroys the lab) if that has not happened within timeoutMs.
   */
  static async start(lab: Lab, dir: string, o: PacemakerOptions, timeoutMs = 60_000): Promise<PacemakerCluster> {
    const c = new PacemakerCluster(lab, dir);
    const script = path.join(dir, 'pcmk-node.sh');
    writeFileSync(script, launcher, { mode: 0o755 });
    const order: Node[] = o.first === 'm' ? ['m', 'b'] : ['b', 'm'];
    for (const n of order) {
      const d = c.nodeDir(n);
      mkdirSync(d, { recursive: true });
      writeFileSync(path.join(d, 'corosync.conf'), corosyncConf(lab, d, o.tokenMs, o.totem));
      writeFileSync(path.join(d, 'cib.xml'), cib(lab, o));
      const log = openSync(path.join(d, 'launcher.log'), 'a');
      try {
        c.daemons.set(n, spawn('ip', ['netns', 'exec', lab.host(n).ns, 'unshare', '-m', '-u', '--propagation', 'private', 'sh', script, d, n], { stdio: ['ignore', log, log] }));
      } finally {
        closeSync(log);
      }
      // Not waiting for a DC here: alone, the first node would elect itself only after
      // dc-deadtime (20 s), and the second would then wait for its join.
      if (n === order[0]) await c.waitUntil(n, () => true, Math.min(timeoutMs, 30_000));
    }
    await c.waitUntil('b', (s) => s.online.includes('m') && s.online.includes('b') && s.running.vip === 'm' && s.running.app === 'm', timeoutMs);
    return c;
  }

  nodeDir(n: Node): string {
    return path.join(this.dir, `pcmk-${n}`);
  }

  pid(n: Node): number {
    const p = this.daemons.get(n)?.pid;
    if (p === undefined) throw new Error(`pacemaker node ${n} not started`);
    return p;
  }

  async state(n: Node): Promise<ClusterState> {
    return parseCrmMon(await execIn(this.pid(n), 'crm_mon', ['-1', '--output-as=xml'], 5000));
  }

  /** Polls node n's view every 200 ms until pred holds; rejects after timeoutMs with the last view and the logs' tails. */
  async waitUntil(n: Node, pred: (s: ClusterState) => boolean, timeoutMs: number): Promise<ClusterState> {
    const deadline = Date.now() + timeoutMs;
    let last: ClusterState | string = 'no answer yet';
    for (;;) {
      const d = this.daemons.get(n);
      if (d && (d.exitCode !== null || d.signalCode !== null)) throw new Error(`pacemaker node ${n} exited (${d.exitCode ?? d.signalCode}): ${this.tail(n)}`);
      try {
        const s = await this.state(n);
        if (pred(s)) return s;
        last = s;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`pacemaker node ${n}: not ready in ${timeoutMs} ms; last view ${JSON.stringify(last)}; ${this.tail(n)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /**
   * Follows node n's membership through `corosync-quorumtool -m` (its status on connect, then
   * again on every change): `ready` once the first status (both nodes) is in, `lost` with the
   * time the status first counts one node. The tracker lives in n's namespaces (the lab kills
   * it at the latest); it is killed once lost is settled or after timeoutMs.
   */
  trackMembership(n: Node, timeoutMs: number): { ready: Promise<void>; lost: Promise<number> } {
    const t = spawn('nsenter', ['-t', String(this.pid(n)), '-m', '-n', '-u', 'stdbuf', '-oL', 'corosync-quorumtool', '-m'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const lines = createInterface({ input: t.stdout });
    let onReady: () => void = () => {};
    let onReadyFail: (e: Error) => void = () => {};
    const ready = new Promise<void>((resolve, reject) => {
      onReady = resolve;
      onReadyFail = reject;
    });
    const lost = new Promise<number>((resolve, reject) => {
      const finish = (f: () => void) => {
        clearTimeout(timer);
        lines.close();
        t.kill('SIGKILL');
        f();
      };
      const timer = setTimeout(() => finish(() => {
        const e = new Error(`node ${n}: its membership did not lose a node in ${timeoutMs} ms`);
        onReadyFail(e);
        reject(e);
      }), timeoutMs);
      lines.on('line', (line) => {
        const m = /^Nodes:\s+(\d+)/.exec(line);
        if (!m) return;
        if (m[1] === '2') onReady();
        else {
          const at = nowMs();
          finish(() => resolve(at));
        }
      });
      t.once('exit', () => finish(() => {
        const e = new Error(`membership tracker on ${n} exited`);
        onReadyFail(e);
        reject(e);
      }));
    });
    ready.catch(() => {});
    lost.catch(() => {});
    return { ready, lost };
  }

  /** How often node n's corosync formed a membership without a peer (lost it) so far. */
  membershipLosses(n: Node): number {
    const f = path.join(this.nodeDir(n), 'corosync.log');
    return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter((l) => l.includes('Members left:')).length : 0;
  }

  tail(n: Node): string {
    const d = this.nodeDir(n);
    const last = (f: string, lines: number) => (existsSync(path.join(d, f)) ? readFileSync(path.join(d, f), 'utf8').split('\n').slice(-lines).join('\n') : '');
    return `launcher.log: ${last('launcher.log', 10)}\ncorosync.log: ${last('corosync.log', 8)}\npacemaker.log: ${last('log-pacemaker/pacemaker.log', 15)}`;
  }

  /** SIGKILLs what is left of both nodes (everything in their namespaces goes with Lab.destroy). */
  stop(): void {
    for (const d of this.daemons.values()) if (d.exitCode === null && d.signalCode === null) d.kill('SIGKILL');
  }
}
