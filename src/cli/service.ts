// `takeover service stop|start NAME` and `takeover instance cleanup NAME`: planned changes
// through the local agent (see agent/planned-change.ts). The events it published for the change
// go to stdout (FAN lines, or with --json the whole report), what happened to each instance to
// stderr. Exit 0 when done; 1 when an instance did not come up; 2 when the agent refused (an
// unknown service or instance, a member NOT_RESTARTING: nothing was changed).
import { controlRequest, type ControlRequest } from '../agent/control.js';
import type { ChangeReport } from '../agent/planned-change.js';
import { printFan } from '../events/fan-line.js';
import { controlPath } from './control-path.js';
import { EXIT_INCOMPLETE, EXIT_OK, UsageError } from './errors.js';
import { intOption } from './parse-args.js';

export interface ChangeOptions {
  control?: string;
  config?: string;
  json?: boolean;
  drainMs?: string;
  waitMs?: string;
}

export async function serviceCommand(action: string, name: string, opts: ChangeOptions): Promise<number> {
  if (action !== 'stop' && action !== 'start') throw new UsageError(`service: the action must be stop or start, got "${action}"`);
  if (action === 'start' && opts.drainMs !== undefined) throw new UsageError('--drain-ms: only for service stop');
  if (action === 'stop' && opts.waitMs !== undefined) throw new UsageError('--wait-ms: only for service start');
  const req: ControlRequest = { cmd: 'service', action, name, ...msOptions(opts) };
  return change(req, `service ${name}`, opts);
}

export async function instanceCommand(action: string, name: string, opts: ChangeOptions): Promise<number> {
  if (action !== 'cleanup') throw new UsageError(`instance: the action must be cleanup, got "${action}"`);
  return change({ cmd: 'instance', action, name, ...msOptions(opts) }, `instance ${name}`, opts);
}

function msOptions(opts: ChangeOptions): { drainMs?: number; waitMs?: number } {
  return {
    ...(opts.drainMs !== undefined ? { drainMs: intOption('--drain-ms', opts.drainMs, 0, 86_400_000) } : {}),
    ...(opts.waitMs !== undefined ? { waitMs: intOption('--wait-ms', opts.waitMs, 0, 86_400_000) } : {}),
  };
}

async function change(req: ControlRequest, what: string, opts: ChangeOptions): Promise<number> {
  let reply: Record<string, unknown> | undefined;
  await controlRequest(await controlPath(opts), req, (msg) => (reply = msg));
  if (!reply) throw new Error('the agent closed the control connection without an answer');
  if (typeof reply.error === 'string') throw new UsageError(reply.error);
  const report = reply as unknown as ChangeReport;
  if (opts.json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else for (const e of report.events) process.stdout.write(`${printFan(e)}\n`);
  for (const i of report.instances) process.stderr.write(`${what}: ${i.instance}: ${i.note}\n`);
  return report.ok ? EXIT_OK : EXIT_INCOMPLETE;
}
