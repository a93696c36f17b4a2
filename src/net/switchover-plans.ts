// What a planned switchover does with each connection the primary handed over (pure). The
// primary's states are exact (dumped from its kernel under the network lock), so nothing is
// proven against the clients: the receive queue holds requests the server never read (they are
// replayed to the new upstream, after the session preamble, and the socket is restored with
// RCV.NXT where it was and nothing left to read); the send queue holds replies the client has
// not acknowledged, restored as they were (sent again by the kernel if the client lacks them).
// Only the session (SELECT, AUTH, HELLO... what the protocol plugin keeps) comes from this
// node's shadow of the primary's connections, which followed them from their handshakes: a
// connection the shadow does not know, or whose session it cannot rebuild (the plugin's
// blockers: pub/sub, MULTI, ...), is reset exactly after its restore, with the reason.
import { canonicalAddress, type Endpoint } from './endpoint.js';
import { seqAdd } from './seq.js';
import type { ContinuePlan } from './shadow/shadow-connection.js';
import type { TcpRepairState } from './tcp-repair-state.js';

/**
 * One plan per state, in order: 'restore' with the exact state (receive queue moved to the
 * replay) and the shadow's preamble, or 'reset' with the reason (the state's own numbers make
 * the close engine's RST exact: `dead.tracked` is left out, it probes). `nowMs` stamps
 * lastSeenMs for states the shadow saw (its own value is kept) so the busiest go first.
 * Throws RangeError when a state is not of `address`.
 */
export function switchoverPlans(states: readonly TcpRepairState[], shadowPlans: readonly ContinuePlan[], address: string, nowMs: number): ContinuePlan[] {
  const want = canonicalAddress(address);
  const byKey = new Map(shadowPlans.map((p) => [key(p.client, p.server), p]));
  return states.map((state): ContinuePlan => {
    const server = { address: canonicalAddress(state.local.address), port: state.local.port };
    const client = { address: canonicalAddress(state.remote.address), port: state.remote.port };
    if (server.address !== want) throw new RangeError(`a state of ${server.address} was handed over for ${want}`);
    const shadow = byKey.get(key(client, server));
    const reset = (reason: string): ContinuePlan => ({ kind: 'reset', server, client, reason, dead: { local: server, peer: client } });
    if (!shadow) return reset('not shadowed here (opened before the shadow started, or its handshake was not seen): its session is unknown');
    if (shadow.kind === 'reset') return reset(`its session cannot be rebuilt: ${shadow.reason}`);
    if (shadow.goodbye) return reset(`its session cannot be rebuilt: ${shadow.goodbye.reason}`);
    const q = state.recv.queue;
    return {
      kind: 'restore',
      server,
      client,
      state: { ...state, recv: { seq: seqAdd(state.recv.seq, q.length), queue: Buffer.alloc(0) } },
      replay: Buffer.from(q),
      preamble: shadow.preamble,
      lastSeenMs: shadow.lastSeenMs || nowMs,
    };
  });
}

function key(client: Endpoint, server: Endpoint): string {
  return `${canonicalAddress(client.address)}|${client.port}|${canonicalAddress(server.address)}|${server.port}`;
}
