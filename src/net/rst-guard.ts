// While we speak for a dead side's address, this host's kernel answers every segment a peer
// sends to that address with a RST of its own (it has no socket for the connection). Such a RST
// is exact, so it would reset a peer we meant to give a FIN, an urgent byte or a goodbye. The
// guard is an nftables rule that drops those RSTs from the address unless they carry our mark
// (the forge sets SO_MARK on its raw socket).
//
// Only RSTs without ACK are dropped: the kernel's answer to a segment that carries an ACK (every
// segment of an established connection: data, ACK, FIN) is a bare RST, while its answer to a SYN
// (nothing listens on the port) is RST+ACK (RFC 9293 3.10.7.1). A guard therefore never turns a
// new client's ECONNREFUSED into a connect timeout, even while it is installed.
//
// A guard must not outlive the process that installed it: its table's name records the owner
// (guard-owner.ts), and sweepStaleGuards() removes the tables of owners that are gone (a process
// killed with SIGKILL). install() sweeps too, and the agent sweeps at start.
import { randomBytes } from 'node:crypto';
import { commandMissing, run } from '../run-command.js';
import { familyOf } from './endpoint.js';
import { FORGE_MARK } from './forge.js';
import { GUARD_TABLE_PREFIX, guardTableName, judgeGuardTable, processStartTicks, selfIdentity } from './guard-owner.js';

export interface GuardSweep {
  /** Guard tables removed: their owner was gone. */
  removed: string[];
  /** Guard tables of processes of another pid namespace, left alone (they cannot be judged from here). */
  foreign: string[];
}

/** The nftables ruleset of a guard table (exported for its unit test). */
export function guardRuleset(table: string, addresses: string[]): string {
  const rules = addresses.map((a) => {
    const match = familyOf(a) === 4 ? `ip saddr ${a}` : `ip6 saddr ${a}`;
    return `    meta mark != ${FORGE_MARK} ${match} tcp flags & (rst | ack) == rst drop`;
  });
  return [
    `table inet ${table} {`,
    '  chain out {',
    '    type filter hook output priority 0; policy accept;',
    ...rules,
    '  }',
    '}',
  ].join('\n');
}

/** The names of the inet tables in this network namespace; [] when nft is not installed. */
async function inetTables(): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await run('nft', ['list', 'tables', 'inet']));
  } catch (err) {
    // No nft binary: nothing can have installed a guard here.
    if (commandMissing(err)) return [];
    throw err;
  }
  return stdout
    .split('\n')
    .map((l) => /^table inet (\S+)$/.exec(l.trim())?.[1])
    .filter((t): t is string => t !== undefined);
}

/**
 * Removes, in this network namespace, every guard table whose owner is gone: a process killed
 * before it could remove its own (SIGKILL, a crash), or one of a version that did not record its
 * owner. Guards of live processes stay. Throws with nft's message when nft refuses (no
 * CAP_NET_ADMIN); a table that another sweep removed first is not an error.
 */
export async function sweepStaleGuards(): Promise<GuardSweep> {
  const self = await selfIdentity();
  const sweep: GuardSweep = { removed: [], foreign: [] };
  for (const table of await inetTables()) {
    if (!table.startsWith(GUARD_TABLE_PREFIX)) continue;
    const verdict = await judgeGuardTable(table, self, processStartTicks);
    if (verdict === 'foreign') sweep.foreign.push(table);
    if (verdict !== 'stale') continue;
    try {
      await run('nft', ['delete', 'table', 'inet', table]);
      sweep.removed.push(table);
    } catch (err) {
      if (!(await inetTables()).includes(table)) continue; // removed meanwhile by another sweep
      throw err;
    }
  }
  return sweep;
}

export class RstGuard {
  private removed = false;
  private constructor(
    readonly table: string,
    /** What the sweep that ran with the install removed (stale guards of dead owners). */
    readonly swept: GuardSweep,
  ) {}

  /**
   * Installs the guard (and sweeps stale guards at the same time, which costs no latency: two
   * nft processes run side by side). Throws with nft's own message when nft is missing or
   * refuses; a failed sweep alone does not fail the install.
   */
  static async install(addresses: string[]): Promise<RstGuard> {
    const table = guardTableName(await selfIdentity(), randomBytes(4).toString('hex'));
    const [, swept] = await Promise.all([
      run('nft', ['-f', '-'], guardRuleset(table, addresses)),
      sweepStaleGuards().catch((): GuardSweep => ({ removed: [], foreign: [] })),
    ]);
    return new RstGuard(table, swept);
  }

  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    await run('nft', ['delete', 'table', 'inet', this.table]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.remove();
  }
}
