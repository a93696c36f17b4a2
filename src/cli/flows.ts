// `takeover flows`: the live table of tracked TCP flows on an interface.
import { FlowTracker } from '../net/flow-tracker.js';
import { formatEndpoint } from '../net/endpoint.js';
import type { FlowRecord } from '../native.js';
import { EXIT_OK, requireCapabilities } from './errors.js';
import { table } from './output.js';
import { addressOption, interfaceOption, intOption, portOption } from './parse-args.js';

export interface FlowsOptions {
  interface: string;
  port?: string;
  host?: string;
  intervalMs: string;
  count?: string;
  json?: boolean;
}

export function flowsTable(flows: FlowRecord[]): string {
  const rows = [['A', 'B', 'STATE', 'A NEXT SEQ', 'B NEXT SEQ', 'A ACK', 'B ACK', 'WINDOWS', 'IDLE MS']];
  const now = Date.now();
  for (const f of flows) {
    rows.push([
      formatEndpoint(f.a),
      formatEndpoint(f.b),
      f.state + (f.handshakeSeen ? '' : '*'),
      String(f.a.nextSeq),
      String(f.b.nextSeq),
      String(f.a.ack),
      String(f.b.ack),
      `${f.a.window}/${f.b.window}`,
      String(Math.max(0, Math.round(now - f.lastSeenMs))),
    ]);
  }
  return table(rows);
}

export async function flowsCommand(o: FlowsOptions): Promise<number> {
  const ifname = interfaceOption(o.interface);
  const port = o.port === undefined ? undefined : portOption('--port', o.port);
  const host = o.host === undefined ? undefined : addressOption('--host', o.host);
  const interval = intOption('--interval-ms', o.intervalMs, 10, 3_600_000);
  const count = o.count === undefined ? Infinity : intOption('--count', o.count, 1, 1_000_000_000);
  await requireCapabilities('flows', ['CAP_NET_RAW']);
  const tracker = new FlowTracker({ interface: ifname, ...(port ? { ports: [port] } : {}), ...(host ? { hosts: [host] } : {}) });
  tracker.start();
  let stop = false;
  const onSignal = () => {
    stop = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (let i = 0; i < count && !stop; i++) {
      await new Promise((r) => setTimeout(r, interval));
      const flows = tracker.flows();
      if (o.json) process.stdout.write(`${JSON.stringify({ time: Date.now(), interface: ifname, flows })}\n`);
      else process.stdout.write(`${flowsTable(flows)}\n${flows.length} flows (* = joined mid-stream)\n\n`);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    tracker.close();
  }
  return EXIT_OK;
}
