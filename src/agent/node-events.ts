// Publishes the node events of the heartbeat detector out of band, once per change for the whole
// cluster: every survivor sees the death, but only the survivor with the smallest node name
// among those it believes up publishes (all survivors hold the same view once the detector has
// decided, so exactly one speaks).
// The event's incarnation orders the changes of one node for subscribers' de-duplication
// (IncarnationFilter drops anything not above the last it took), and must be the same on every
// agent for the same change, since another agent may publish it too. It is the time, in µs since
// the epoch, of the node's own heartbeat that showed the change, as the node's clock stamped it:
// UP is the first heartbeat heard, DOWN the newest heard + 1 µs. All agents read the same
// heartbeat, so they number alike; the sender's clock is monotonic within an incarnation, so a
// heal (UP) sorts after the DOWN before it and the next death after that UP, however many times
// one incarnation is cut off and heard again; a restart sorts after the last life's events as
// long as the node's wall clock did not step back across the restart. Per node the number never
// falls here (one above the last one if it would), so one agent's events are always in order.
// The numbers are on the scale of the agent's other events (µs since the epoch).
import type { NodeEventSource } from '../monitor/witnessed-node-events.js';
import type { DetectorEvent } from '../monitor/failure-detector.js';
import { nodeFailure } from '../events/scenarios.js';
import type { ServiceEvent } from '../events/service-event.js';

/** Where events go: a NotificationServer, or the agent's publishing pipeline. */
export interface EventSink {
  publish(event: ServiceEvent): void;
}

export class NodeEventPublisher {
  private readonly onEvent = (e: DetectorEvent) => this.handle(e);
  /** Per node, the event of its last change as numbered here (published or not). */
  private readonly changes = new Map<string, ServiceEvent>();

  constructor(
    private readonly self: string,
    private readonly heartbeat: NodeEventSource,
    private readonly sink: EventSink,
  ) {
    heartbeat.on('event', this.onEvent);
  }

  close(): void {
    this.heartbeat.off('event', this.onEvent);
  }

  /** True when this agent is the one to speak for the cluster about `about`. */
  isPublisher(about: string): boolean {
    const up = this.heartbeat.detector.status().filter((p) => p.up && p.node !== about).map((p) => p.node);
    return [this.self, ...up].sort()[0] === this.self;
  }

  /** The event of `node`'s last change as this agent numbered it (whether or not it published it). */
  lastChange(node: string): ServiceEvent | undefined {
    const e = this.changes.get(node);
    return e && { ...e };
  }

  private handle(e: DetectorEvent): void {
    if (e.kind !== 'node-down' && e.kind !== 'node-up') return;
    const incarnation = Math.max(nodeEventNumber(e), (this.changes.get(e.node)?.incarnation ?? -1) + 1);
    const stamp = { incarnation, timestamp: new Date(e.at).toISOString() };
    const event: ServiceEvent =
      e.kind === 'node-down' ? nodeFailure(e.node, { ...stamp, reason: 'failure' })[0]! : { type: 'node', status: 'UP', node: e.node, ...stamp, reason: 'boot' };
    this.changes.set(e.node, event);
    if (this.isPublisher(e.node)) this.sink.publish(event);
  }
}

/**
 * The number every agent gives this change (see the top of the file): the sender's send time in
 * µs of the first heartbeat heard (UP) or of the newest heard + 1 (DOWN); the observer's `at` for
 * an event without it, or with a time that is not a positive safe number of µs.
 */
export function nodeEventNumber(e: Extract<DetectorEvent, { kind: 'node-up' | 'node-down' }>): number {
  const sent = e.kind === 'node-up' ? e.sentAtMs : e.lastSentAtMs;
  const us = micros(sent) ?? micros(e.at) ?? 0;
  return e.kind === 'node-up' ? us : us + 1;
}

function micros(ms: number | undefined): number | undefined {
  if (ms === undefined || !Number.isFinite(ms) || ms <= 0) return undefined;
  const us = Math.floor(ms * 1000);
  return us < Number.MAX_SAFE_INTEGER ? us : undefined;
}
