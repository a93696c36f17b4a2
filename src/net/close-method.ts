// The ways a connection can be ended on behalf of a failed process (seed 000, FIG. 13).
import { goodbyePlugin, type GoodbyePlugin } from './goodbye/index.js';

export type CloseMethod =
  | { kind: 'rst' }
  | { kind: 'fin' }
  | { kind: 'break' }
  | { kind: 'goodbye'; plugin: GoodbyePlugin };

export const METHOD_HELP = 'rst | fin | break | goodbye:postgres | goodbye:http | goodbye:resp';

/** Parses `rst`, `fin`, `break` or `goodbye:<protocol>`; throws a TypeError naming the problem. */
export function parseCloseMethod(text: string): CloseMethod {
  if (text === 'rst' || text === 'fin' || text === 'break') return { kind: text };
  const m = /^goodbye:([a-z0-9-]+)$/.exec(text);
  if (m) return { kind: 'goodbye', plugin: goodbyePlugin(m[1]!) };
  throw new TypeError(`unknown close method "${text}" (expected ${METHOD_HELP})`);
}

export function methodName(m: CloseMethod): string {
  return m.kind === 'goodbye' ? `goodbye:${m.plugin.name}` : m.kind;
}
