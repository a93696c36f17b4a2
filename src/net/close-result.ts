// What closing one connection did, for the CLI's report and the library's callers.
import type { Endpoint } from './endpoint.js';

export type CloseOutcome =
  /** The peer's connection was reset (RST accepted, or its kernel no longer knows it). */
  | 'reset'
  /** The peer acknowledged our FIN: its read returned end-of-file. */
  | 'closed'
  /** The peer acknowledged the urgent byte. */
  | 'urgent-delivered'
  /** The peer acknowledged the protocol goodbye and the FIN after it. */
  | 'goodbye-delivered'
  /** The peer answered with a RST: it had no such connection any more. */
  | 'not-connected'
  | 'failed';

export interface CloseResult {
  /** The failed side of the connection (whose address we speak for). */
  local: Endpoint;
  peer: Endpoint;
  /** The method asked for. */
  method: string;
  /** What was actually sent last ('rst' or 'fin' after a fallback). */
  action: string;
  /** Sequence number of the closing segment (the peer's RCV.NXT), when one was sent. */
  seq?: number;
  ack?: number;
  /**
   * Where the exact sequence number came from: tracking, the peer's RFC 5961 challenge ACK,
   * its duplicate ACK to our out-of-window probe, a data segment of its own (a retransmission),
   * or the local socket itself.
   */
  seqSource?: 'tracked' | 'challenge-ack' | 'dup-ack' | 'peer-segment' | 'socket';
  outcome: CloseOutcome;
  ok: boolean;
  /**
   * True when an answer from the peer proves the outcome (its RST to our probe, its ACK of our
   * FIN or data). An exact RST learned from a challenge ACK is final by RFC 5961 but unanswered.
   */
  verified: boolean;
  /**
   * Why the method asked for was not used; when one fallback led to another (a goodbye into a
   * zero window: FIN, then RST), each reason in order, joined by '; '.
   */
  fallback?: string;
  error?: string;
  elapsedMs: number;
}

/** What closing many connections did, in a few numbers (for logs and events: not 10,000 lines). */
export interface CloseSummary {
  connections: number;
  /** How many ended each way (reset, closed, goodbye-delivered, ...). */
  outcomes: Partial<Record<CloseOutcome, number>>;
  /** What was sent (rst after a fallback counts as rst). */
  actions: Record<string, number>;
  /** Where the sequence numbers came from. */
  seqSources: Record<string, number>;
  /** How many of the outcomes an answer of the peer proves. */
  verified: number;
  /** Why the method asked for was not used, with how often. */
  fallbacks: Record<string, number>;
  /** The first few that failed, in full. */
  failures: CloseResult[];
}

const FAILURES_SHOWN = 10;

export function summarizeResults(results: readonly CloseResult[]): CloseSummary {
  const s: CloseSummary = { connections: results.length, outcomes: {}, actions: {}, seqSources: {}, verified: 0, fallbacks: {}, failures: [] };
  for (const r of results) {
    s.outcomes[r.outcome] = (s.outcomes[r.outcome] ?? 0) + 1;
    s.actions[r.action] = (s.actions[r.action] ?? 0) + 1;
    if (r.seqSource) s.seqSources[r.seqSource] = (s.seqSources[r.seqSource] ?? 0) + 1;
    if (r.verified) s.verified++;
    if (r.fallback) s.fallbacks[r.fallback] = (s.fallbacks[r.fallback] ?? 0) + 1;
    if (!r.ok && s.failures.length < FAILURES_SHOWN) s.failures.push(r);
  }
  return s;
}
