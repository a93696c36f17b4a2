// The network lock of a planned switchover (as CRIU locks the network before it dumps a
// process's connections): an nftables table that drops every segment to and from a service's
// address and port, both ways, except over loopback. While it holds, the service's connections
// neither receive (no request, no ACK can change a queue under the dump) nor send (a reply the
// server writes stays in its send queue, counted as sent and unacknowledged, and is dumped with
// it; the client retransmits what it sends, to whoever holds the address by then). A SYN to the
// port is dropped too: a new client retries and reaches the service where it lives next.
// Loopback is left alone: local clients cannot be moved to another host, and the agent's own
// checks of the local service still work. An inbound-only lock (`outbound: false`) lets the
// server's replies leave: the client's ACKs are still dropped, so nothing leaves a send queue
// and the dump is as exact, but a copy of the traffic (the backup's shadow) sees every reply
// the server wrote before the dump, which a PostgreSQL switchover needs to know the sessions.
// With `acks` it also lets in the client's pure ACKs (no payload, no SYN, FIN or RST), so a
// reply larger than the server's send buffer drains while the server finishes it (no request
// can arrive, and an ACK never moves RCV.NXT); `tighten()` drops them too before the dump, which
// must see queues nothing changes. IPv4 with IP options or IPv6 with extension headers is not
// recognised as a pure ACK: dropped, as before.
//
// The table is named as the RST guards are (guard-owner.ts), so a lock whose process was killed
// before it could remove it is swept by the next guard install or agent start.
import { randomBytes } from 'node:crypto';
import { run } from '../run-command.js';
import { familyOf } from './endpoint.js';
import { guardTableName, selfIdentity } from './guard-owner.js';

export interface LockOptions {
  /** Drop what the service sends too (default true); false: only what comes in. */
  outbound?: boolean;
  /** Let the client's pure ACKs in until tighten() (default false). */
  acks?: boolean;
}

/** TCP data offsets a header can have, 32-bit words (RFC 9293 §3.1). */
const DATA_OFFSETS = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/**
 * The input chain's rules (pure): accept the client's pure ACKs (`acks`: a segment with only the
 * ACK flag of SYN/FIN/RST/ACK whose IP length is its headers' alone, for each data offset), then
 * drop the rest of what comes to the service.
 */
function inboundRules(address: string, port: number, acks: boolean): string[] {
  const v4 = familyOf(address) === 4;
  const to = `iifname != "lo" ${v4 ? 'ip' : 'ip6'} daddr ${address} tcp dport ${port}`;
  const pureAck = acks
    ? DATA_OFFSETS.map((d) => `    ${to} tcp flags & (fin | syn | rst | ack) == ack tcp doff ${d} ${v4 ? `ip hdrlength 5 ip length ${20 + 4 * d}` : `ip6 nexthdr tcp ip6 length ${4 * d}`} accept`)
    : [];
  return [...pureAck, `    ${to} drop`];
}

/** The nftables ruleset of a lock table (pure; exported for its unit test). */
export function lockRuleset(table: string, address: string, port: number, options: LockOptions = {}): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`port ${port} is not 1..65535`);
  const ip = familyOf(address) === 4 ? 'ip' : 'ip6';
  return [
    `table inet ${table} {`,
    '  chain in {',
    '    type filter hook input priority -10; policy accept;',
    ...inboundRules(address, port, options.acks ?? false),
    '  }',
    ...(options.outbound ?? true
      ? ['  chain out {', '    type filter hook output priority -10; policy accept;', `    oifname != "lo" ${ip} saddr ${address} tcp sport ${port} drop`, '  }']
      : []),
    '}',
  ].join('\n');
}

/** The transaction that makes a lock's input chain drop everything again (pure; exported for its unit test). */
export function tightenRuleset(table: string, address: string, port: number): string {
  return [`flush chain inet ${table} in`, ...inboundRules(address, port, false).map((r) => `add rule inet ${table} in ${r.trim()}`)].join('\n');
}

export class NetworkLock {
  private removed = false;
  private constructor(
    readonly table: string,
    /** When the lock was in place (performance.now() ms). */
    readonly lockedAt: number,
    private readonly address: string,
    private readonly port: number,
  ) {}

  /** Drops the service's traffic both ways, or only what comes in (not on loopback). Throws with nft's message. */
  static async install(address: string, port: number, options: LockOptions = {}): Promise<NetworkLock> {
    const table = guardTableName(await selfIdentity(), randomBytes(4).toString('hex'));
    await run('nft', ['-f', '-'], lockRuleset(table, address, port, options));
    return new NetworkLock(table, performance.now(), address, port);
  }

  /** Drops the client's pure ACKs too (a lock installed with `acks`), in one nft transaction. Throws with nft's message. */
  async tighten(): Promise<void> {
    await run('nft', ['-f', '-'], tightenRuleset(this.table, this.address, this.port));
  }

  /** ms since the lock was in place. */
  heldMs(): number {
    return performance.now() - this.lockedAt;
  }

  /** Removes the table (once; later calls resolve at once). Throws with nft's message. */
  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    await run('nft', ['delete', 'table', 'inet', this.table]);
  }
}
