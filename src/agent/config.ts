// The agent's configuration file (`takeover agent --config FILE`), YAML or JSON. Every agent of a
// cluster reads the same description of where things run (instances, services, nodes) plus the
// part that is its own (node, links). Validation names the field that is wrong, with its path
// (`instances[1].health.timeoutMs: ...`), and nothing starts until the whole file is valid.
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { parseCloseMethod } from '../net/close-method.js';
import { canonicalAddress } from '../net/endpoint.js';
import { DEFAULT_HOLD_QUEUE } from '../net/held-traffic.js';
import { DEFAULT_MARGIN_MS } from '../net/shadow/replay-match.js';
import { checkConfig } from './config-checks.js';
import { appSpecSchema } from '../cluster/app-object.js';
import { DEFAULT_REPLICATION_RATE, DEFAULT_SCAN_MS } from './replication/defaults.js';
import { DEFAULT_AGENT_NICE } from '../monitor/cpu-priority.js';
import { argv, firstIssue, ifname, ip, ms, name, port } from '../schema-fields.js';

const absolutePath = z.string().regex(/^\//, 'must be an absolute path');

/** pino's levels, most verbose first; `silent` logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const method = z.string().refine((s) => {
  try {
    parseCloseMethod(s);
    return true;
  } catch {
    return false;
  }
}, 'must be rst, fin, break or goodbye:NAME (see `takeover close-peers --help`)');

const link = z.strictObject({ id: z.number().int().min(0).max(255), address: ip, port });

const takeover = z.strictObject({
  /**
   * The service address the peer held, taken over here when the peer dies. A link-local one
   * (fe80::) works on its `interface`; a zone suffix (%eth1) would only say that again, or
   * contradict it, and is refused.
   */
  address: ip.refine((s) => !s.includes('%'), 'must not carry a zone (%IF): the interface field names the link'),
  port,
  /** Where the address is taken over, the forged segments leave and the peers' answers arrive. */
  interface: ifname,
  /**
   * Where this node captures the peer's service traffic before the takeover: a port mirror of
   * the peer's port (a SPAN copy on an interface of its own). Those connections are merged with
   * the peer's replicated copy at the takeover (the newest state winning; for a goodbye, their
   * streams followed there). Default: `interface`, which on a switch shows none of the peer's
   * traffic (the replicated copy alone serves).
   */
  capture: ifname.optional(),
  /** Applied as written: 1-32 for IPv4, 64-128 for IPv6 (config-checks.ts). */
  prefixLength: z.number().int().min(0).max(128),
  method: method.default('rst'),
  /**
   * Continue the peer's client connections here instead of closing them (issue 12, seed 003;
   * docs/CONTINUE.md), from what a port mirror shows this node of the peer's traffic, or from the
   * peer agent's own stream of it (exactly one of `mirror` and `stream`). Only the connections
   * that cannot be continued get `method`'s close.
   */
  continue: z
    .strictObject({
      /** How requests and replies are paired: Redis (RESP), PostgreSQL (protocol 3.0) or HTTP/1.1. */
      protocol: z.enum(['resp', 'postgres', 'http']),
      /**
       * postgres: a file holding the password the continued sessions log in to `upstream` with
       * (its bytes without one final line ending); absent: the upstream must trust the login.
       */
      passwordFile: absolutePath.optional(),
      /** The interface the switch's mirror of the peer's port arrives on. */
      mirror: ifname.optional(),
      /** The peer agent's `connectionStream` listener (its address and TCP port): no mirror needed. */
      stream: z.strictObject({ host: ip, port }).optional(),
      /** The service on this node the continued connections are relayed to (the promoted replica). */
      upstream: z.strictObject({ host: ip.default('127.0.0.1'), port }),
      /**
       * How the upstream is promoted, after the fence, while the connections are restored (only
       * their replays wait for it): a command (argv, no shell) that must exit 0 (e.g. redis-cli
       * REPLICAOF NO ONE), or `{ resp: [words] }`, one RESP command the agent sends `upstream`
       * itself, answered with a simple or bulk string (protocol resp, a server without
       * requirepass): no process to start, whose fork would hold the agent's loop ~20 ms.
       */
      promote: z.union([argv, z.strictObject({ resp: z.array(z.string().min(1).max(256)).min(1).max(16) })]).optional(),
      /** How long promote may take, ms (default 5000). */
      promoteTimeoutMs: ms(100, 120_000).default(5000),
      /**
       * protocol resp: before a continued connection's unanswered writes are replayed, look them
       * up in the replication stream the promoted replica applied (seed 003's log locations): a
       * write the dead primary ran is not run again (its connection is reset instead: its reply
       * is lost). The agent probes the primary's stream every probeIntervalMs (a PUBLISH on
       * channel takeover:probe and INFO replication); `primary`: its Redis (default: the
       * takeover's service address and port, which the mirror copies or the primary's stream
       * carries: the capture then times each probe itself). With a stream only probes the
       * primary's capture timed count: its times are the primary's clock. See docs/CONTINUE.md.
       */
      matchWrites: z.strictObject({ primary: z.strictObject({ host: ip, port }).optional(), probeIntervalMs: ms(10, 1000).default(50), marginMs: z.number().min(0).max(10).default(DEFAULT_MARGIN_MS) }).optional(),
      /**
       * protocol postgres, with a mirror: before a continued session's unanswered request is
       * replayed, make sure the dead primary cannot have committed it in WAL the promoted standby
       * holds: this host captures its standby's replication connection to `primary` (its
       * address and port as primary_conninfo names them) on `interface` (default any), and a
       * request that arrived after the last WAL did is replayed as it was; any other is
       * unproven (see `unproven`). See docs/CONTINUE.md.
       */
      walCheck: z.strictObject({ primary: z.strictObject({ host: ip, port: port.default(5432) }), interface: ifname.default('any') }).optional(),
      /**
       * protocol postgres: what becomes of a session's unanswered request that the dead primary
       * may have committed (with walCheck: WAL arrived after it; without: every one).
       * `read-only` (the default): replayed with default_transaction_read_only on, a read
       * answered, a write refused by the promoted standby and its session reset. `reset`: reset,
       * and no transaction is rebuilt (for a service whose functions catch errors around their
       * writes, EXCEPTION WHEN OTHERS: such a function answers read-only without having
       * written). `as-sent`: replayed as it was, on a guess (it may be applied twice; not with
       * walCheck).
       */
      unproven: z.enum(['read-only', 'reset', 'as-sent']).optional(),
      /**
       * protocol postgres: what a planned switchover (`takeover switchover`) needs to check that
       * the standby (`upstream`) replayed every commit of the locked primary: the primary at its
       * own address (not the service address, which the lock closes), and a login both servers
       * accept (`user`, `database`, default the user's name; the password from passwordFile, or
       * none: trust). The positions need no privilege. See docs/AGENT.md.
       */
      switchover: z
        .strictObject({ primary: z.strictObject({ host: ip, port: port.default(5432) }), user: z.string().min(1).max(63), database: z.string().min(1).max(63).optional() })
        .optional(),
    })
    .refine((c) => (c.mirror === undefined) !== (c.stream === undefined), { message: 'needs exactly one source: mirror (an interface) or stream ({ host, port } of the peer agent\'s connectionStream)' })
    .refine((c) => Array.isArray(c.promote) || c.promote === undefined || c.protocol === 'resp', { message: 'promote { resp } sends a Redis command: for protocol resp only (give a command otherwise)', path: ['promote'] })
    .refine((c) => c.matchWrites === undefined || c.protocol === 'resp', { message: 'matchWrites is for protocol resp (it reads the writes back from Redis\'s replication stream)', path: ['matchWrites'] })
    .refine((c) => c.walCheck === undefined || c.protocol === 'postgres', { message: 'walCheck is for protocol postgres (it reads the WAL a PostgreSQL standby receives)', path: ['walCheck'] })
    .refine((c) => c.unproven === undefined || c.protocol === 'postgres', { message: 'unproven is for protocol postgres (a read-only replay is PostgreSQL\'s default_transaction_read_only)', path: ['unproven'] })
    .refine((c) => c.unproven !== 'as-sent' || c.walCheck === undefined, { message: 'unproven: as-sent replays what walCheck could not rule out as it was: drop one of them', path: ['unproven'] })
    .refine((c) => c.walCheck === undefined || c.mirror !== undefined, { message: 'walCheck needs a mirror, not a stream (it orders the mirror\'s requests against the WAL this host receives, on this host\'s clock; a stream\'s times are the primary\'s)', path: ['walCheck'] })
    .refine((c) => c.switchover === undefined || c.protocol === 'postgres', { message: 'switchover is for protocol postgres (a Redis switchover reads the replication offsets from the replica itself)', path: ['switchover'] })
    .refine((c) => c.switchover === undefined || c.stream !== undefined, { message: 'switchover needs a stream, not a mirror (a switchover talks to the peer\'s agent over its connection stream)', path: ['switchover'] })
    .refine((c) => c.passwordFile === undefined || c.protocol === 'postgres', { message: 'passwordFile is for protocol postgres (a Redis login is replayed as the client sent it; HTTP/1.1 has no session)', path: ['passwordFile'] })
    .optional(),
});

/** One service, or a list of them (several ports, one method each), normalised to a list. */
const takeovers = z
  .union([takeover, z.array(takeover).min(1).max(16)])
  .optional()
  .transform((t) => (t === undefined ? [] : Array.isArray(t) ? t : [t]));

const peer = z.strictObject({ node: name, links: z.array(link).min(1), takeover: takeovers });

/** One of this node's own service addresses under the address lease (prefix checked in config-checks.ts). */
const leasedAddress = z.strictObject({
  address: ip.refine((s) => !s.includes('%'), 'must not carry a zone (%IF): the interface field names the link'),
  interface: ifname,
  prefixLength: z.number().int().min(0).max(128),
});

/** The lease's default length, s: the failover of this node's addresses waits about this long more. */
export const DEFAULT_LEASE_SECONDS = 10;

/** The store's node lease by default, ms: on the file store. */
export const FILE_LEASE_MS = 2000;
/**
 * On etcd: renewals need a leader, and a leader's death leaves none for up to about twice
 * etcd's --election-timeout (1 s by default), after a renewal interval (a third of the lease).
 * Measured with a 3-member etcd at its defaults, the leader SIGKILLed: a 2 s lease was lost
 * every time (6 of 6), 3 s once in 5, 4 s never (0 of 5); 5 s leaves a margin.
 */
export const ETCD_LEASE_MS = 5000;

const probe = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('tcp'), host: ip, port }),
  z.strictObject({ kind: z.literal('postgres'), connectionString: z.string().min(1) }),
  z.strictObject({ kind: z.literal('exec'), command: argv }),
]);

const health = z.strictObject({
  probe,
  intervalMs: ms(10, 3_600_000).default(1000),
  timeoutMs: ms(10, 3_600_000).default(1000),
  misses: z.number().int().min(1).max(100).default(3),
});

const instance = z.strictObject({
  name,
  node: name,
  role: z.enum(['primary', 'secondary', 'offline']).optional(),
  /** How this node's agent finds the process: a pid, a pid file (first line), or a command it runs. */
  pid: z.number().int().min(1).optional(),
  pidFile: z.string().min(1).optional(),
  command: argv.optional(),
  restart: z
    .strictObject({ maxFailures: z.number().int().min(0).max(1000), windowMs: ms(1, 86_400_000), backoffMs: ms(0, 3_600_000) })
    .optional(),
  health: health.optional(),
  /**
   * A planned stop (`service stop`) waits up to this long for the clients' connections on `ports`
   * to end before it stops the instance (0: no wait).
   */
  drainMs: ms(0, 86_400_000).default(30_000),
  /** Stopping an instance the agent runs: SIGTERM, then SIGKILL after this long (command only). */
  stopGraceMs: ms(0, 3_600_000).optional(),
  /**
   * Local ports whose connections the failure plan closes (the service's listening ports);
   * default [] and method 'rst', filled in after the checks (which must see what was given).
   */
  ports: z.array(port).optional(),
  method: method.optional(),
});

const service = z.strictObject({ name, members: z.array(name).min(1) });

export const configSchema = z
  .strictObject({
    cluster: name,
    node: name,
    database: name,
    /** The shared HMAC key for heartbeats (or keyFile). */
    key: z.string().min(16, 'must be at least 16 characters').optional(),
    keyFile: z.string().min(1).optional(),
    /**
     * A floor for this agent's incarnation. The incarnation itself is persisted in
     * `incarnationFile` and grows at every start (max of the start time in ms, the last + 1, this).
     */
    incarnation: z.number().int().min(0).optional(),
    /**
     * Where the last incarnation is kept: it must survive reboots (a clock that is wrong after a
     * boot is the case it exists for). Default /var/lib/takeover/CLUSTER.NODE.incarnation.
     */
    incarnationFile: z.string().min(1).optional(),
    /**
     * Split-brain protection (see QuorumGate): a peer's death is acted upon only with a majority,
     * or with two nodes when fencing or a disk witness breaks the tie, or `twoNode: true` (the
     * operator accepts that a partition makes both nodes act: corosync's two_node).
     */
    quorum: z.strictObject({ twoNode: z.boolean().default(false) }).default({ twoNode: false }),
    heartbeat: z.strictObject({
      intervalMs: ms(10, 60_000).default(100),
      misses: z.number().int().min(1).max(100).default(3),
      links: z.array(link).min(1),
    }),
    peers: z.array(peer).default([]),
    notify: z.strictObject({
      host: ip.default('0.0.0.0'),
      /** 0: any free port (status shows which). */
      port: z.number().int().min(0).max(65535),
      maxBufferedBytes: z.number().int().min(1024).optional(),
    }),
    control: z.string().min(1).optional(),
    /**
     * Where the agent keeps its runtime state: the record (pid, start time) and stderr of each
     * instance it runs, so that a restarted agent adopts what still runs, and the service
     * addresses it took over. Default: the control socket's directory / NODE (/run/takeover/NODE).
     */
    stateDir: z.string().min(1).optional(),
    instances: z.array(instance).default([]),
    services: z.array(service).default([]),
    callouts: z
      .strictObject({
        dir: z.string().min(1),
        timeoutMs: ms(1, 3_600_000).default(5000),
        maxParallel: z.number().int().min(1).max(256).default(8),
      })
      .optional(),
    uptimeLog: z.string().min(1).optional(),
    /**
     * SCSI-3 persistent-reservation fencing on the shared devices: a dead peer is fenced before
     * it is taken over; this node stops its instances when it finds itself fenced.
     */
    fencing: z
      .strictObject({
        devices: z.array(z.string().min(1)).min(1),
        /** PREEMPT AND ABORT (true) or plain PREEMPT (false). */
        abort: z.boolean().default(true),
        /** How often this node checks that its own key is still registered. */
        checkMs: ms(10, 60_000).default(1000),
      })
      .optional(),
    /**
     * Connection replication: this node's connections streamed to the peers that take its
     * service over, and theirs to this node (on the heartbeat links, with their key).
     */
    replication: z
      .strictObject({
        /** Per subscribing peer: the cap on replication bytes per second. */
        maxBytesPerSecond: z.number().int().min(16 * 1024).max(1 << 30).default(DEFAULT_REPLICATION_RATE),
        /** How often the authoritative list (sock_diag) is read, ms. */
        scanMs: ms(100, 600_000).default(DEFAULT_SCAN_MS),
      })
      .default({ maxBytesPerSecond: DEFAULT_REPLICATION_RATE, scanMs: DEFAULT_SCAN_MS }),
    /**
     * Serve this node's own client connections, segment by segment with their payload, to the
     * peers whose takeover continues them from a `stream` (docs/CONTINUE.md): a TCP listener on
     * this address and port, the peers authenticated with the cluster key.
     */
    connectionStream: z
      .strictObject({
        address: ip,
        port,
        /**
         * Output commit (docs/CONTINUE.md): these services' traffic passes through netfilter
         * queues (iptables NFQUEUE rules the agent installs, `queue` and `queue + 1`), and what
         * they send waits until every peer that follows the stream has its copy: a busy
         * connection is then continued, not reset. Replies wait about one round trip to the
         * backup; a backup that leaves one waiting maxHoldMs is cut (and nothing waits for it).
         */
        outputCommit: z
          .strictObject({
            services: z.array(z.strictObject({ address: ip, port })).min(1).max(16),
            queue: z.number().int().min(0).max(65534).default(DEFAULT_HOLD_QUEUE),
            maxHoldMs: ms(1, 60_000).default(500),
          })
          .optional(),
      })
      .optional(),
    /** Seed 002's SCSI heartbeat on a disk shared with a peer. */
    disk: z
      .strictObject({
        device: z.string().min(1),
        intervalMs: ms(10, 60_000).default(100),
        timeoutMs: ms(30, 600_000).default(400),
        /** This node pulses (RESERVE/RELEASE alternation): the primary. */
        pulse: z.boolean().default(false),
        /** This node watches that peer's pulse; the peer is dead only when the disk agrees. */
        watch: name.optional(),
      })
      .optional(),
    /**
     * The address lease (agent/address-lease.ts): this node's own service addresses get a finite
     * kernel lifetime that the agent renews while it runs, so that an agent that dies (its node
     * and service alive) loses them within `seconds`, and a peer that takes them over never
     * answers for them at the same time. The peers learn the lease from the heartbeats; their
     * takeover waits it out. Off unless given.
     */
    addressLease: z
      .strictObject({
        seconds: z.number().int().min(2).max(3600).default(DEFAULT_LEASE_SECONDS),
        addresses: z.array(leasedAddress).min(1).max(8),
      })
      .optional(),
    /**
     * Continued connections (a `continue` takeover, a switchover) are relayed, once the agent no
     * longer looks at their bytes, by `takeover relay-keeper`, a process apart, so that they
     * outlive the agent's restart, crash or stop. `socket`: where it listens (default
     * stateDir/relay-keeper.sock); `start` (true): the agent starts one there when none answers
     * (false: a keeper run as its own service; when none answers, the agent relays them itself
     * and warns). Off unless given: the agent relays them itself, and its stop resets them.
     */
    relayKeeper: z.strictObject({ socket: z.string().min(1).optional(), start: z.boolean().default(true) }).optional(),
    /** Prometheus metrics on HTTP (`GET /metrics`); off unless given. */
    metrics: z
      .strictObject({
        /** Loopback by default: give the management address (or 0.0.0.0) for a remote Prometheus. */
        host: ip.default('127.0.0.1'),
        /** 0: any free port (status and the start log line show which). */
        port: z.number().int().min(0).max(65535),
      })
      .optional(),
    /** The agent's log (JSON lines on stdout); `takeover agent --log-level` overrides the level. */
    log: z.strictObject({ level: z.enum(LOG_LEVELS).default('info') }).default({ level: 'info' }),
    /**
     * The nice value (-20..19) of every thread of the agent, set at start (monitor/cpu-priority.ts):
     * below the work around it, so that a busy node's agent still sends its heartbeats on time.
     * Lowering it needs CAP_SYS_NICE. Instances and callouts run at the nice the agent was started
     * with, not this one.
     */
    nice: z.number().int().min(-20).max(19).default(DEFAULT_AGENT_NICE),
    /**
     * The cluster manager's store of clustered applications (seed 002): with it, this agent
     * hosts, fails over and fails back the applications whose PRIMARY or BACKUP it is. `file`:
     * the embedded store, one file every agent of one machine reaches. `leaseMs`: this node's
     * liveness in the store; a HOST silent on the LAN is failed over only once its lease ran out.
     */
    store: z
      .strictObject({
        file: absolutePath.optional(),
        /**
         * etcd (v3 API) for a cluster of machines: the members' client URLs, all of them; each
         * call (a read, a compare-and-swap) fails after `callTimeoutMs` when no quorum answers.
         * `tls`: the members serve their clients over TLS (https:// endpoints), `ca` signed their
         * certificates; `cert` and `key`: this node's client certificate (mutual TLS). `auth`:
         * etcd's RBAC user, its password in a file (never in this file).
         */
        etcd: z
          .strictObject({
            endpoints: z.array(z.string().regex(/^https?:\/\/[^/\s]+:\d{1,5}$/, 'must be http://ADDRESS:PORT, or https://ADDRESS:PORT with tls')).min(1).max(16),
            callTimeoutMs: ms(100, 60_000).default(2000),
            tls: z
              .strictObject({
                /** PEM: the CA that signed the members' certificates, the only one trusted. */
                ca: absolutePath,
                /** PEM: this node's client certificate (etcd's --client-cert-auth), with its key. */
                cert: absolutePath.optional(),
                /** PEM, unencrypted: the key of `cert`. */
                key: absolutePath.optional(),
              })
              .optional(),
            auth: z
              .strictObject({
                user: z.string().regex(/^[^\s:]{1,128}$/, 'must be an etcd user name: 1-128 characters, no spaces or colons'),
                // (Before passwordFile: a password given inline is the mistake to name, not the missing file.)
                password: z.never({ error: 'a password is never written in the configuration: put it in a file only root reads (chmod 600) and give passwordFile' }).optional(),
                /** The password's bytes, without one final line ending (as keyFile), UTF-8. */
                passwordFile: absolutePath,
              })
              .optional(),
          })
          .superRefine((e, ctx) => {
            const issue = (path: Array<string | number>, message: string) => ctx.addIssue({ code: 'custom', path, message });
            if (e.tls && (e.tls.cert === undefined) !== (e.tls.key === undefined)) issue(['tls', e.tls.cert === undefined ? 'cert' : 'key'], 'give cert and key together (mutual TLS), or neither');
            const https = e.endpoints.filter((x) => x.startsWith('https://'));
            if (e.tls) e.endpoints.forEach((x, i) => x.startsWith('http://') && issue(['endpoints', i], `${x} is http://, but tls is given: the members serve TLS at https:// URLs`));
            else if (https.length > 0) issue(['tls'], `missing: the endpoints are https:// (${https[0]}), which needs tls: { ca: the CA that signed the members' certificates } (and cert, key when they require client certificates)`);
          })
          .optional(),
        /**
         * Default 2000 on the file store, 5000 on etcd (ETCD_LEASE_MS: renewals need a leader, so
         * the lease must outlast an election). In etcd, rounded up to whole seconds (etcd's
         * lease TTLs are seconds).
         */
        leaseMs: ms(300, 60_000).optional(),
      })
      .refine((s) => (s.file === undefined) !== (s.etcd === undefined), 'must name one store: file or etcd')
      .transform((s) => ({ ...s, leaseMs: s.leaseMs ?? (s.etcd ? ETCD_LEASE_MS : FILE_LEASE_MS) }))
      .optional(),
    /** Clustered applications registered at start when the store lacks them (`takeover app register` does it by hand). */
    apps: z.array(appSpecSchema).default([]),
  })
  .superRefine((c, ctx) => {
    const issue = (path: Array<string | number>, message: string) => ctx.addIssue({ code: 'custom', path, message });
    if ((c.key === undefined) === (c.keyFile === undefined)) issue(['key'], 'give exactly one of key and keyFile');
    const nodes = new Set([c.node]);
    c.peers.forEach((p, i) => {
      if (nodes.has(p.node)) issue(['peers', i, 'node'], `node ${p.node} appears twice`);
      nodes.add(p.node);
      const ids = new Set(p.links.map((l) => l.id));
      for (const l of c.heartbeat.links) if (!ids.has(l.id)) issue(['peers', i, 'links'], `has no link ${l.id} (every link of heartbeat.links must be given)`);
      // (Refinements run on what parsed; a takeover that did not is already an issue.)
      if (!Array.isArray(p.takeover)) return;
      p.takeover.forEach((t, j) => {
        const where = p.takeover.length > 1 ? ['peers', i, 'takeover', j] : ['peers', i, 'takeover'];
        const first = p.takeover.findIndex((o) => canonicalAddress(o.address) === canonicalAddress(t.address));
        if (p.takeover.findIndex((o) => canonicalAddress(o.address) === canonicalAddress(t.address) && o.port === t.port) !== j) issue(where, `${t.address} port ${t.port} appears twice`);
        else if (first !== j && (p.takeover[first]!.interface !== t.interface || p.takeover[first]!.prefixLength !== t.prefixLength)) {
          issue(where, `${t.address} is taken over on ${p.takeover[first]!.interface}/${p.takeover[first]!.prefixLength} by an earlier entry: one address, one interface and prefix length`);
        }
        const sw = t.continue?.switchover;
        if (sw && canonicalAddress(sw.primary.host) === canonicalAddress(t.address)) {
          issue([...where, 'continue', 'switchover', 'primary', 'host'], `is the service address ${t.address}, which a switchover's lock closes: give the primary's own address`);
        }
      });
    });
    const instances = new Set<string>();
    c.instances.forEach((inst, i) => {
      if (instances.has(inst.name)) issue(['instances', i, 'name'], `instance ${inst.name} appears twice`);
      instances.add(inst.name);
      if (!nodes.has(inst.node)) issue(['instances', i, 'node'], `unknown node ${inst.node} (not this node nor a peer)`);
      const how = [inst.pid, inst.pidFile, inst.command].filter((x) => x !== undefined).length;
      if (inst.node === c.node && how !== 1) issue(['instances', i], 'an instance on this node needs exactly one of pid, pidFile, command');
      if (inst.node === c.node && inst.restart && !inst.command) issue(['instances', i, 'restart'], 'only an instance started by command can be restarted');
      if (inst.stopGraceMs !== undefined && !inst.command) issue(['instances', i, 'stopGraceMs'], 'only an instance started by command is stopped by the agent');
    });
    if (c.disk) {
      if (!c.disk.pulse && c.disk.watch === undefined) issue(['disk'], 'give pulse: true, watch: PEER, or both');
      if (c.disk.watch !== undefined && !c.peers.some((p) => p.node === c.disk!.watch)) issue(['disk', 'watch'], `unknown peer ${c.disk.watch}`);
      if (c.disk.timeoutMs < 3 * c.disk.intervalMs) issue(['disk', 'timeoutMs'], 'must be at least 3 × intervalMs');
    }
    c.fencing?.devices.forEach((d, i) => {
      if (c.fencing!.devices.indexOf(d) !== i) issue(['fencing', 'devices', i], `${d} appears twice`);
      // SPC-2 RESERVE conflicts with persistent reservations: one LUN cannot do both jobs.
      if (d === c.disk?.device) issue(['fencing', 'devices', i], `${d} is the disk heartbeat's device: its RESERVE/RELEASE pulse conflicts with persistent reservations, use another LUN`);
    });
    // Both are TCP listeners of this agent: one port on overlapping addresses cannot serve both.
    if (c.metrics && c.metrics.port !== 0 && c.metrics.port === c.notify.port && addressesOverlap(c.metrics.host, c.notify.host)) {
      issue(['metrics', 'port'], `${c.metrics.port} is notify.port too: give the metrics another port`);
    }
    const services = new Set<string>();
    c.services.forEach((s, i) => {
      if (services.has(s.name)) issue(['services', i, 'name'], `service ${s.name} appears twice`);
      services.add(s.name);
      s.members.forEach((m, j) => {
        if (!instances.has(m)) issue(['services', i, 'members', j], `unknown instance ${m}`);
      });
    });
  })
  // Across fields (config-checks.ts): only on a config whose every field parsed.
  .superRefine((c, ctx) => checkConfig(c, (path, message) => ctx.addIssue({ code: 'custom', path, message })), { when: (payload) => payload.issues.length === 0 })
  .transform((c) => ({ ...c, instances: c.instances.map((i) => ({ ...i, ports: i.ports ?? [], method: i.method ?? 'rst' })) }));

/** Two listening addresses that contend for one port: the same, `::` (dual-stack) and any, or 0.0.0.0 and an IPv4 one. */
function addressesOverlap(a: string, b: string): boolean {
  const [x, y] = [canonicalAddress(a), canonicalAddress(b)];
  const covers = (w: string, o: string) => w === '::' || (w === '0.0.0.0' && net.isIPv4(o));
  return x === y || covers(x, y) || covers(y, x);
}

export type AgentConfig = z.output<typeof configSchema>;
export type TakeoverConfig = AgentConfig['peers'][number]['takeover'][number];
export type InstanceConfig = AgentConfig['instances'][number];
export type HealthConfig = NonNullable<InstanceConfig['health']>;

/** SIGTERM to SIGKILL when the agent stops an instance it runs, unless `stopGraceMs` says. */
export const DEFAULT_STOP_GRACE_MS = 5000;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly file: string,
    readonly field: string,
    message: string,
  ) {
    super(`${file}: ${field ? `${field}: ` : ''}${message}`);
  }
}

/** Validates a parsed document; throws ConfigError naming the first bad field. */
export function validateConfig(doc: unknown, file = 'config'): AgentConfig {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new ConfigError(file, '', 'must be a mapping (YAML) or an object (JSON)');
  const r = configSchema.safeParse(doc);
  if (r.success) return r.data;
  const first = firstIssue(r.error);
  throw new ConfigError(file, first.field || '(top level)', first.message);
}

/** Reads YAML or JSON (JSON is YAML); throws ConfigError with the line for syntax errors. */
export function parseConfig(text: string, file = 'config'): AgentConfig {
  // Warnings (an unknown tag such as `!foo`) are mistakes too, not messages on stderr.
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, logLevel: 'silent' });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) {
    const line = problem.linePos ? `line ${problem.linePos[0].line}` : '';
    throw new ConfigError(file, line, `not valid YAML/JSON: ${problem.message.split('\n')[0]}`);
  }
  return validateConfig(doc.toJS({ maxAliasCount: 100 }), file);
}

export async function loadConfig(file: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, '', `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseConfig(text, file);
}

/**
 * The heartbeat key's bytes. One rule for both forms: `key` is its UTF-8 bytes; `keyFile` is the
 * file's bytes without one final line ending (`\n` or `\r\n`), so `echo KEY > file` and `key: KEY`
 * give the same key, as a shell's `$(cat file)` would. Other bytes, whitespace included, count.
 */
export async function configKey(c: AgentConfig): Promise<Buffer> {
  if (c.key !== undefined) return Buffer.from(c.key);
  const raw = await readFile(c.keyFile!).catch((err: NodeJS.ErrnoException) => {
    throw new ConfigError('config', 'keyFile', `cannot read ${c.keyFile}: ${err.code ?? err.message}`);
  });
  const end = raw.length - (raw.at(-1) === 0x0a ? (raw.at(-2) === 0x0d ? 2 : 1) : 0);
  const bytes = raw.subarray(0, end);
  if (bytes.length < 16) throw new ConfigError('config', 'keyFile', `the key must be at least 16 bytes (${bytes.length} after the final line ending)`);
  return bytes;
}

/**
 * What a valid configuration still cannot do safely, for `agent --check` (warnings: the agent
 * runs). Two nodes have no majority: without fencing or a disk witness, and without the
 * operator's `quorum.twoNode`, a silent peer is never taken over; with `twoNode` and neither
 * fencing nor a witness, a partition makes both nodes act (split brain), all the likelier on a
 * single heartbeat link, which one cut silences.
 */
export function configWarnings(c: AgentConfig): string[] {
  return [...quorumWarnings(c), ...continueWarnings(c)];
}

function quorumWarnings(c: AgentConfig): string[] {
  const nodes = 1 + c.peers.length;
  const tieBreaker = c.fencing !== undefined || c.disk?.watch !== undefined;
  if (nodes !== 2 || tieBreaker) return [];
  if (!c.quorum.twoNode) {
    return ['two nodes without fencing or a disk witness (disk.watch): a silent peer is never taken over, since either node may be the one cut off; configure fencing or disk, or set quorum.twoNode: true to act alone and accept split brain on a partition'];
  }
  const one = c.heartbeat.links.length < 2 ? ' One heartbeat link: a single cut is such a partition; add a failsafe link.' : '';
  return [`quorum.twoNode without fencing or a disk witness: a partition makes both nodes publish each other's death and take each other's addresses (split brain).${one}`];
}

/** A `continue` that validates but leaves a known hole: its replays would fail or could run twice. */
function continueWarnings(c: AgentConfig): string[] {
  const out: string[] = [];
  c.peers.forEach((p, i) =>
    p.takeover.forEach((t, j) => {
      const k = t.continue;
      if (k?.protocol !== 'postgres') return;
      const at = `peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.continue`;
      if (k.promote === undefined) out.push(`${at}: no promote: a standby upstream stays read-only at a takeover, and every replayed write fails there`);
      if (k.unproven === 'as-sent') out.push(`${at}: unproven: as-sent: a session's unanswered request is replayed without knowing whether the dead primary committed it (it may be applied twice); see docs/CONTINUE.md`);
    }),
  );
  return out;
}
