// `takeover relay-keeper --socket PATH`: the process that holds continued connections' relays
// apart from the agent (net/relay-keeper/relay-keeper.ts), so that they outlive the agent's
// restart. The agent starts it itself when its config has `relayKeeper` and none answers; under
// systemd it runs as its own unit (docs/examples/takeover-relay-keeper.service), which a restart
// of the agent's unit leaves alone. Logs JSON lines (pino) on stdout; SIGTERM/SIGINT close every
// relay it holds and end it; it also ends by itself once idle (no relay, no agent connected).
// `--replace` takes every relay over from the keeper running on the socket, which exits: the way
// to upgrade the keeper without ending its connections.
import { pino } from 'pino';
import { LOG_LEVELS, type LogLevel } from '../agent/config.js';
import { KeeperRunningError, RelayKeeper } from '../net/relay-keeper/relay-keeper.js';
import { UsageError } from './errors.js';

export async function relayKeeperCommand(opts: { socket: string; idleExitMs: string; logLevel: string; replace?: boolean }): Promise<number> {
  if (!(LOG_LEVELS as readonly string[]).includes(opts.logLevel)) throw new UsageError(`--log-level: must be one of ${LOG_LEVELS.join(', ')}, got "${opts.logLevel}"`);
  const idleExitMs = Number(opts.idleExitMs);
  if (!Number.isInteger(idleExitMs) || (idleExitMs !== 0 && idleExitMs < 100) || idleExitMs > 86_400_000) throw new UsageError(`--idle-exit-ms: must be 0 (never) or an integer number of ms, 100-86400000, got "${opts.idleExitMs}"`);
  const log = pino({ base: { role: 'relay-keeper' }, level: opts.logLevel as LogLevel });
  let keeper: RelayKeeper;
  // A signal during a replacement is answered once it is over (the relays it took are this
  // process's then: stopping closes them, as it would any keeper's), not by dying midway.
  let signalled: NodeJS.Signals | undefined;
  const early = (signal: NodeJS.Signals) => {
    signalled = signal;
    log.warn(`${signal} during the replacement: the keeper stops once it is over`);
  };
  process.on('SIGTERM', early);
  process.on('SIGINT', early);
  try {
    keeper = opts.replace ? (await RelayKeeper.replace({ socket: opts.socket, log, idleExitMs })).keeper : await RelayKeeper.start({ socket: opts.socket, log, idleExitMs });
  } catch (err) {
    if (err instanceof KeeperRunningError || (err as NodeJS.ErrnoException).code === 'EKEEPERREPLACE') {
      process.stderr.write(`takeover: ${(err as Error).message}\n`);
      return 1;
    }
    throw err;
  } finally {
    process.off('SIGTERM', early);
    process.off('SIGINT', early);
  }
  const onSignal = (signal: NodeJS.Signals) => void keeper.stop(signal);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  if (signalled) onSignal(signalled);
  // Its own session (the agent starts it detached): a hangup of the agent's terminal is not its end.
  process.on('SIGHUP', () => log.info('SIGHUP ignored (the relay keeper has no configuration to reload)'));
  await keeper.stopped;
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  return 0;
}
