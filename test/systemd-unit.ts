// docs/examples/takeover-agent.service (and takeover-relay-keeper.service) read as systemd reads its settings, for the tests that
// check it (test/unit/systemd-unit.test.ts) and run agents under its capabilities
// (test/lab/systemd-capabilities.test.ts).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const UNIT_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'examples', 'takeover-agent.service');
/** docs/examples/takeover-relay-keeper.service */
export const KEEPER_UNIT_FILE = path.join(path.dirname(UNIT_FILE), 'takeover-relay-keeper.service');

/** The unit's settings, all sections together: key -> every value given, in order. */
export function unitSettings(text = readFileSync(UNIT_FILE, 'utf8')): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#') || t.startsWith('[')) continue;
    const eq = t.indexOf('=');
    m.set(t.slice(0, eq), [...(m.get(t.slice(0, eq)) ?? []), t.slice(eq + 1)]);
  }
  return m;
}

/**
 * `setpriv` arguments that give a root process what the unit gives the agent: no capability
 * beyond CapabilityBoundingSet, and no_new_privs when NoNewPrivileges=yes. (The unit's file-system
 * and address-family restrictions need systemd itself; they are checked by reading, not run.)
 */
export function unitPrivileges(file = UNIT_FILE): string[] {
  const s = unitSettings(readFileSync(file, 'utf8'));
  const caps = s.get('CapabilityBoundingSet')![0]!.split(/\s+/).map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`);
  return [...(s.get('NoNewPrivileges')?.[0] === 'yes' ? ['--no-new-privs'] : []), '--inh-caps=-all', '--ambient-caps=-all', `--bounding-set=-all,${caps.join(',')}`];
}
