// Which agent a control command talks to: --control PATH, or the control socket named by
// --config FILE, or the only agent socket under /run/takeover.
import { readdir } from 'node:fs/promises';
import { DEFAULT_CONTROL_DIR, defaultControlPath } from '../agent/control.js';
import { UsageError } from './errors.js';

export async function controlPath(opts: { control?: string; config?: string }): Promise<string> {
  if (opts.control) return opts.control;
  if (opts.config) {
    // Loaded only here: the config's schemas are most of a control command's start (~0.25 s).
    const { ConfigError, loadConfig } = await import('../agent/config.js');
    try {
      const c = await loadConfig(opts.config);
      return c.control ?? defaultControlPath(c.node);
    } catch (err) {
      if (err instanceof ConfigError) throw new UsageError(err.message);
      throw err;
    }
  }
  const socks = (await readdir(DEFAULT_CONTROL_DIR).catch(() => [] as string[])).filter((n) => n.endsWith('.sock'));
  if (socks.length === 1) return `${DEFAULT_CONTROL_DIR}/${socks[0]}`;
  // No agent is "cannot be reached" (exit 1, like a socket nobody listens on); several is a usage problem.
  if (socks.length === 0) {
    throw Object.assign(new Error(`no agent found under ${DEFAULT_CONTROL_DIR}: is \`takeover agent\` running? (or give --control / --config)`), { code: 'ENOENT' });
  }
  throw new UsageError(`several agents under ${DEFAULT_CONTROL_DIR}: give --control or --config`);
}
