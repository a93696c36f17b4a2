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
import type { TakeoverConfig } from './config.js';
import type { PeerTakeoverOptions, Shadow } from './peer-takeover.js';
import { respCommand } from './redis-catch-up.js';
import { redisReplayCheck } from './redis-replay-check.js';
import { ReplicationStreamProbe } from './redis-stream-probe.js';
import { ProbeCaptureTimes } from '../net/shadow/probe-capture-times.js';
import { RequestLog } from '../net/shadow/request-log.js';

type ContinueConfig = NonNullable<TakeoverConfig['continue']>;

/** This agent, as the peer's stream source knows it: its node name and the cluster key. */
export interface StreamIdentity {
  node: string;
  key: Buffer;
  /** The stream's ups and downs, for the log. */
  onEvent?: (event: PeerShadowEvent) => void;
}

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
    if (c.stream) return new PeerShadow({ node: self.node, key: self.key, primary: c.stream, services: [service], plugin, ...(self.onEvent ? { onEvent: self.onEvent } : {}) });
    if (!c.matchWrites) return new ShadowCapture({ interface: c.mirror!, services: [service], plugin });
    return matchedShadow(c.mirror!, service, plugin, c.upstream, c.matchWrites);
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

/**
 * A mirror's shadow whose takeover looks unanswered writes up in the replication stream
 * (`matchWrites`): the RESP trackers log writes, a probe of the primary's stream runs as long as
 * the shadow, and checkReplays decides from both once the replica is promoted
 * (redis-replay-check.ts). The probe goes to the service endpoint unless `matchWrites.primary`
 * says otherwise: that is where the primary serves, and what the mirror copies, so the capture
 * times the probe with its own clock (probe-capture-times.ts) and the probe's connection is left
 * out of the plans (neither continued nor reset) and of the counts. It starts once the capture
 * does: a connection whose SYN the capture missed would never be followed.
 */
function matchedShadow(mirror: string, service: Endpoint, plugin: ContinuePlugin, upstream: { host: string; port: number }, m: NonNullable<ContinueConfig['matchWrites']>): Shadow {
  const requestLog = new RequestLog();
  let probe: ReplicationStreamProbe | undefined;
  const ownClient = (client: Endpoint) => probe?.isOwnClient(client) ?? false;
  const probeTimes = new ProbeCaptureTimes({ isProbe: (connection) => ownClient(endpointOf(connection)) });
  const capture = new ShadowCapture({ interface: mirror, services: [service], plugin, requestLog, probeTimes, ownClient });
  let closed = false;
  const primary = m.primary ?? { host: service.address, port: service.port };
  capture.ready.then(
    () => {
      if (!closed) probe = new ReplicationStreamProbe(primary, { intervalMs: m.probeIntervalMs });
    },
    () => undefined, // the takeover drops a shadow whose capture cannot start (PeerTakeover.watchShadow)
  );
  return {
    plans: (address) => capture.plans(address),
    get ready() {
      return capture.ready;
    },
    ownClient,
    stats: () => {
      const p = probe?.stats();
      const streamProbe = p ? { connected: p.connected, probes: p.probes, errors: p.errors, lastError: p.lastError } : { connected: false, probes: 0, errors: 0, lastError: 'waiting for the capture to start' };
      return { ...capture.stats(), streamProbe };
    },
    close: () => {
      closed = true;
      probe?.close();
      return capture.close();
    },
    checkReplays: (promoted) => redisReplayCheck({ log: requestLog, probes: () => probe?.probes() ?? [], captured: (nonce) => probeTimes.get(nonce), upstream, marginMs: m.marginMs }, promoted),
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
  if (c.passwordFile === undefined) return pgContinue();
  let text: string;
  try {
    text = readFileSync(c.passwordFile, 'utf8');
  } catch (err) {
    throw new Error(`continue.passwordFile ${c.passwordFile} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // The file's bytes without one final line ending, as the cluster key's keyFile.
  return pgContinue({ password: text.replace(/\r?\n$/, '') });
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
