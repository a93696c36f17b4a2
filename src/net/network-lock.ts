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
}

/** The nftables ruleset of a lock table (pure; exported for its unit test). */
export function lockRuleset(table: string, address: string, port: number, options: LockOptions = {}): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`port ${port} is not 1..65535`);
  const ip = familyOf(address) === 4 ? 'ip' : 'ip6';
  return [
    `table inet ${table} {`,
    '  chain in {',
    '    type filter hook input priority -10; policy accept;',
    `    iifname != "lo" ${ip} daddr ${address} tcp dport ${port} drop`,
    '  }',
    ...(options.outbound ?? true
      ? ['  chain out {', '    type filter hook output priority -10; policy accept;', `    oifname != "lo" ${ip} saddr ${address} tcp sport ${port} drop`, '  }']
      : []),
    '}',
  ].join('\n');
}

export class NetworkLock {
  private removed = false;
  private constructor(
    readonly table: string,
    /** When the lock was in place (performance.now() ms). */
    readonly lockedAt: number,
  ) {}

  /** Drops the service's traffic both ways, or only what comes in (not on loopback). Throws with nft's message. */
  static async install(address: string, port: number, options: LockOptions = {}): Promise<NetworkLock> {
    const table = guardTableName(await selfIdentity(), randomBytes(4).toString('hex'));
    await run('nft', ['-f', '-'], lockRuleset(table, address, port, options));
    return new NetworkLock(table, performance.now());
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
