// `takeover agent --config FILE`: runs the agent until SIGTERM/SIGINT, logging what it decides
// and does as JSON lines (pino) on stdout, at the level of --log-level or the config's log.level.
// A bad config or option is one line naming the field, exit 2; a host-specific check
// (host-checks.ts) that fails at start is the same line, exit 1.
import { pino, type Logger } from 'pino';
import { Agent } from '../agent/agent.js';
import { ConfigError, configKey, configWarnings, loadConfig, LOG_LEVELS, type LogLevel } from '../agent/config.js';
import { AgentRunningError } from '../agent/control.js';
import { PriorityError } from '../monitor/cpu-priority.js';
import { checkHost, HostCheckError, type HostCheck } from '../agent/host-checks.js';
import { summarizeResults } from '../net/close-result.js';
import { WAL_SEEN_WITHIN_MS } from '../net/shadow/wal-arrivals.js';
import { UsageError } from './errors.js';

export async function agentCommand(opts: { config: string; check?: boolean; logLevel?: string }): Promise<number> {
  if (opts.logLevel !== undefined && !(LOG_LEVELS as readonly string[]).includes(opts.logLevel)) {
    throw new UsageError(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got "${opts.logLevel}"`);
  }
  let config;
  let host: HostCheck[];
  try {
    config = await loadConfig(opts.config);
    if (opts.check) await configKey(config);
    host = await checkHost(config, opts.config);
  } catch (err) {
    // At start a host check that fails is not a usage error: the host may change (an address
    // assigned late, an interface created after the agent), and a service manager may retry.
    if (err instanceof HostCheckError && !opts.check) throw Object.assign(new Error(err.message), { code: 'EHOSTCHECK' });
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
  const warnings = configWarnings(config);
  if (opts.check) {
    for (const w of warnings) process.stderr.write(`${opts.config}: warning: ${w}\n`);
    const mine = config.instances.filter((i) => i.node === config.node).map((i) => i.name);
    process.stdout.write(`${opts.config}: valid: node ${config.node} of cluster ${config.cluster}, ${config.peers.length} peer(s), instances here: ${mine.join(', ') || 'none'}, ${config.services.length} service(s)\n`);
    const keyFile = config.keyFile !== undefined ? [{ field: 'keyFile', found: `${config.keyFile} is readable` }] : [];
    const checked = [...keyFile, ...host];
    process.stdout.write(`${opts.config}: host-specific, checked on this host only:${checked.length ? '' : ' nothing to check'}\n`);
    for (const h of checked) process.stdout.write(`  ${h.field}: ${h.found}\n`);
    return 0;
  }
  const log = pino({ base: { node: config.node }, level: (opts.logLevel as LogLevel | undefined) ?? config.log.level });
  for (const w of warnings) log.warn({ config: opts.config }, w);
  const agent = await Agent.create(config).catch((err: Error) => {
    throw err instanceof ConfigError ? new UsageError(err.message) : err;
  });
  agent.on('suppressed', (s) => log.warn({ peer: s.node, heard: s.heard, of: s.of }, `peer ${s.node} is silent, but this node has no quorum (${s.why}): nothing published, nothing taken over`));
  agent.on('address-released', (r) =>
    r.error
      ? log.error({ address: r.address, to: r.to, err: r.error }, `could not remove ${r.address} (held by ${r.to} too): two hosts answer for it`)
      : log.warn({ address: r.address, to: r.to, why: r.why }, r.why === 'gave-back' ? `${r.to} is alive and holds ${r.address}: given back (removed here)` : `this node was fenced: ${r.address} given up to ${r.to}`),
  );
  agent.on('address-reclaimed', (r) =>
    r.error
      ? log.warn({ address: r.address, from: r.from, err: r.error }, `${r.from} gave ${r.address} back, but announcing it here failed: clients may reach ${r.from} until their neighbour entries expire`)
      : log.info({ address: r.address, from: r.from }, `${r.from} gave ${r.address} back: announced here again`),
  );
  // Held past an interval (CPU starvation, a stalled or paused host): peers may have judged this
  // node dead meanwhile, and it judges none of them until it could hear them again.
  agent.on('heartbeat-held', (h) =>
    log.warn(
      { heldMs: h.lateMs, count: h.count, timeoutMs: agent.heartbeat.detector.timeoutMs, convictionsWaitUntil: new Date(h.convictionsWaitUntil).toISOString() },
      `this agent was held: its heartbeat was ${h.lateMs} ms overdue (peers declare a node dead after ${agent.heartbeat.detector.timeoutMs} ms of silence); no peer is judged for ${Math.round(h.convictionsWaitUntil - h.at)} ms; ${h.count} holds since the start (the host's load, or a paused VM; see \`nice\`)`,
    ),
  );
  agent.on('peer-rejected', (r) => log.warn({ peer: r.peer, reason: r.reason, count: r.count, link: r.link, from: r.from }, `configured peer ${r.peer} is heard only with rejected heartbeats (${r.reason}${r.reason === 'hmac' ? ': the keys differ' : ''})`));
  agent.on('published', (e) => log.info({ event: e }, 'published'));
  // Summaries: a plan may close ten thousand connections (the failures are listed in full); one
  // that left a connection open, or failed outright, is a warning an operator's alerting can see.
  agent.on('plan', (p) => {
    const closed = p.report ? summarizeResults(p.report.results) : undefined;
    const level = p.error || (closed && closed.failures.length > 0) ? 'warn' : 'info';
    log[level]({ plan: { instance: p.instance, cause: p.cause, ...(p.error ? { error: p.error } : {}), ms: p.doneAt - p.startedAt, ...(closed ? { closed } : {}) } }, 'failure plan done');
  });
  agent.on('takeover', (d) => {
    const closed = summarizeResults(d.report.results);
    // Acknowledged writes the promoted server lacks (the replay check counted them): lost with the peer.
    // A check that failed or warned (writes that may be lost uncounted): the same.
    const lostWrites = (d.continued?.replayCheck?.lostAcknowledged ?? 0) > 0;
    const checkTrouble = d.continued?.replayCheckError !== undefined || (d.continued?.replayCheckWarnings?.length ?? 0) > 0;
    const warn = closed.failures.length > 0 || (d.report.takeovers ?? []).some((t) => t.replaced) || typeof d.report.guard === 'object' || d.continueError !== undefined || lostWrites || checkTrouble;
    // With `continue`: how many connections go on here, and why each other one was reset.
    // (Counted by reason, its numbers as N, the first few in full: not 10,000 lines.)
    const resetBy = countByReason((d.continued?.reset ?? []).map((r) => r.reason));
    const continued = d.continued && {
      connections: d.continued.connections,
      midReply: d.continued.midReply,
      resumed: d.continued.resumed,
      goodbyes: d.continued.goodbyes,
      transactions: d.continued.transactions,
      timings: d.continued.timings,
      restoreUs: d.continued.restoreUs,
      ...(d.continued.tailProvenMs ? { tailProvenMs: d.continued.tailProvenMs } : {}),
      captureDrops: d.continued.captureDrops,
      ...(d.continued.backlogDrops !== undefined ? { backlogDrops: d.continued.backlogDrops } : {}),
      ...(d.continued.replayCheck ? { replayCheck: d.continued.replayCheck } : {}),
      ...(d.continued.replayCheckError !== undefined ? { replayCheckError: d.continued.replayCheckError } : {}),
      ...(d.continued.replayCheckWarnings ? { replayCheckWarnings: d.continued.replayCheckWarnings } : {}),
      reset: d.continued.reset.length,
      resetBy,
      firstReset: d.continued.reset.slice(0, 5).map((r) => ({ client: `${r.client.address}:${r.client.port}`, reason: r.reason })),
    };
    // One line per continued connection, for an operator (or a test) following one client.
    if (log.isLevelEnabled('debug')) for (const c of d.continued?.each ?? []) log.debug({ peer: d.down.node, ...c }, 'continued connection');
    log[warn ? 'warn' : 'info']({ peer: d.down.node, replicated: d.replicated, takeovers: d.report.takeovers, guard: d.report.guard, closed, ...(continued ? { continued } : {}), ...(d.continueError ? { continueError: d.continueError } : {}), ms: d.doneAt - d.startedAt }, 'peer taken over');
  });
  agent.on('takeover-failed', (err) => log.error({ err }, 'peer takeover failed'));
  // A continued client the relay reset (its replay's reply differed, a resumed reply did not go
  // on, the replay check refused it) is worth a warning with the reason; the others end as
  // connections do. Such resets come in bursts (a replay check refusing many writers, a
  // representation changed under many downloads): those of RESET_BATCH_MS are one line, counted
  // by reason as in `peer taken over`. A PostgreSQL transaction that could not be rebuilt after
  // all ends with its goodbye (57P01), as it would have at the takeover: the same, at info level.
  const batches = { reset: [] as Array<{ peer: string; client: string; reason: string }>, goodbye: [] as Array<{ peer: string; client: string; reason: string }> };
  // A keeper that refuses refuses every relay of a takeover: one warning per 10 s per kind, with
  // the count, and the count of the rest when those 10 s are over.
  const batched = (kind: 'refused' | 'dropped' | 'unusable', text: (e: Record<string, unknown>, count: number) => string) => {
    const b = { count: 0, saidAt: -Infinity, last: {} as Record<string, unknown>, timer: undefined as NodeJS.Timeout | undefined };
    const say = () => {
      log.warn({ ...b.last, count: b.count }, text(b.last, b.count));
      b.saidAt = performance.now();
      b.count = 0;
    };
    return (e: Record<string, unknown>) => {
      b.count++;
      b.last = e;
      log.debug(e, `relay keeper: ${kind}`);
      if (performance.now() - b.saidAt >= 10_000) return say();
      b.timer ??= setTimeout(() => {
        b.timer = undefined;
        if (b.count > 0) say();
      }, 10_000 - (performance.now() - b.saidAt));
      b.timer.unref();
    };
  };
  const keeperWarnings = {
    refused: batched('refused', (e, n) => `${n} continued connection(s) relayed by this agent, not the relay keeper (${String(e.reason)}): they end with the agent`),
    dropped: batched('dropped', (e, n) => `${n} continued connection(s) ended at their handover to the relay keeper (${String(e.reason)})`),
    unusable: batched('unusable', (e) => `relay keeper on ${String(e.socket)} not used (${String(e.reason)}): the connections it holds are not known here, and a takeover of their peer would reset them`),
  };
  agent.on('relay-keeper', (e) => {
    if (e.kind === 'refused' || e.kind === 'dropped' || e.kind === 'unusable') return keeperWarnings[e.kind](e);
    if (e.kind === 'start-in-unit') return log.warn(e, `relayKeeper.start is true under systemd: a keeper this agent starts would be in its unit, and a stop or restart of the unit would end the connections it holds; run takeover-relay-keeper.service and set relayKeeper.start: false`);
    if (e.kind === 'attached') log.info(e, `relay keeper (pid ${e.pid}) on ${e.socket} holds ${e.connections} continued connection(s)`);
    else if (e.kind === 'replaced') log.info(e, `relay keeper (pid ${e.from}) on ${e.socket} was replaced by pid ${e.pid}, which holds ${e.relays} continued connection(s)`);
    else if (e.kind === 'started' && e.insideUnit) log.warn(e, `relay keeper started (pid ${e.pid}) on ${e.socket} inside this agent's systemd unit: a stop or restart of the unit kills it and the connections it holds; run it as its own unit (docs/examples/takeover-relay-keeper.service); its log: ${e.logFile}`);
    else if (e.kind === 'started') log.info(e, `relay keeper started (pid ${e.pid}) on ${e.socket}; its log: ${e.logFile}`);
    else if (e.kind === 'left') log.info(e, `${e.connections} continued connection(s) stay with the relay keeper (pid ${e.pid})`);
    else if (e.kind === 'lost') log[e.held > 0 ? 'warn' : 'info'](e, `relay keeper on ${e.socket} lost (${e.reason})${e.held > 0 ? `: the ${e.held} continued connection(s) it held are gone with it` : ''}`);
    else log.debug(e, 'continued connection ended');
  });
  agent.on('continued-ended', (e) => {
    const kind = e.clientReset ? 'reset' : e.saidGoodbye ? 'goodbye' : undefined;
    if (!kind) return log.debug(e, 'continued connection ended');
    if (batches[kind].length === 0) {
      setTimeout(() => {
        const batch = batches[kind];
        batches[kind] = [];
        const line = { count: batch.length, [kind === 'reset' ? 'resetBy' : 'goodbyeBy']: countByReason(batch.map((r) => r.reason)), first: batch.slice(0, 5) };
        if (kind === 'reset') log.warn(line, 'continued connections reset');
        else log.info(line, 'continued connections said goodbye');
      }, RESET_BATCH_MS).unref();
    }
    batches[kind].push({ peer: e.peer, client: e.client, reason: e.reason });
  });
  agent.on('shadowing', (s) => log.info(s, `shadowing ${s.peer}'s connections to ${s.address}:${s.port} from its ${s.source}: they will be continued here`));
  // The peer's stream: a break makes the connections open across it unprovable until they show
  // their streams whole again (docs/CONTINUE.md): worth a warning.
  agent.on('shadow-stream', (e) => {
    const { type, peer, ...rest } = e;
    if (type === 'connected') log.info({ peer, ...rest }, `${peer}'s connection stream is up`);
    else if (type === 'resumed') log.info({ peer, ...rest }, `${peer}'s connection stream resumed`);
    else log.warn({ peer, ...rest }, `${peer}'s connection stream ${type}`);
  });
  agent.on('wal-watch', (e) => {
    const { type, peer, primary, ...rest } = e;
    const where = `${primary.address}:${primary.port}`;
    if (type === 'wal-unseen') log.warn({ peer, primary: where, ...rest }, `WAL watch for ${peer}'s takeover: nothing of the standby's replication connection to ${where} captured for ${WAL_SEEN_WITHIN_MS / 1000} s: a takeover now replays no unanswered PostgreSQL request as it was, each is unproven (continue.unproven; walCheck.primary must be the address and port the standby connects to, on walCheck.interface)`);
    else log.info({ peer, primary: where, ...rest }, `WAL watch for ${peer}'s takeover: the standby's replication connection to ${where} is seen again`);
  });
  agent.on('switchover-started', (s) => log.info(s, `switchover of ${s.peer}'s ${s.address}:${s.port} to this node: started`));
  agent.on('switchover', (r) => log[r.reset > 0 || r.goodbyes > 0 ? 'warn' : 'info']({ switchover: r }, `switchover of ${r.peer}'s ${r.service}: ${r.moved} of ${r.connections} connections moved, ${r.goodbyes > 0 ? `${r.goodbyes} told goodbye, ` : ''}${r.reset} reset, address moved ${r.releasedAfterMs ?? '?'} ms after the lock, lock held ${r.lockHeldMs ?? '?'} ms`));
  agent.on('switchover-failed', (f) => log.error(f, `switchover of ${f.address} failed: ${f.error}`));
  agent.on('switchover-primary', (e) => {
    if (e.type === 'switchover-given') {
      log.info({ switchover: e }, `gave ${e.address}:${e.port} to ${e.backup} (planned switchover): ${e.connections} connections handed over (${e.moved} moved, ${e.reset} reset or told goodbye there), address removed ${e.releasedAfterMs} ms after the lock, lock held ${e.lockHeldMs} ms`);
      if (e.unlockedSessions) log.warn({ unlockedSessions: e.unlockedSessions }, `${e.unlockedSessions} other client session(s) of this PostgreSQL were not locked nor moved (over loopback, a Unix socket or this host's own address): what they committed after the lock may not be on ${e.backup}; stop them before a switchover`);
    }
    else log.warn({ switchover: e }, `planned switchover of ${e.address}:${e.port} to ${e.backup} ${e.type === 'switchover-refused' ? 'refused' : 'aborted'}: ${e.reason}`);
  });
  agent.on('connection-stream', (e) => {
    if (e.type === 'subscribed') log.info(e, `${e.backup} follows this node's connections (connection stream)`);
    else log.warn(e, `connection stream: a backup ${e.type}`);
  });
  agent.on('takeover-waiting', (w) => log.info({ peer: w.down.node, address: w.address, leaseSeconds: w.seconds, until: new Date(w.until).toISOString(), ms: Math.round(w.until - w.down.at) }, `waiting out ${w.down.node}'s ${w.seconds} s address lease on ${w.address} before taking it over`));
  // The peer's kernel kept its leased address past the lease (it removes expired addresses late,
  // at times by seconds): said when the probes first hear it, and how long in the end.
  agent.on('takeover-held', (h) => log.warn({ peer: h.peer, address: h.address, mac: h.mac, answer: h.kind, pastLeaseMs: h.pastLeaseMs }, `${h.peer} still holds ${h.address} past its address lease (answered by ${h.mac}): not added until it is gone`));
  agent.on('takeover', (d) => {
    const held = d.lease?.probe?.held;
    if (held) log.warn({ peer: d.down.node, address: d.report.takeovers?.[0]?.address, macs: held.macs, pastLeaseMs: held.pastLeaseMs, probes: d.lease!.probe!.probes, probeMs: d.lease!.probe!.ms }, `${d.down.node} kept its address at least ${held.pastLeaseMs} ms past its lease; taken over once gone`);
  });
  agent.on('takeover-abandoned', (a) => log.warn({ peer: a.down.node, address: a.address, why: a.why, ms: Math.round(a.at - a.down.at) }, 'peer takeover abandoned: nothing taken over'));
  // This node's own leased addresses: a lease taken up (at start, or an address added by hand),
  // lost (the agent was held past it, or the address removed), made permanent at a planned stop.
  agent.on('lease', (e) => {
    if (e.kind === 'adopted') log.info({ address: e.address, interface: e.interface, found: e.found }, `address lease taken up on ${e.address}`);
    else if (e.kind === 'not-adopted') log.warn({ address: e.address, interface: e.interface, why: e.why }, `address ${e.address} not leased`);
    else if (e.kind === 'lost') log.error({ address: e.address, why: e.why }, `address lease on ${e.address} lost`);
    else if (e.kind === 'renew-failed') log.warn({ address: e.address, err: e.error }, `address lease renewal of ${e.address} failed`);
    else if (e.error) log.error({ address: e.address, err: e.error }, `could not make ${e.address} permanent again at the stop: its lease runs out`);
    else log.info({ address: e.address }, `address lease ended: ${e.address} permanent again (planned stop)`);
  });
  agent.on('fence', (f) => (f.ok ? log.info : log.error).call(log, { fence: { node: f.node, devices: f.devices, ms: f.doneAt - f.startedAt } }, f.ok ? 'peer fenced' : 'fencing the peer failed'));
  agent.on('fenced', (f) => log.error({ device: f.device }, 'this node was fenced off a shared device: stopping the instances it runs'));
  // Each process of an instance: started, adopted from an earlier agent, and how it ended with the
  // last lines of its stderr (an unplanned exit is a warning).
  agent.on('instance', ({ instance, event: e }) => {
    if (e.kind === 'started') log.info({ instance, pid: e.pid }, e.adopted ? 'instance adopted' : 'instance started');
    else if (e.kind === 'exited') log[e.exit.planned ? 'info' : 'warn']({ instance, exit: e.exit }, 'instance exited');
    else if (e.kind === 'not-adopted') log.warn({ instance, pid: e.pid, reason: e.reason }, 'instance record not adopted');
  });
  // The cluster manager: each step it takes for an application, how it ended, and the processes it runs.
  agent.on('app', (a) => {
    if (a.kind === 'step') log.info({ app: a.tag, step: a.step }, `app ${a.tag}: ${a.step.kind}${'why' in a.step ? ` (${a.step.why})` : ''}`);
    else if (a.kind === 'done') log.info({ app: a.tag, step: a.step, ms: Math.round(a.ms) }, `app ${a.tag}: ${a.step} done`);
    else if (a.kind === 'failed') log.error({ app: a.tag, step: a.step, error: a.error }, `app ${a.tag}: ${a.step} failed`);
    else if (a.kind === 'lease-lost') log.error({ why: a.why }, 'this node lost its lease in the store: stopping the applications it hosts');
    else if (a.kind === 'lease-back') log.info('this node holds a lease in the store again');
    else if (a.kind === 'store-unavailable') log.error({ app: a.tag, error: a.error }, `app ${a.tag}: the store is not usable, no step is taken (no failover) until it is: ${a.error}`);
    else if (a.event.kind === 'started') log.info({ app: a.tag, pid: a.event.pid }, a.event.adopted ? 'app process adopted' : 'app process started');
    else if (a.event.kind === 'exited') log[a.event.exit.planned ? 'info' : 'warn']({ app: a.tag, exit: a.event.exit }, 'app process exited');
    else if (a.event.kind === 'not-restarting') log.error({ app: a.tag, failures: a.event.failures }, 'app process not restarting');
  });
  // The connections asked of the peers follow the clustered applications in the store.
  agent.on('subscriptions', (c) => {
    if ('error' in c) log.error({ error: c.error }, `replication: the services asked of the peers could not change: ${c.error}`);
    else log.info({ peer: c.peer, services: c.services }, `replication: asking ${c.peer} for ${c.services.length ? c.services.map((s) => `${s.address.includes(':') ? `[${s.address}]` : s.address}:${s.port}`).join(', ') : 'nothing'}`);
  });
  agent.on('stale-guards', (g) => {
    const msg = g.error
      ? 'sweeping RST guards left by dead processes failed'
      : g.removed.length > 0 || (g.holdRules?.length ?? 0) > 0
        ? 'removed RST guards (nftables tables) or output-commit rules (iptables) left by processes that died without removing them'
        : 'RST guards of processes in another pid namespace found: left alone';
    log.warn({ staleGuards: g }, msg);
  });
  agent.on('detector', (e) => log.info({ detector: { ...e, incarnation: 'incarnation' in e ? String(e.incarnation) : undefined } }, e.kind));
  agent.on('disputed', (d) =>
    d.witness === 'heartbeat'
      ? log.info({ disputed: d }, 'peer heard again before the witnesses agreed: not declared dead')
      : log.warn({ disputed: d }, 'peer silent on every link, but a witness disagrees: not declared dead yet'),
  );
  // Every callout run's result (its exit code or signal): info when it exited 0, else warn.
  agent.on('callout', (r) => {
    const callout = { file: r.file, event: r.event.type, status: r.event.status, code: r.code, signal: r.signal, timedOut: r.timedOut, ms: r.elapsedMs, ...(r.error ? { error: r.error } : {}) };
    if (r.code === 0 && !r.timedOut && !r.error) log.info({ callout }, 'callout done');
    else log.warn({ callout }, r.timedOut ? 'callout killed past its timeout' : 'callout failed');
  });
  agent.on('callout-dropped', (d) => log.warn({ callout: { file: d.file, event: d.event.type, status: d.event.status } }, 'callout dropped unrun: more than 1000 queued'));
  // SIGHUP reloads: read and validated first; a bad file or a change that needs a restart is
  // refused and the running configuration stays (keepalived's and systemd's ExecReload habit).
  const reload = () =>
    void loadConfig(opts.config).then(
      (next) => {
        try {
          const changed = agent.reload(next);
          // --log-level on the command line outranks the file, as at start.
          if (changed.includes('log') && opts.logLevel === undefined) log.level = next.log.level;
          log.info({ changed }, changed.length ? 'configuration reloaded' : 'configuration reloaded: nothing changed');
        } catch (err) {
          log.error({ err: (err as Error).message }, 'configuration reload refused');
        }
      },
      (err: Error) => log.error({ err: err.message }, 'configuration reload refused: the file is not valid, the running configuration stays'),
    );
  process.on('SIGHUP', reload);
  // The handlers go in before start: a SIGTERM while starting (systemd stopping a unit that is
  // still coming up) must stop what was started, not kill the process with its instances left.
  // A second signal while stopping is logged, not fatal: the stop is bounded (Agent.stop).
  let stopping = false;
  const stopRequested = new Promise<string>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) log.warn({ signal }, 'already stopping');
      stopping = true;
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  try {
    await agent.start();
  } catch (err) {
    process.off('SIGHUP', reload);
    if (err instanceof AgentRunningError) {
      process.stderr.write(`takeover: ${err.message}\n`);
      return 1;
    }
    // Missing CAP_SYS_NICE: a restart cannot fix it (exit 2, which the systemd unit does not restart).
    if (err instanceof PriorityError) throw new UsageError(`${opts.config}: ${err.message}`);
    throw err;
  }
  log.info({ notifyPort: agent.notifyPort, ...(agent.metricsPort !== undefined ? { metricsPort: agent.metricsPort } : {}), incarnation: agent.incarnation }, 'agent started');
  const signal = await stopRequested;
  process.off('SIGHUP', reload);
  const began = performance.now();
  log.info({ signal, departure: 'planned: peers take nothing over' }, 'stopping');
  await agent.stop();
  log.info({ ms: Math.round(performance.now() - began) }, 'agent stopped');
  exitWhenIdle(log);
  return 0;
}

/** Continued clients their relays reset within this long of the first are logged as one line (ms). */
const RESET_BATCH_MS = 200;

/** Reasons counted by kind (their numbers as N): one entry for ten thousand alike. */
function countByReason(reasons: readonly string[]): Record<string, number> {
  const by: Record<string, number> = {};
  for (const r of reasons) {
    const kind = r.replace(/\d+/g, 'N');
    by[kind] = (by[kind] ?? 0) + 1;
  }
  return by;
}

/**
 * Everything the agent started is closed once stop() returns, so the process ends by itself at
 * once. If a handle still holds the event loop (a bug), it is named in the log and the process
 * exits anyway after EXIT_BACKSTOP_MS: a stopped agent never lingers (pino writes synchronously,
 * so no log line is lost).
 */
const EXIT_BACKSTOP_MS = 1000;
function exitWhenIdle(log: Logger): void {
  setTimeout(() => {
    log.error({ resources: process.getActiveResourcesInfo() }, 'still running after stop: exiting anyway');
    process.exit(process.exitCode ?? 0);
  }, EXIT_BACKSTOP_MS).unref();
}
