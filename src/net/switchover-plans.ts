// What a planned switchover does with each connection the primary handed over (pure). The
// primary's states are exact (dumped from its kernel under the network lock), so nothing is
// proven against the clients: the receive queue holds requests the server never read (they are
// replayed to the new upstream, after the session preamble, and the socket is restored with
// RCV.NXT where it was and nothing left to read); the send queue holds replies the client has
// not acknowledged, restored as they were (sent again by the kernel if the client lacks them).
// Only the session (SELECT, AUTH, HELLO...) is not in the kernel. Best from the server itself
// (Redis: CLIENT LIST, taken under the lock): exact, and it also shows what the server holds that
// no dump sees (part of a request read, part of a reply not written), which makes a connection
// unmovable. Otherwise from this node's shadow, which followed the connections from their
// handshakes (a capture loss can leave it unable to follow a busy one; PostgreSQL's case, whose
// primary is locked inbound only so that every reply reaches the shadow): the shadow must have
// seen every byte the server wrote (up to the dumped send queue's end) and every request the
// server read must be answered in it, else its view of the session may lag the server's. A
// session inside a transaction keeps the shadow's plan for it (rebuilt, or its goodbye). A
// connection whose session is unknown or cannot be rebuilt (pub/sub, MULTI, blocked...) is reset
// exactly after its restore, with the reason; or, given a protocol goodbye (PostgreSQL's 57P01,
// once the barrier showed every backend waiting for its client: the streams are at message
// boundaries), told so after the replies it lacks.
import { canonicalAddress, type Endpoint } from './endpoint.js';
import { seqAdd, seqDiff } from './seq.js';
import type { ProtocolGoodbye, SessionPreamble } from './shadow/exchange-tracker.js';
import { encodeCommand } from './shadow/resp-continue.js';
import type { ContinuePlan, RestoreTransaction } from './shadow/shadow-connection.js';
import type { TcpRepairState } from './tcp-repair-state.js';

/**
 * A client's session as the server itself shows it (for Redis: CLIENT LIST, agent/redis-catch-up.ts):
 * the commands that rebuild it, the same with a login the server does not show (another user:
 * the shadow's AUTH is needed), or why it cannot be moved exactly.
 */
export type ServerSession =
  | { kind: 'session'; commands: string[][]; idleS?: number }
  | { kind: 'auth'; commands: string[][]; idleS?: number }
  | { kind: 'blocked'; reason: string };

/** RESP arrays of bulk strings, one per command, and how many replies they draw. */
function preambleOf(commands: string[][]): SessionPreamble {
  return { bytes: Buffer.concat(commands.map((c) => encodeCommand(c))), replies: commands.length };
}

/**
 * One plan per state, in order: 'restore' with the exact state (receive queue moved to the
 * replay) and the shadow's preamble, or 'reset' with the reason (the state's own numbers make
 * the close engine's RST exact: `dead.tracked` is left out, it probes). `sessions`: the server's
 * own account of each client's session (keyed "address|port" of the client), used instead of the
 * shadow's when given (the shadow then only lends a login's AUTH). lastSeenMs (the busiest are
 * restored first): `nowMs` less the server's idle time, else the shadow's, else `nowMs`.
 * `goodbye` (without `sessions`): what a connection that cannot be moved is told instead of a
 * reset, given why. Throws RangeError when a state is not of `address`.
 */
export function switchoverPlans(states: readonly TcpRepairState[], shadowPlans: readonly ContinuePlan[], address: string, nowMs: number, sessions?: ReadonlyMap<string, ServerSession>, goodbye?: (reason: string) => ProtocolGoodbye): ContinuePlan[] {
  const want = canonicalAddress(address);
  const byKey = new Map(shadowPlans.map((p) => [key(p.client, p.server), p]));
  return states.map((state): ContinuePlan => {
    const server = { address: canonicalAddress(state.local.address), port: state.local.port };
    const client = { address: canonicalAddress(state.remote.address), port: state.remote.port };
    if (server.address !== want) throw new RangeError(`a state of ${server.address} was handed over for ${want}`);
    const shadow = byKey.get(key(client, server));
    // When it was last active: the most active are restored (and relayed) first.
    let lastSeenMs = shadow?.kind === 'restore' ? shadow.lastSeenMs : 0;
    // Its goodbye, said after the replies the client lacks; what the server never read is dropped with the session.
    const sayGoodbye = (bye: ProtocolGoodbye): ContinuePlan => ({ kind: 'restore', server, client, state: { ...state, recv: { seq: seqAdd(state.recv.seq, state.recv.queue.length), queue: Buffer.alloc(0) } }, replay: Buffer.alloc(0), preamble: { bytes: Buffer.alloc(0), replies: 0 }, goodbye: bye, lastSeenMs: lastSeenMs || nowMs });
    const reset = (reason: string): ContinuePlan => (goodbye && !sessions ? sayGoodbye(goodbye(reason)) : { kind: 'reset', server, client, reason, dead: { local: server, peer: client } });
    let preamble: SessionPreamble;
    let transaction: RestoreTransaction | undefined;
    if (sessions) {
      // The server's own account wins: exact, and it sees what no copy of the traffic can.
      const s = sessions.get(`${client.address}|${client.port}`);
      if (!s) return reset('the server does not list this client: its session is unknown');
      if (s.kind === 'blocked') return reset(`it cannot be moved exactly: ${s.reason}`);
      if (s.idleS !== undefined) lastSeenMs = nowMs - s.idleS * 1000;
      if (s.kind === 'auth') {
        if (shadow?.kind !== 'restore' || shadow.goodbye) return reset(`logged in as another user, whose password only the shadow could tell: ${shadow ? (shadow.kind === 'reset' ? shadow.reason : 'a goodbye') : 'not shadowed'}`);
        preamble = shadow.preamble;
      } else preamble = preambleOf(s.commands);
    } else {
      if (!shadow) return reset('not shadowed here (opened before the shadow started, or its handshake was not seen): its session is unknown');
      if (shadow.kind === 'reset') return reset(`its session cannot be rebuilt: ${shadow.reason}`);
      const lag = shadowLag(state, shadow);
      if (lag) return reset(`the shadow's view of its session may lag the server's: ${lag}`);
      // Its own goodbye: PostgreSQL's 57P01 for a transaction it cannot rebuild.
      if (shadow.goodbye && !shadow.transaction) return sayGoodbye(shadow.goodbye);
      preamble = shadow.preamble;
      if (shadow.transaction) transaction = shadow.transaction;
    }
    const q = state.recv.queue;
    return {
      kind: 'restore',
      server,
      client,
      state: { ...state, recv: { seq: seqAdd(state.recv.seq, q.length), queue: Buffer.alloc(0) } },
      replay: Buffer.from(q),
      preamble,
      ...(transaction ? { transaction } : {}),
      lastSeenMs: lastSeenMs || nowMs,
    };
  });
}

/**
 * Why the shadow's plan may not know the session as the server left it, or undefined (pure):
 * the server wrote bytes past what the shadow saw (its send queue's end, SND.NXT of the write
 * side, beyond the shadow's last server byte), or the shadow holds unanswered requests that
 * begin before what the server had read (RCV.NXT less the unread queue): a request read whose
 * reply the shadow has not seen whole.
 */
export function shadowLag(state: TcpRepairState, shadow: Extract<ContinuePlan, { kind: 'restore' }>): string | undefined {
  const written = seqAdd(state.send.seq, state.send.queue.length);
  const seen = seqAdd(shadow.state.send.seq, shadow.state.send.queue.length);
  const unseen = seqDiff(seen, written);
  if (unseen > 0) return `the server wrote ${unseen} bytes the shadow has not seen`;
  const read = seqAdd(state.recv.seq, -state.recv.queue.length);
  // The client bytes the shadow holds past what the server read (sent after the lock, or unread).
  const pastRead = Math.max(0, seqDiff(read, shadow.state.recv.seq));
  const pending = shadow.replay.length;
  if (pending > pastRead) return `the server read ${pending - pastRead} bytes of requests whose replies the shadow has not seen`;
  return undefined;
}

function key(client: Endpoint, server: Endpoint): string {
  return `${canonicalAddress(client.address)}|${client.port}|${canonicalAddress(server.address)}|${server.port}`;
}
