// The lines `takeover status` prints under its peer table: since when each peer is in its state,
// why it was declared dead, what was taken over from it and how that went.
import type { AgentStatus } from '../agent/agent.js';
import type { TakeoverRecord } from '../agent/agent-history.js';

type Peer = AgentStatus['peers'][number];

/** `2025-11-29T20:45:01.234Z (12.3 s ago)`; `now` in ms since the epoch. */
export function formatSince(at: number, now: number): string {
  return `${new Date(at).toISOString()} (${formatAge(now - at)} ago)`;
}

/** An age in ms as an operator reads it: 350 ms, 12.3 s, 4 min 5 s, 3 h 2 min. */
export function formatAge(ms: number): string {
  const t = Math.max(0, ms);
  if (t < 1000) return `${Math.round(t)} ms`;
  if (t < 60_000) return `${(t / 1000).toFixed(1)} s`;
  if (t < 3_600_000) return `${Math.floor(t / 60_000)} min ${Math.floor((t % 60_000) / 1000)} s`;
  return `${Math.floor(t / 3_600_000)} h ${Math.floor((t % 3_600_000) / 60_000)} min`;
}

function takeoverLine(t: TakeoverRecord, now: number): string {
  const what = `${t.address.includes(':') ? `[${t.address}]` : t.address}:${t.port}`;
  const when = `${formatSince(t.at, now)}, ${Math.round(t.at - t.decidedAt)} ms after the decision`;
  if (t.result === 'failed') return `  took over ${what}: FAILED ${when}: ${t.error ?? 'no reason given'}`;
  if (t.result === 'abandoned') return `  did not take over ${what} ${when}: ${t.error ?? 'no reason given'}`;
  const held = t.lease?.heldPastLeaseMs !== undefined ? `; its kernel kept the address at least ${formatAge(t.lease.heldPastLeaseMs)} past the lease (${t.lease.heldBy})` : '';
  const lease = t.lease ? `, after waiting out its ${t.lease.seconds} s address lease (${formatAge(t.lease.waitedMs)}${held})` : '';
  const address = (t.addressAdded === undefined ? '' : t.addressAdded ? ', address added here' : ', address was already here') + lease;
  const closedOrOpen = t.result === 'ok' ? `${t.connections} connection(s) closed` : `${t.notClosed} of ${t.connections} connection(s) LEFT OPEN`;
  const closed = t.continued === undefined ? closedOrOpen : `${t.continued} connection(s) continued here, ${closedOrOpen}`;
  return `  took over ${what} ${when}: ${t.result}, ${closed}${address}`;
}

/** Per peer: its state since when, why it was declared dead, a suspicion under way, its takeovers. */
export function peerLines(peers: Peer[], now: number): string[] {
  const out: string[] = [];
  for (const p of peers) {
    if (!p.heard) {
      out.push(`peer ${p.node}: never heard since this agent started`);
      continue;
    }
    const state = p.up ? 'up' : p.left ? `left (a planned departure${p.left.serving ? '; its instances still run' : ''})` : 'DOWN';
    const head = `peer ${p.node}: ${state}${p.since !== undefined ? ` since ${formatSince(p.since, now)}` : ''}`;
    if (p.suspected) out.push(`${head}: silent on every link, not declared dead: ${p.suspected.disputedBy ? `witness ${p.suspected.disputedBy} disagrees` : 'asking the witnesses'}`);
    else if (!p.up && p.death) out.push(`${head}: ${p.death.why}`);
    else out.push(p.death ? `${head}; last declared dead ${formatSince(p.death.at, now)}: ${p.death.why}` : head);
    for (const t of p.takenOver ?? []) out.push(takeoverLine(t, now));
  }
  return out;
}
