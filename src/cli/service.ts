// `takeover service stop|start NAME`: a planned change through the local agent, which publishes
// GOING_DOWN then DOWN (reason user), or COMING_UP then UP, for its members of the service.
import { controlRequest } from '../agent/control.js';
import { printFan } from '../events/fan-line.js';
import type { ServiceEvent } from '../events/service-event.js';
import { controlPath } from './control-path.js';
import { UsageError } from './errors.js';

export async function serviceCommand(action: string, name: string, opts: { control?: string; config?: string; json?: boolean }): Promise<number> {
  if (action !== 'stop' && action !== 'start') throw new UsageError(`service: the action must be stop or start, got "${action}"`);
  let reply: Record<string, unknown> | undefined;
  await controlRequest(await controlPath(opts), { cmd: 'service', action, name }, (msg) => (reply = msg));
  if (!reply) throw new Error('the agent closed the control connection without an answer');
  if (typeof reply.error === 'string') throw new UsageError(reply.error);
  const events = reply.events as ServiceEvent[];
  if (opts.json) process.stdout.write(`${JSON.stringify(events)}\n`);
  else if (events.length === 0) process.stdout.write(`service ${name}: nothing to do (already ${action === 'stop' ? 'stopped' : 'started'} here)\n`);
  else for (const e of events) process.stdout.write(`${printFan(e)}\n`);
  return 0;
}
