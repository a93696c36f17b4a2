// Publishes the node events of the heartbeat detector out of band, once per change for the whole
// cluster: every survivor sees the death, but only the survivor with the smallest node name
// among those it believes up publishes (all survivors hold the same view once the detector has
// decided, so exactly one speaks). The event's incarnation orders the changes of one node for
// subscribers' de-duplication: 2 × the node's own incarnation for its coming up, + 1 for its
// death, so a restart (a higher node incarnation) always sorts after the death before it.
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

  private handle(e: DetectorEvent): void {
    if (e.kind !== 'node-down' && e.kind !== 'node-up') return;
    if (!this.isPublisher(e.node)) return;
    const event: ServiceEvent =
      e.kind === 'node-down'
        ? nodeFailure(e.node, { incarnation: Number(e.incarnation) * 2 + 1, timestamp: new Date(e.at).toISOString(), reason: 'failure' })[0]!
        : { type: 'node', status: 'UP', node: e.node, incarnation: Number(e.incarnation) * 2, timestamp: new Date(e.at).toISOString(), reason: 'boot' };
    this.sink.publish(event);
  }
}
