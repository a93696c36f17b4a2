// This node's own service traffic, captured two ways for connection replication (issue 9):
// - the state: a ring on every interface (a wake-up per block of packets, cheap under load)
//   feeds the flow table (sequence numbers, windows, timestamps) and hands over data segments
//   and SYNs when streams are followed for goodbyes;
// - the control: a second socket whose BPF filter lets in only SYN, FIN and RST segments, each
//   handed over the moment it arrives, so that an open or a close is replicated within a
//   fraction of a millisecond however busy the connections are (one wake-up per packet of
//   everything would cost a third of a core at 1,000 connections opened and closed a second).
import { TCP_FIN, TCP_RST, TCP_SYN, type CaptureStats, type FlowRecord, type ParsedSegment } from '../../native.js';
import type { Endpoint } from '../../net/endpoint.js';
import { FlowTracker, type CaptureScope, type FoundFlow } from '../../net/flow-tracker.js';
import type { CaptureSource } from './local-connections.js';

const CONTROL = TCP_SYN | TCP_FIN | TCP_RST;

export class OwnCapture implements CaptureSource {
  private readonly state: FlowTracker;
  private readonly control: FlowTracker;

  constructor(scope: CaptureScope) {
    // SYNs start the followed streams, FINs and RSTs end them; data is handed over only when
    // payload is asked for. Its latency does not matter (opens and closes come through the
    // control socket), its losses do (an idle connection whose handshake is lost never shows its
    // state again): 64 blocks of 256 KiB handed over every 20 ms, so a loop busy for a second
    // loses nothing. Its ring is set up on a libuv worker (background): opened when a peer first
    // subscribes, it would otherwise hold the loop, and the heartbeats, for a grace period. What
    // it misses meanwhile the next scan finds.
    this.state = new FlowTracker({ interface: 'any', deliverFlags: CONTROL, blockSize: 256 * 1024, blockCount: 64, blockTimeoutMs: 20, background: true, ...scope });
    this.control = new FlowTracker({ interface: 'any', wakeup: 'packet', flagsAny: CONTROL, trackFlows: false, ports: scope.ports ?? [] });
    this.state.start();
    try {
      this.control.start();
    } catch (err) {
      this.state.close(); // nothing left open by a capture that failed to start
      throw err;
    }
  }

  /** The state capture's delivered segments: SYN, FIN and RST, and data when payload is captured. */
  onSegments(listener: (segments: ParsedSegment[]) => void): () => void {
    return this.state.onSegments(listener);
  }

  /** SYN, FIN and RST segments, each as it arrives. */
  onControl(listener: (segments: ParsedSegment[]) => void): () => void {
    return this.control.onSegments(listener);
  }

  changedFlows(generation: number): { flows: FlowRecord[]; generation: number } {
    return this.state.changedFlows(generation);
  }

  findFlow(local: Endpoint, remote: Endpoint): FoundFlow | undefined {
    return this.state.findFlow(local, remote);
  }

  setScope(scope: CaptureScope): void {
    this.state.setScope(scope);
    this.control.setScope({ ...(scope.hosts ? { hosts: scope.hosts } : {}), ...(scope.ports ? { ports: scope.ports } : {}) });
  }

  stats(): Pick<CaptureStats, 'drops'> {
    return { drops: this.state.stats().drops + this.control.stats().drops };
  }

  close(): void {
    this.state.close();
    this.control.close();
  }
}
