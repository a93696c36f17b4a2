// A stand-in for the agent's own capture (OwnCapture): segments pushed by the test, flows set
// by it (each assignment is an update with a new generation, as in the addon's table).
import type { CaptureSource } from '../../src/agent/replication/local-connections.js';
import { TCP_ACK, type FlowRecord, type ParsedSegment } from '../../src/native.js';
import type { CaptureScope } from '../../src/net/flow-tracker.js';

export class FakeCapture implements CaptureSource {
  listeners = new Set<(s: ParsedSegment[]) => void>();
  private flows: Array<{ flow: FlowRecord; gen: number }> = [];
  private gen = 0;
  /** Assigning flows updates them: each gets a new generation, as the addon's table does. */
  set table(flows: FlowRecord[]) {
    const rest = this.flows.filter((f) => !flows.some((n) => n.a.port === f.flow.a.port));
    this.flows = [...rest, ...flows.map((flow) => ({ flow, gen: ++this.gen }))];
  }
  scope: CaptureScope | undefined;
  closed = false;
  onSegments(l: (s: ParsedSegment[]) => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  /** One fake stream serves both: the control segments are among the segments. */
  onControl(l: (s: ParsedSegment[]) => void) {
    return this.onSegments(l);
  }
  changedFlows(generation: number) {
    return { flows: this.flows.filter((f) => f.gen > generation).map((f) => f.flow), generation: this.gen };
  }
  findFlow(local: { address: string; port: number }, remote: { address: string; port: number }) {
    const f = this.flows.find(({ flow }) => flow.b.port === local.port && flow.a.port === remote.port)?.flow;
    return f && { local: f.b, remote: f.a };
  }
  setScope(scope: CaptureScope) {
    this.scope = scope;
  }
  /** As LocalConnections opens it: with the first scope. */
  open = (scope: CaptureScope) => {
    this.scope = scope;
    this.closed = false;
    return this;
  };
  close() {
    this.closed = true;
  }
  stats() {
    return { drops: 0 };
  }
  push(s: Partial<ParsedSegment>) {
    const seg = { family: 4, src: '', dst: '', sport: 0, dport: 0, seq: 0, ack: 0, flags: TCP_ACK, window: 0, urgentPointer: 0, payloadLength: s.payload?.length ?? 0, ...s } as ParsedSegment;
    for (const l of [...this.listeners]) l([seg]);
  }
}
