// The registry of protocol goodbyes, by the name used in `--method goodbye:<name>`.
import { httpGoodbye } from './http.js';
import { postgresGoodbye } from './postgres.js';
import { respGoodbye } from './resp.js';
import type { GoodbyePlugin } from './types.js';

export type { BoundaryTracker, GoodbyePlugin } from './types.js';

const plugins = new Map<string, GoodbyePlugin>();

export function registerGoodbye(plugin: GoodbyePlugin): void {
  plugins.set(plugin.name, plugin);
}

export function goodbyePlugin(name: string): GoodbyePlugin {
  const p = plugins.get(name);
  if (!p) throw new TypeError(`unknown goodbye protocol "${name}" (known: ${[...plugins.keys()].join(', ')})`);
  return p;
}

export function goodbyeNames(): string[] {
  return [...plugins.keys()];
}

for (const p of [postgresGoodbye, httpGoodbye, respGoodbye]) registerGoodbye(p);
// Aliases users are likely to type.
plugins.set('pg', postgresGoodbye);
plugins.set('redis', respGoodbye);
