// The zod fields that every file takeover validates shares (the agent's config, the cluster's
// application objects), so that a name, an address or a command line follows one rule everywhere.
import net from 'node:net';
import { z } from 'zod';

export const name = z.string().regex(/^[A-Za-z0-9_.:@-]{1,128}$/, 'must be a name of 1-128 letters, digits and _.:@-');
export const ip = z.string().refine((s) => net.isIP(s) !== 0, 'must be an IPv4 or IPv6 address');
export const port = z.number().int().min(1).max(65535);
export const ms = (min: number, max: number) => z.number().int().min(min).max(max);
/** A command line: the program, then its arguments (which may be empty strings, e.g. `--save ''`). */
export const argv = z
  .array(z.string())
  .min(1)
  .refine((a) => a.length === 0 || a[0]!.length > 0, 'the program (first element) must not be empty');

/** Linux's rule for a device name (dev_valid_name): 1-15 bytes, no '/', ':' or whitespace, not . or .. */
export const ifname = z
  .string()
  .regex(/^[^\s/:]{1,15}$/, 'must be an interface name (1-15 characters, no /, : or spaces)')
  .refine((s) => s !== '.' && s !== '..', 'must be an interface name, not . or ..');


/** `instances[1].health.timeoutMs` from zod's path. */
export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i === 0 ? '' : '.'}${String(p)}`)).join('');
}

/** The first problem zod found, as the field it is about ('' for the top level) and what is wrong. */
export function firstIssue(error: z.ZodError): { field: string; message: string } {
  return describeIssue(error.issues[0]!);
}

function describeIssue(first: z.core.$ZodIssue): { field: string; message: string } {
  // A union (e.g. one takeover or a list of them) says only "Invalid input": name the deepest
  // mistake among its alternatives instead, under the union's path.
  if (first.code === 'invalid_union' && first.errors.length > 0) {
    const deepest = first.errors
      .map((branch) => branch[0])
      .filter((i): i is z.core.$ZodIssue => i !== undefined)
      .sort((x, y) => y.path.length - x.path.length)[0];
    if (deepest && deepest.path.length > 0) return describeIssue({ ...deepest, path: [...first.path, ...deepest.path] });
  }
  // zod words an unknown key as "Unrecognized key: x" on the parent: name the key itself.
  if (first.code === 'unrecognized_keys') return { field: fieldPath([...first.path, first.keys[0]!]), message: 'unknown field' };
  return { field: fieldPath(first.path), message: first.message };
}
