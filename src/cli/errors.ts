// How the CLI fails: a usage or environment problem is one clear line on stderr and exit 2;
// a run where some connection could not be closed exits 1.
export const EXIT_OK = 0;
export const EXIT_INCOMPLETE = 1;
export const EXIT_USAGE = 2;

/** An error the CLI reports as one line and exit code 2 (bad arguments, missing privileges). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

const CAPS: Record<string, number> = { CAP_NET_ADMIN: 12, CAP_NET_RAW: 13, CAP_SYS_PTRACE: 19 };

/** Capabilities in the effective set, read from /proc/self/status. */
export async function effectiveCapabilities(): Promise<Set<string>> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  const mask = BigInt(`0x${hex}`);
  return new Set(Object.entries(CAPS).filter(([, bit]) => (mask >> BigInt(bit)) & 1n).map(([name]) => name));
}

/** Throws a UsageError naming every missing capability and what needs it. */
export async function requireCapabilities(what: string, names: string[]): Promise<void> {
  const have = await effectiveCapabilities();
  const missing = names.filter((n) => !have.has(n));
  if (missing.length > 0) throw new UsageError(`${what} needs ${missing.join(' and ')} (run as root): missing privileges`);
}
