// A real etcd cluster (Debian etcd-server, etcd 3.4) for the cluster store's etcd engine: three
// members by default, on loopback (each on its own pair of ports) or one per lab host (in the
// host's network namespace, on its eth0 address), so a test can cut a link or isolate a member
// while others still reach the cluster. Data directories live under one temporary directory.
//
// Everything it starts is stopped by destroy() (SIGKILL, then the directory is removed), which a
// test calls in afterAll/finally; each member also runs under `setpriv --pdeathsig KILL`, so a
// test worker that dies without its teardown takes its members with it. Every wait is bounded
// and fails naming the member and the tail of its log.
//
// Optionally the members serve their clients over TLS (mutual TLS by default), with certificates
// made by openssl at start in `dataRoot/tls` (peer traffic stays plain http), and with etcd's
// RBAC auth enabled: user root, and one user whose role reaches only the project's key prefix.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Lab } from '../../src/lab/lab.js';
import { exited, run } from '../../src/lab/exec.js';
import { issueCert, makeCa, type TestCa } from './test-certs.js';

export interface EtcdClusterOptions {
  /** Members on 127.0.0.1 (default 3). Ignored when `lab` is given. */
  size?: number;
  /** Place one member in each of these lab hosts (their namespaces, eth0 IPv4, ports 2379/2380). */
  lab?: Lab;
  hosts?: string[];
  /** Raft heartbeat and election timeout (etcd's --heartbeat-interval, --election-timeout). */
  heartbeatMs?: number;
  electionMs?: number;
  /** How long start() waits for a healthy cluster. */
  startTimeoutMs?: number;
  /**
   * Client TLS (https client URLs; peers stay http): a CA, one server certificate for every
   * member (subjectAltNames: the members' addresses, 127.0.0.1, localhost) and a client
   * certificate, made with openssl at start (`cluster.tls`). `clientCerts` (default true): the
   * members require a client certificate signed by that CA (--client-cert-auth: mutual TLS).
   */
  tls?: boolean | { clientCerts?: boolean };
  /**
   * etcd's RBAC auth, enabled once the cluster is healthy: user root (a random password, which
   * the harness's etcdctl uses), and `user` with `password`, whose role (named after the user)
   * may read and write the keys under `prefix` only.
   */
  auth?: { user: string; password: string; prefix: string };
  /** etcd's --auth-token-ttl (s, etcd's default 300): how long a simple token lives unused. */
  authTokenTtlSeconds?: number;
}

/** The PEM files of a TLS cluster (all in `dir`, under the cluster's dataRoot). */
export interface EtcdTlsFiles {
  dir: string;
  /** The CA that signed the members' and the client's certificates (what a client trusts). */
  ca: string;
  /** The CA's own key and certificate, to issue more certificates in a test. */
  authority: TestCa;
  serverCert: string;
  serverKey: string;
  /** A client certificate the members accept (CN takeover-test-client: no etcd user of that name). */
  clientCert: string;
  clientKey: string;
  /** Whether the members require a client certificate. */
  clientCerts: boolean;
}

export interface EtcdMember {
  readonly name: string;
  /** The lab host it runs in; undefined on loopback. */
  readonly host: string | undefined;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly running: boolean;
  readonly pid: number | undefined;
  /** SIGKILL (a crash: no goodbye to its peers); resolves once it has exited. */
  kill(): Promise<void>;
  /** SIGSTOP: a hung member (connections open, nothing answered), until thaw(). */
  freeze(): void;
  /** SIGCONT after freeze(). */
  thaw(): void;
  /** Starts it again on the same data directory; resolves once it answers on its client URL (a leader may still be missing: see waitHealthy). */
  start(): Promise<void>;
  /** The last lines it logged (etcd logs to stderr). */
  logTail(lines?: number): string;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Every member's client URL, for a client (http://ADDRESS:PORT, or https:// with `tls`). */
  readonly endpoints: string[];
  readonly dataRoot: string;
  /** With `tls`: the certificates and keys. */
  readonly tls: EtcdTlsFiles | undefined;
  /** With `auth`: root's password (the harness's etcdctl runs as root). */
  readonly rootPassword: string | undefined;
  member(name: string): EtcdMember;
  /** Waits until every running member (or each of `only`: leave out one a test cut off) has a leader and serves a linearizable read. */
  waitHealthy(timeoutMs?: number, only?: readonly EtcdMember[]): Promise<void>;
  /** The member the running members name as their leader (etcdctl endpoint status), or undefined while they name none or disagree. */
  leader(): Promise<EtcdMember | undefined>;
  /** etcdctl against the running members' endpoints (from a member's namespace when in a lab), with the client certificate and as root when the cluster has them. */
  etcdctl(args: string[], timeoutMs?: number): Promise<string>;
  destroy(): Promise<void>;
}

const LOG_TAIL_BYTES = 16 * 1024;

/** Ports freePorts handed out in this process: never handed out twice (two clusters may start at once). */
const handedOut = new Set<number>();

/**
 * Free TCP ports on 127.0.0.1 (bound and released: another process could take one before etcd,
 * which the start wait would report). A port this process handed out before is skipped: between
 * one cluster's release of its ports and its members' bind, a cluster starting at the same time
 * could otherwise be given the same one.
 */
async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let round = 0; ports.length < n; round++) {
    if (round === 10) throw new Error(`freePorts: no ${n} ports not handed out before in 10 rounds (got ${ports.join(', ')})`);
    const servers = await Promise.all(
      Array.from({ length: n - ports.length }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve(s));
      })),
    );
    for (const s of servers) {
      const port = (s.address() as { port: number }).port;
      if (!handedOut.has(port)) {
        handedOut.add(port);
        ports.push(port);
      }
    }
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
  return ports;
}

async function etcdBinary(): Promise<void> {
  try {
    await run('etcd', ['--version']);
  } catch (err) {
    throw new Error(`etcd is not installed (Debian package etcd-server; \`npm test\` installs it via .ci/setup.sh): ${(err as Error).message}`);
  }
  try {
    await run('etcdctl', ['version']);
  } catch (err) {
    throw new Error(`etcdctl is not installed (Debian package etcd-client; \`npm test\` installs it via .ci/setup.sh): ${(err as Error).message}`);
  }
}

class Member implements EtcdMember {
  private child: ChildProcess | undefined;
  private log = '';

  constructor(
    readonly name: string,
    readonly host: string | undefined,
    private readonly ns: string | undefined,
    readonly clientUrl: string,
    readonly peerUrl: string,
    readonly dataDir: string,
    private readonly args: (fresh: boolean) => string[],
    private readonly probe: (args: string[], timeoutMs: number) => Promise<string>,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.running ? this.child!.pid : undefined;
  }

  logTail(lines = 15): string {
    return this.log.split('\n').filter(Boolean).slice(-lines).join('\n');
  }

  /** Spawns the process (fresh: the first start, with --initial-cluster-state new). */
  spawn(fresh: boolean): void {
    if (this.running) throw new Error(`etcd member ${this.name} is already running (pid ${this.child!.pid})`);
    const cmd = ['setpriv', '--pdeathsig', 'KILL', '--', 'etcd', ...this.args(fresh)];
    // `ip netns exec` and setpriv both exec: the child's pid is etcd's.
    const child = this.ns ? spawn('ip', ['netns', 'exec', this.ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.log += `--- ${fresh ? 'start' : 'restart'} ${new Date().toISOString()}\n`;
    for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (this.log = (this.log + d.toString()).slice(-LOG_TAIL_BYTES)));
    child.on('error', (err) => (this.log += `spawn error: ${err.message}\n`));
    this.child = child;
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        exited(child),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`etcd member ${this.name} (pid ${child.pid}) did not exit within 5 s of SIGKILL`)), 5000))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  freeze(): void {
    if (!this.running) throw new Error(`etcd member ${this.name} is not running`);
    this.child!.kill('SIGSTOP');
  }

  thaw(): void {
    if (this.running) this.child!.kill('SIGCONT');
  }

  async start(timeoutMs = 10_000): Promise<void> {
    this.spawn(false);
    await this.waitServing(timeoutMs);
  }

  /** Until the member answers `endpoint status` (served without a leader), or fails naming why. */
  async waitServing(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      if (!this.running) throw new Error(`etcd member ${this.name} exited (${this.child?.exitCode ?? this.child?.signalCode}) before serving on ${this.clientUrl}; its log:\n${this.logTail()}`);
      try {
        await this.probe(['--endpoints', this.clientUrl, 'endpoint', 'status'], 1000);
        return;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline) throw new Error(`etcd member ${this.name} did not serve on ${this.clientUrl} within ${timeoutMs} ms (last: ${last}); its log:\n${this.logTail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Starts the cluster and waits until it is healthy; on any failure everything started is removed before rethrowing. */
export async function startEtcdCluster(options: EtcdClusterOptions = {}): Promise<EtcdCluster> {
  await etcdBinary();
  const heartbeat = options.heartbeatMs ?? 50;
  const election = options.electionMs ?? 500;
  const lab = options.lab;
  const placement: Array<{ host: string | undefined; ns: string | undefined; address: string; client: number; peer: number }> = [];
  if (lab) {
    const hosts = options.hosts ?? [];
    if (hosts.length === 0 || new Set(hosts).size !== hosts.length) throw new Error(`startEtcdCluster: a lab needs \`hosts\`, one member per host (got ${JSON.stringify(hosts)})`);
    for (const h of hosts) placement.push({ host: h, ns: lab.host(h).ns, address: lab.host(h).ipv4, client: 2379, peer: 2380 });
  } else {
    const size = options.size ?? 3;
    const ports = await freePorts(2 * size);
    for (let i = 0; i < size; i++) placement.push({ host: undefined, ns: undefined, address: '127.0.0.1', client: ports[2 * i]!, peer: ports[2 * i + 1]! });
  }
  const dataRoot = mkdtempSync(path.join(tmpdir(), 'tko-etcd-'));
  const token = path.basename(dataRoot);
  const names = placement.map((_, i) => `m${i + 1}`);
  const initialCluster = placement.map((p, i) => `${names[i]}=http://${p.address}:${p.peer}`).join(',');
  let tls: EtcdTlsFiles | undefined;
  if (options.tls) {
    try {
      tls = await makeTls(path.join(dataRoot, 'tls'), placement.map((p) => p.address), options.tls === true || options.tls.clientCerts !== false);
    } catch (err) {
      rmSync(dataRoot, { recursive: true, force: true });
      throw err;
    }
  }
  const scheme = tls ? 'https' : 'http';
  const tlsArgs = tls ? ['--cacert', tls.ca, ...(tls.clientCerts ? ['--cert', tls.clientCert, '--key', tls.clientKey] : [])] : [];
  // Set once auth is enabled: from then on the harness's etcdctl runs as root.
  let rootPassword: string | undefined;

  // etcdctl from where the members can be reached: this namespace, or the first member's host.
  const etcdctlIn = (ns: string | undefined) => async (args: string[], timeoutMs: number) => {
    const t = `${Math.max(1, Math.ceil(timeoutMs / 1000))}s`;
    const full = ['--dial-timeout', t, '--command-timeout', t, ...tlsArgs, ...(rootPassword ? ['--user', `root:${rootPassword}`] : []), ...args];
    const r = ns ? await run('ip', ['netns', 'exec', ns, 'timeout', '-s', 'KILL', String(Math.ceil(timeoutMs / 1000) + 2), 'etcdctl', ...full]) : await run('timeout', ['-s', 'KILL', String(Math.ceil(timeoutMs / 1000) + 2), 'etcdctl', ...full]);
    return r.stdout;
  };
  const members = placement.map((p, i) => {
    const name = names[i]!;
    const dataDir = path.join(dataRoot, name);
    mkdirSync(dataDir, { mode: 0o700 });
    const clientUrl = `${scheme}://${p.address}:${p.client}`;
    const peerUrl = `http://${p.address}:${p.peer}`;
    const args = (fresh: boolean) => [
      '--name', name, '--data-dir', dataDir,
      '--listen-client-urls', clientUrl, '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-token', token,
      '--initial-cluster-state', fresh ? 'new' : 'existing',
      '--heartbeat-interval', String(heartbeat), '--election-timeout', String(election),
      // Pre-vote: a member that was cut off does not disrupt the leader when it comes back.
      '--pre-vote',
      ...(tls ? ['--cert-file', tls.serverCert, '--key-file', tls.serverKey] : []),
      ...(tls?.clientCerts ? ['--client-cert-auth', '--trusted-ca-file', tls.ca] : []),
      ...(options.authTokenTtlSeconds !== undefined ? ['--auth-token-ttl', String(options.authTokenTtlSeconds)] : []),
      '--logger', 'zap', '--log-outputs', 'stderr', '--log-level', 'info',
    ];
    return new Member(name, p.host, p.ns, clientUrl, peerUrl, dataDir, args, etcdctlIn(p.ns));
  });

  let destroyed = false;
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    dataRoot,
    tls,
    get rootPassword() {
      return rootPassword;
    },
    member(name) {
      const m = members.find((x) => x.name === name);
      if (!m) throw new Error(`etcd cluster has no member ${name} (members: ${names.join(', ')})`);
      return m;
    },
    async etcdctl(args, timeoutMs = 5000) {
      const up = members.filter((m) => m.running);
      const from = lab ? placement[members.indexOf(up[0] ?? members[0]!)]!.ns : undefined;
      return etcdctlIn(from)(['--endpoints', (up.length ? up : members).map((m) => m.clientUrl).join(','), ...args], timeoutMs);
    },
    async leader() {
      // Member ids are 64-bit: read them as strings, not JSON numbers (which would round them).
      const text = await cluster.etcdctl(['endpoint', 'status', '-w', 'json'], 2000);
      const seen = text.split('{"Endpoint":').slice(1).map((part) => ({
        url: /^"([^"]+)"/.exec(part)?.[1],
        id: /"member_id":(\d+)/.exec(part)?.[1],
        leader: /"leader":(\d+)/.exec(part)?.[1],
      }));
      const named = new Set(seen.map((s) => s.leader));
      if (named.size !== 1) return undefined;
      const url = seen.find((s) => s.id === [...named][0])?.url;
      return members.find((m) => m.clientUrl === url);
    },
    async waitHealthy(timeoutMs = 20_000, only) {
      const deadline = Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        const up = members.filter((m) => m.running);
        const gone = members.filter((m) => !m.running);
        try {
          // Exit status 0 only when every listed endpoint has a leader and answers a read.
          const checked = only ?? up;
          const from = lab ? placement[members.indexOf((checked[0] as Member | undefined) ?? members[0]!)]!.ns : undefined;
          await etcdctlIn(from)(['--endpoints', (checked.length ? checked : members).map((m) => m.clientUrl).join(','), 'endpoint', 'health'], 2000);
          return;
        } catch (err) {
          last = (err as Error).message;
        }
        if (Date.now() > deadline) {
          const logs = members.map((m) => `--- ${m.name} (${m.running ? `pid ${m.pid}` : 'not running'}) ${m.clientUrl}:\n${m.logTail(8)}`).join('\n');
          throw new Error(`etcd cluster not healthy within ${timeoutMs} ms (${up.length} of ${members.length} members running${gone.length ? `; down: ${gone.map((m) => m.name).join(', ')}` : ''}); last check: ${last}\n${logs}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      const killed = await Promise.allSettled(members.map((m) => m.kill()));
      rmSync(dataRoot, { recursive: true, force: true });
      const failed = killed.find((k) => k.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
    },
  };
  try {
    for (const m of members) m.spawn(true);
    await cluster.waitHealthy(options.startTimeoutMs ?? 30_000);
    if (options.auth) rootPassword = await enableAuth(cluster, options.auth);
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

/** The CA, the members' server certificate and a client certificate, in `dir`. */
async function makeTls(dir: string, addresses: string[], clientCerts: boolean): Promise<EtcdTlsFiles> {
  mkdirSync(dir, { mode: 0o700 });
  const authority = await makeCa(dir, 'etcd-test-ca');
  // Both usages: etcd 3.4's gateway dials its own client URL with this certificate too.
  const server = await issueCert(authority, 'server', { ips: [...new Set(['127.0.0.1', ...addresses])], dns: ['localhost'], usage: 'both' });
  const client = await issueCert(authority, 'client', { cn: 'takeover-test-client', usage: 'client' });
  return { dir, ca: authority.cert, authority, serverCert: server.cert, serverKey: server.key, clientCert: client.cert, clientKey: client.key, clientCerts };
}

/**
 * Adds root (a random password, returned) and `auth.user` with a role of the same name that may
 * read and write the keys under `auth.prefix`, then enables auth.
 */
async function enableAuth(cluster: EtcdCluster, auth: { user: string; password: string; prefix: string }): Promise<string> {
  const root = randomBytes(12).toString('hex');
  const ctl = (args: string[]) => cluster.etcdctl(args, 5000);
  await ctl(['user', 'add', 'root', '--interactive=false', '--new-user-password', root]);
  await ctl(['user', 'grant-role', 'root', 'root']);
  await ctl(['role', 'add', auth.user]);
  await ctl(['role', 'grant-permission', auth.user, '--prefix=true', 'readwrite', auth.prefix]);
  await ctl(['user', 'add', auth.user, '--interactive=false', '--new-user-password', auth.password]);
  await ctl(['user', 'grant-role', auth.user, auth.user]);
  await ctl(['auth', 'enable']);
  return root;
}
