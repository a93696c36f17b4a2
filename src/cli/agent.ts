// `takeover agent --config FILE`: runs the agent until SIGTERM/SIGINT, logging what it decides
// and does as JSON lines (pino) on stdout. A bad config is one line naming the field, exit 2.
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { ConfigError, configKey, loadConfig } from '../agent/config.js';
import { summarizeResults } from '../net/close-result.js';
import { UsageError } from './errors.js';

export async function agentCommand(opts: { config: string; check?: boolean }): Promise<number> {
  let config;
  try {
    config = await loadConfig(opts.config);
    if (opts.check) await configKey(config);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
  if (opts.check) {
    const mine = config.instances.filter((i) => i.node === config.node).map((i) => i.name);
    process.stdout.write(`${opts.config}: valid: node ${config.node} of cluster ${config.cluster}, ${config.peers.length} peer(s), instances here: ${mine.join(', ') || 'none'}, ${config.services.length} service(s)\n`);
    return 0;
  }
  const log = pino({ base: { node: config.node } });
  const agent = await Agent.create(config).catch((err: Error) => {
    throw err instanceof ConfigError ? new UsageError(err.message) : err;
  });
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
    log[closed.failures.length > 0 ? 'warn' : 'info']({ peer: d.down.node, replicated: d.replicated, closed, ms: d.doneAt - d.startedAt }, 'peer taken over');
  });
  agent.on('takeover-failed', (err) => log.error({ err }, 'peer takeover failed'));
  agent.on('fence', (f) => (f.ok ? log.info : log.error).call(log, { fence: { node: f.node, devices: f.devices, ms: f.doneAt - f.startedAt } }, f.ok ? 'peer fenced' : 'fencing the peer failed'));
  agent.on('fenced', (f) => log.error({ device: f.device }, 'this node was fenced off a shared device: stopping the instances it runs'));
  agent.on('detector', (e) => log.info({ detector: { ...e, incarnation: 'incarnation' in e ? String(e.incarnation) : undefined } }, e.kind));
  // A callout that exited 0 but whose leftovers the timeout had to kill failed too.
  agent.on('callout', (r) => (r.code === 0 && !r.timedOut ? log.debug({ callout: r }, 'callout') : log.warn({ callout: { ...r, event: r.event.type } }, 'callout failed')));
  await agent.start();
  log.info({ notifyPort: agent.notifyPort, incarnation: agent.incarnation }, 'agent started');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await agent.stop();
  log.info('agent stopped');
  return 0;
}
