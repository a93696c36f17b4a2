// While we speak for a dead side's address, this host's kernel answers every segment a peer
// sends to that address with a RST of its own (it has no socket for the connection). Such a RST
// is exact, so it would reset a peer we meant to give a FIN, an urgent byte or a goodbye. The
// guard is an nftables rule that drops RSTs from the address unless they carry our mark
// (the forge sets SO_MARK on its raw socket).
import { randomBytes } from 'node:crypto';
import { run } from '../lab/exec.js';
import { familyOf } from './endpoint.js';
import { FORGE_MARK } from './forge.js';

export class RstGuard {
  private removed = false;
  private constructor(readonly table: string) {}

  /** Installs the guard; throws with nft's own message when nft is missing or refuses. */
  static async install(addresses: string[]): Promise<RstGuard> {
    const table = `takeover_guard_${randomBytes(4).toString('hex')}`;
    const rules = addresses.map((a) => {
      const match = familyOf(a) === 4 ? `ip saddr ${a}` : `ip6 saddr ${a}`;
      return `    meta mark != ${FORGE_MARK} ${match} tcp flags & rst == rst drop`;
    });
    const ruleset = [
      `table inet ${table} {`,
      '  chain out {',
      '    type filter hook output priority 0; policy accept;',
      ...rules,
      '  }',
      '}',
    ].join('\n');
    await run('nft', ['-f', '-'], ruleset);
    return new RstGuard(table);
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
