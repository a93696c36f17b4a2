// `takeover switchover ADDRESS[:PORT] --to NODE`: a planned switchover of a peer's service to
// NODE, this node (agent/switchover-backup.ts): the peer's connections move here exactly, with no
// error for their clients. Run on NODE, whose agent follows the service (a takeover with
// `continue.stream`). Prints what happened with its numbers (stderr), the report with --json
// (stdout). Exit 0 when every connection moved; 2 when refused or aborted (the peer serves on,
// nothing moved); 1 when some were reset or told the protocol's goodbye, or it failed after the
// address moved (see the message).
import net from 'node:net';
import { controlRequest } from '../agent/control.js';
import type { SwitchoverReport } from '../agent/switchover-backup.js';
import { controlPath } from './control-path.js';
import { EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, UsageError } from './errors.js';
import { intOption } from './parse-args.js';

export interface SwitchoverOptions {
  control?: string;
  config?: string;
  json?: boolean;
  to?: string;
  quietWaitMs?: string;
}

/** ADDRESS, ADDRESS:PORT or [IPv6]:PORT. Throws UsageError naming what is wrong. Pure. */
export function parseServiceArg(arg: string): { address: string; port?: number } {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(arg);
  const [address, port] = bracket ? [bracket[1]!, bracket[2]] : net.isIP(arg) === 6 ? [arg, undefined] : (arg.includes(':') ? [arg.slice(0, arg.lastIndexOf(':')), arg.slice(arg.lastIndexOf(':') + 1)] : [arg, undefined]);
  if (net.isIP(address) === 0) throw new UsageError(`switchover: "${arg}" is not ADDRESS[:PORT] (the service address a takeover here names)`);
  if (port === undefined) return { address };
  return { address, port: intOption('the port', port, 1, 65535) };
}

export async function switchoverCommand(service: string, opts: SwitchoverOptions): Promise<number> {
  if (!opts.to) throw new UsageError('switchover: --to NODE is required (the node that takes the service over: the one this command runs on)');
  const target = parseServiceArg(service);
  const quietWaitMs = opts.quietWaitMs !== undefined ? intOption('--quiet-wait-ms', opts.quietWaitMs, 0, 10_000) : undefined;
  let reply: Record<string, unknown> | undefined;
  await controlRequest(await controlPath(opts), { cmd: 'switchover', ...target, to: opts.to, ...(quietWaitMs !== undefined ? { quietWaitMs } : {}) }, (msg) => (reply = msg));
  if (!reply) throw new Error('the agent closed the control connection without an answer');
  if (typeof reply.error === 'string') {
    process.stderr.write(`switchover: ${reply.error}\n`);
    return reply.phase === 'after-release' ? EXIT_INCOMPLETE : EXIT_USAGE;
  }
  const r = reply as unknown as SwitchoverReport;
  if (opts.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  process.stderr.write(`switchover of ${r.service}: ${r.moved} of ${r.connections} connections moved, ${r.goodbyes > 0 ? `${r.goodbyes} told goodbye, ` : ''}${r.reset} reset; address moved ${r.releasedAfterMs ?? '?'} ms after the lock, lock held ${r.lockHeldMs ?? '?'} ms (quiet after ${r.quietMs} ms, dump ${r.dumpMs} ms, catch-up ${r.catchUpMs} ms, promote ${r.promoteMs} ms); all relaying ${r.totalMs} ms after the request\n`);
  for (const [reason, n] of Object.entries(r.goodbyeBy)) process.stderr.write(`  told goodbye ${n}: ${reason}\n`);
  for (const [reason, n] of Object.entries(r.resetBy)) process.stderr.write(`  reset ${n}: ${reason}\n`);
  return r.reset > 0 || r.goodbyes > 0 ? EXIT_INCOMPLETE : EXIT_OK;
}
