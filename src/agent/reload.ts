// What a configuration reload (SIGHUP, `systemctl reload`) may change in a running agent. Only
// parts that hold no membership or network state are swapped live: a changed node, link, peer,
// key, instance or takeover would change what the peers and the kernel were told, so those need
// a restart (a planned departure and a new incarnation), and a reload that touches them is
// refused as a whole, naming the fields, while the running configuration stays in force.
import { isDeepStrictEqual } from 'node:util';
import type { AgentConfig } from './config.js';

/** Top-level fields a reload applies without a restart. */
export const RELOADABLE: ReadonlySet<string> = new Set(['callouts', 'uptimeLog', 'log']);

/** Top-level fields that differ between two validated configurations, in the schema's order. */
export function changedFields(running: AgentConfig, next: AgentConfig): string[] {
  const keys = [...new Set([...Object.keys(running), ...Object.keys(next)])];
  return keys.filter((k) => !isDeepStrictEqual((running as Record<string, unknown>)[k], (next as Record<string, unknown>)[k]));
}

export class ReloadRefusedError extends Error {
  override readonly name = 'ReloadRefusedError';
  constructor(readonly fields: string[]) {
    super(`reload refused: ${fields.join(', ')} changed, which needs a restart of the agent (the running configuration stays in force)`);
  }
}
