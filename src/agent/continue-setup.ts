// A takeover's `continue` section (docs/CONTINUE.md) made real: the shadow of the peer's service
// connections from the agent's start (captured from the mirror of its port, or streamed by the
// peer's agent), and the promotion of the local service run at the takeover.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Endpoint } from '../net/endpoint.js';
import type { ContinuePlugin } from '../net/shadow/exchange-tracker.js';
import { PeerShadow, type PeerShadowEvent } from '../net/shadow/peer-shadow.js';
import { httpContinue } from '../net/shadow/http-continue.js';
import { pgContinue } from '../net/shadow/pg-continue.js';
import { respContinue } from '../net/shadow/resp-continue.js';
import { ShadowCapture } from '../net/shadow/shadow-capture.js';
import type { ShadowTableOptions } from '../net/shadow/shadow-table.js';
import type { TakeoverConfig } from './config.js';
import type { PeerTakeoverOptions, Shadow } from './peer-takeover.js';
import { respCommand } from './redis-catch-up.js';
import { redisReplayCheck } from './redis-replay-check.js';
import { ReplicationStreamProbe } from './redis-stream-probe.js';
import { ProbeCaptureTimes } from '../net/shadow/probe-capture-times.js';
import { RequestLog } from '../net/shadow/request-log.js';
import { WalArrivals, type WalWatchEvent } from '../net/shadow/wal-arrivals.js';
import { FlowTracker } from '../net/flow-tracker.js';
import { pgUnprovenReplayCheck, pgWalReplayCheck } from './pg-replay-check.js';

type ContinueConfig = NonNullable<TakeoverConfig['continue']>;

/** This agent, as the peer's stream source knows it: its node name and the cluster key; and where its shadows' events go. */
export interface StreamIdentity {
  node: string;
  key: Buffer;
  /** The stream's ups and downs, for the log. */
  onEvent?: (event: PeerShadowEvent) => void;
  /** `walCheck`'s watch of the replication connection turned unseen or was seen again, for the log. */
  onWalWatch?: (event: WalWatchEvent) => void;
}

/** How often a `walCheck` shadow looks whether its watch turned unseen (ms): a small fraction of WAL_SEEN_WITHIN_MS. */
const WAL_WATCH_CHECK_MS = 1000;

/**
 * The takeover's continue options: how to start a shadow (PeerTakeover starts one at once, and a
 * fresh one after each takeover): the capture on the mirror (throws what the capture throws: no
 * such interface, EPERM), or the dial of the peer's stream (it retries on its own; a copy
 * streamed by the peer may lack its end, so the takeover proves each connection's tail).
 * Throws, naming the file, when passwordFile cannot be read.
 */
export function continueSetup(c: ContinueConfig, service: Endpoint, self: StreamIdentity): NonNullable<PeerTakeoverOptions['continue']> {
  const plugin = pluginOf(c);
  const openShadow = (): Shadow => {
    if (c.matchWrites) return matchedShadow(c, service, plugin, self, c.matchWrites);
    if (c.walCheck) return walCheckedShadow(c, service, plugin, c.walCheck, self.onWalWatch);
    const shadow: Shadow = c.stream ? streamShadow(c.stream, self, { services: [service], plugin }) : new ShadowCapture({ interface: c.mirror!, services: [service], plugin });
    if (c.protocol !== 'postgres' || c.unproven === 'as-sent') return shadow;
    // Nothing tells whether the dead primary committed an unanswered request: `unproven` decides.
    const unproven = c.unproven ?? 'read-only';
    return {
      plans: (address) => shadow.plans(address),
      close: () => shadow.close(),
      stats: () => shadow.stats(),
      ...(shadow.ready ? { ready: shadow.ready } : {}),
      ...(shadow.table ? { table: shadow.table } : {}),
      ...(shadow.clientDataSince ? { clientDataSince: shadow.clientDataSince.bind(shadow) } : {}),
      checkReplays: (promoted) => pgUnprovenReplayCheck(promoted, unproven),
    };
  };
  const p = c.promote;
  // The { resp } form: a simple or bulk string reply (respCommand rejects on anything else, naming the command, the upstream and the reply).
  const promote = p === undefined ? undefined : Array.isArray(p) ? () => runPromote(p, c.promoteTimeoutMs) : () => respCommand(c.upstream, [...p.resp], c.promoteTimeoutMs).then(() => undefined);
  return {
    openShadow,
    ...(c.stream ? { proveTail: true } : {}),
    upstream: c.upstream,
    plugin,
    ...(promote ? { promote } : {}),
  };
}

/** The peer's stream, followed as this agent (its node name and key), its ups and downs told to `self.onEvent` and `onEvent`. */
function streamShadow(primary: { host: string; port: number }, self: StreamIdentity, table: ShadowTableOptions, onEvent?: (event: PeerShadowEvent) => void): PeerShadow {
  const tell = self.onEvent && onEvent ? (e: PeerShadowEvent) => (self.onEvent!(e), onEvent(e)) : (self.onEvent ?? onEvent);
  return new PeerShadow({ node: self.node, key: self.key, primary, ...table, ...(tell ? { onEvent: tell } : {}) });
}

/**
 * A shadow whose takeover looks unanswered writes up in the replication stream (`matchWrites`):
 * the RESP trackers log writes, a probe of the primary's stream runs as long as the shadow, and
 * checkReplays decides from both once the replica is promoted (redis-replay-check.ts). The probe
 * goes to the service endpoint unless `matchWrites.primary` says otherwise: that is where the
 * primary serves, and what the mirror copies or the primary's own capture streams, so the
 * capture times the probe with the clock it times the writes with (probe-capture-times.ts), and
 * the probe's connection is left out of the plans (neither continued nor reset) and of the
 * counts. It starts once the capture does (the mirror's ring is set up, or the primary WELCOMEd
 * the stream, which it does once its capture runs): a connection whose SYN the capture missed
 * would never be followed. A stream that comes back after a break restarts it: what the primary
 * captured meanwhile is lost, the probe's connection with it.
 *
 * From a stream the writes' times are the primary's clock; so are the probes' the primary's
 * capture timed, and only those count (`capturedOnly`). The primary's capture bounds each run:
 * it copies a request before its service reads it (a held service's ingress is accepted only
 * once read) and a reply after the service wrote it.
 */
function matchedShadow(c: ContinueConfig, service: Endpoint, plugin: ContinuePlugin, self: StreamIdentity, m: NonNullable<ContinueConfig['matchWrites']>): Shadow {
  const requestLog = new RequestLog();
  let probe: ReplicationStreamProbe | undefined;
  let closed = false;
  const ownClient = (client: Endpoint) => probe?.isOwnClient(client) ?? false;
  const probeTimes = new ProbeCaptureTimes({ isProbe: (connection) => ownClient(endpointOf(connection)) });
  const primary = m.primary ?? { host: service.address, port: service.port };
  const startProbe = () => {
    if (closed) return;
    probe?.close();
    probe = new ReplicationStreamProbe(primary, { intervalMs: m.probeIntervalMs });
  };
  const table: ShadowTableOptions = { services: [service], plugin, requestLog, probeTimes, ownClient };
  let capture: ShadowCapture | PeerShadow;
  let ready: Promise<void> | undefined;
  if (c.stream) {
    capture = streamShadow(c.stream, self, table, (e) => {
      if ((e.type === 'connected' && probe === undefined) || e.type === 'resumed') startProbe();
    });
  } else {
    capture = new ShadowCapture({ interface: c.mirror!, ...table });
    ready = capture.ready;
    // A capture that cannot start: the takeover drops the shadow (PeerTakeover.watchShadow).
    ready.then(startProbe, () => undefined);
  }
  const waiting = c.stream ? 'waiting for the primary\'s stream' : 'waiting for the capture to start';
  return {
    plans: (address) => capture.plans(address),
    ...(ready ? { ready } : {}),
    ownClient,
    stats: () => {
      const p = probe?.stats();
      const streamProbe = p ? { connected: p.connected, probes: p.probes, errors: p.errors, lastError: p.lastError } : { connected: false, probes: 0, errors: 0, lastError: waiting };
      return { ...capture.stats(), streamProbe };
    },
    close: () => {
      closed = true;
      probe?.close();
      return capture.close();
    },
    checkReplays: (promoted) =>
      redisReplayCheck({ log: requestLog, probes: () => probe?.probes() ?? [], captured: (nonce) => probeTimes.get(nonce), capturedOnly: c.stream !== undefined, upstream: c.upstream, marginMs: m.marginMs }, promoted),
  };
}

/**
 * A mirror's shadow whose takeover replays a PostgreSQL session's unanswered request only when
 * the dead primary cannot have committed it in WAL the promoted standby holds (`walCheck`,
 * wal-arrivals.ts): this host's standby receives that WAL, and a capture of its replication
 * connection times each segment on the clock the mirror's capture times the requests with.
 */
function walCheckedShadow(c: ContinueConfig, service: Endpoint, plugin: ContinuePlugin, w: NonNullable<ContinueConfig['walCheck']>, onWatch?: (e: WalWatchEvent) => void): Shadow {
  const capture = new ShadowCapture({ interface: c.mirror!, services: [service], plugin });
  const wal = new WalArrivals({ address: w.primary.host, port: w.primary.port });
  let tracker: FlowTracker;
  try {
    // Headers and the first bytes of each payload: enough to know a keepalive.
    tracker = new FlowTracker({ interface: w.interface, hosts: [w.primary.host], ports: [w.primary.port], payloadBytes: 8, trackFlows: false, background: true });
  } catch (err) {
    void capture.close();
    throw err;
  }
  let drops = 0;
  const noteLosses = () => {
    const d = tracker.stats().drops;
    if (d > drops) {
      drops = d;
      wal.lost(Date.now());
    }
  };
  tracker.onSegments((segments) => {
    wal.take(segments);
    noteLosses();
  });
  tracker.start();
  // Requests seen before the capture runs cannot be ordered (WalArrivals.verdict says so).
  tracker.ready.then(() => wal.started(Date.now()), () => undefined);
  // A watch gone unseen makes every unanswered request unproven at a takeover: said when it happens, not
  // only in status.
  const watching = setInterval(() => {
    const e = wal.watchChange(Date.now());
    if (e) onWatch?.(e);
  }, WAL_WATCH_CHECK_MS).unref();
  return {
    plans: (address) => capture.plans(address),
    ready: capture.ready,
    table: capture.table,
    clientDataSince: capture.clientDataSince.bind(capture),
    stats: () => ({ ...capture.stats(), walWatch: wal.watch(Date.now()) }),
    close: () => {
      clearInterval(watching);
      tracker.close();
      return capture.close();
    },
    checkReplays: (promoted) => pgWalReplayCheck(wal, noteLosses, promoted, { unproven: c.unproven === 'reset' ? 'reset' : 'read-only' }),
  };
}

/** `${address}|${port}` (RequestLog's connection) as an endpoint. */
function endpointOf(connection: string): Endpoint {
  const bar = connection.lastIndexOf('|');
  return { address: connection.slice(0, bar), port: Number(connection.slice(bar + 1)) };
}

/** The section's protocol plugin. Throws, naming the file, when passwordFile cannot be read. */
function pluginOf(c: ContinueConfig): ContinuePlugin {
  if (c.protocol === 'resp') return respContinue;
  if (c.protocol === 'http') return httpContinue;
  // A service whose functions may catch the read-only refusal (unproven: reset) gets no rebuilt transactions either.
  const rebuildTransactions = c.unproven !== 'reset';
  const password = pgPassword(c);
  return pgContinue({ ...(password !== undefined ? { password } : {}), rebuildTransactions });
}

/**
 * The PostgreSQL password of a continue section (passwordFile's bytes without one final line
 * ending, as the cluster key's keyFile), or undefined without one. Throws, naming the file,
 * when it cannot be read.
 */
export function pgPassword(c: Pick<ContinueConfig, 'passwordFile'>): string | undefined {
  if (c.passwordFile === undefined) return undefined;
  try {
    return readFileSync(c.passwordFile, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new Error(`continue.passwordFile ${c.passwordFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * Runs the promote command (no shell); resolves on exit 0. Rejects naming the command with its
 * exit code or signal and the end of its stderr, or after timeoutMs (the command is SIGKILLed).
 */
export function runPromote(argv: readonly string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string; signal?: string };
      const how = e.killed ? `did not finish in ${timeoutMs} ms` : typeof e.code === 'number' ? `exited with ${e.code}` : e.signal ? `was killed by ${e.signal}` : e.message;
      const tail = String(stderr).trim().split('\n').slice(-3).join(' | ');
      reject(new Error(`promote command ${JSON.stringify(argv.join(' '))} ${how}${tail ? `: ${tail}` : ''}`));
    });
  });
}
