// `takeover flows`: the live table of tracked TCP flows on an interface, or (--peer) a peer's
// connections as its agent replicated them to the local agent.
import type { PeerFlows } from '../agent/agent.js';
import { controlRequest } from '../agent/control.js';
import { FlowTracker } from '../net/flow-tracker.js';
import { formatEndpoint } from '../net/endpoint.js';
import type { FlowRecord } from '../native.js';
import { controlPath } from './control-path.js';
import { EXIT_OK, requireCapabilities, UsageError } from './errors.js';
import { table } from './output.js';
import { addressOption, interfaceOption, intOption, portOption } from './parse-args.js';

export interface FlowsOptions {
  interface?: string;
  peer?: string;
  control?: string;
  config?: string;
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

/** The replicated table of a peer, for people: one line per connection. */
export function peerFlowsTable(f: PeerFlows): string {
  const now = Date.now();
  const rows = [['SERVICE', 'PEER', 'SERVER NEXT SEQ', 'PEER ACK', 'PEER NEXT SEQ', 'TSVAL', 'BOUNDARY', 'AGE MS']];
  for (const c of f.connections) {
    const s = c.state;
    rows.push([
      formatEndpoint(c.local),
      formatEndpoint(c.peer),
      s ? String(s.deadNextSeq) : '-',
      s ? String(s.peerAck) : '-',
      s ? String(s.peerNextSeq) : '-',
      s?.deadTsval !== undefined ? String(s.deadTsval) : '-',
      c.boundary ? (c.boundary.atBoundary ? 'yes' : `no: ${c.boundary.reason}`) : '-',
      String(Math.max(0, Math.round(now - c.observedAt))),
    ]);
  }
  return table(rows);
}

async function peerFlows(o: FlowsOptions): Promise<number> {
  if (o.interface || o.port || o.host || o.count) throw new UsageError('--peer reads the agent\'s copy: it takes no --interface, --port, --host or --count');
  let answer: PeerFlows | undefined;
  let error: string | undefined;
  await controlRequest(await controlPath(o), { cmd: 'flows', peer: o.peer! }, (msg) => {
    if (typeof msg.error === 'string') error = msg.error;
    else answer = msg as unknown as PeerFlows;
  });
  if (error?.startsWith('unknown peer')) throw new UsageError(error);
  if (error || !answer) throw new Error(error ?? 'the agent closed the control connection without an answer');
  if (o.json) {
    process.stdout.write(`${JSON.stringify(answer)}\n`); // one line: a copy may hold 100,000 connections
    return EXIT_OK;
  }
  const s = answer.status;
  const age = s?.lastUpdateAgeMs === undefined ? 'nothing received yet' : `last update ${Math.round(s.lastUpdateAgeMs)} ms ago`;
  const head = s
    ? `peer ${answer.peer} (${s.up ? 'up' : 'DOWN: the copy is frozen'}): ${s.connections} connections known, ${s.synced ? `synced (epoch ${s.epoch})` : 'not synced yet'}, ${age}`
    : `peer ${answer.peer}: no takeover of it is configured here, so nothing is replicated`;
  process.stdout.write(`${head}\n${answer.connections.length ? `${peerFlowsTable(answer)}\n` : ''}`);
  return EXIT_OK;
}

export async function flowsCommand(o: FlowsOptions): Promise<number> {
  if (o.peer !== undefined) return peerFlows(o);
  if (o.interface === undefined) throw new UsageError('give --interface IF (flows seen here) or --peer NODE (a peer\'s replicated connections)');
  const ifname = await interfaceOption(o.interface);
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
