// The replication link's two paths (seed 004, [0031] and [0039]: link 78 is a main link 82 and a
// failsafe link 86, and the system stays normal while either works): the backup's addresses on
// each, their checks, and which one the primary dials next after a connection ends. Pure: no
// I/O, no clock (the caller passes the times).
//
// The choice: a connection that carried the mirror (its START accepted) and ended because the
// link or the backup failed (closed, no ACK, a bad frame) is followed at once, with no pause, by
// a dial on the other link: every millisecond spent there is spent out of the normal state.
// Anything else (a dial that failed, a handshake that timed out) alternates the two links with
// the usual backoff, so with both down each is tried in turn. A refusal (divergence, another
// log) waits the longest pause on the same link: the other link leads to the same backup.
// Two immediate switches closer than `guardMs` do not happen: a backup that accepts and then
// drops every connection would otherwise be redialled in a tight loop.
import { isIPv6 } from 'node:net';
import type { LinkLossReason } from './mirror-state.js';

/** Which of the replication link's two paths. */
export type MirrorLinkName = 'main' | 'failsafe';

/** A TCP address (the backup's listener on one link). */
export interface MirrorAddress {
  host: string;
  port: number;
}

export interface MirrorLinkAddress extends MirrorAddress {
  link: MirrorLinkName;
}

/** `host:port`, IPv6 in brackets, for messages and events. */
export function formatMirrorAddress(a: MirrorAddress): string {
  return isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** One spelling per host: lower case, IPv6 in its shortest form. */
function canonicalHost(host: string): string {
  const h = host.toLowerCase();
  return isIPv6(h) ? new URL(`http://[${h}]/`).hostname.slice(1, -1) : h;
}

/** Whether two addresses are the same listener (same port, same host however spelled). */
export function sameMirrorAddress(a: MirrorAddress, b: MirrorAddress): boolean {
  return a.port === b.port && canonicalHost(a.host) === canonicalHost(b.host);
}

/**
 * Checks one address: `host` a non-empty string, `port` an integer in 1..65535 (0..65535 with
 * `anyPort`, a listener's "pick a free one"). Throws RangeError naming `what`.
 */
export function checkMirrorAddress(what: string, a: unknown, anyPort = false): asserts a is MirrorAddress {
  if (typeof a !== 'object' || a === null) throw new RangeError(`${what} must be { host, port }`);
  const { host, port } = a as { host?: unknown; port?: unknown };
  if (typeof host !== 'string' || host.length === 0) throw new RangeError(`${what}.host must be a non-empty string (got ${JSON.stringify(host)})`);
  const low = anyPort ? 0 : 1;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < low || port > 65535) throw new RangeError(`${what}.port must be an integer in ${low}..65535 (got ${String(port)})`);
}

/**
 * The backup's addresses as the primary dials them: main first, then the failsafe when given.
 * Throws RangeError: a failsafe without a main address (`host`/`port` missing), a bad host or
 * port, the failsafe equal to the main address (two names for one path are not two links).
 */
export function primaryLinksOf(backup: { host?: unknown; port?: unknown; failsafe?: unknown }): MirrorLinkAddress[] {
  if (backup.failsafe !== undefined && (backup.host === undefined || backup.port === undefined)) {
    throw new RangeError('backup.failsafe is given without the main address: backup.host and backup.port are required (the failsafe is the second link, not a replacement)');
  }
  const f: unknown = backup.failsafe;
  checkMirrorAddress('backup', backup);
  const main: MirrorLinkAddress = { link: 'main', host: backup.host, port: backup.port };
  if (f === undefined) return [main];
  checkMirrorAddress('backup.failsafe', f);
  const failsafe: MirrorLinkAddress = { link: 'failsafe', host: f.host, port: f.port };
  if (sameMirrorAddress(main, failsafe)) throw new RangeError(`backup.failsafe ${formatMirrorAddress(failsafe)} is the main address: the failsafe must be another link (another address or port)`);
  return [main, failsafe];
}

/**
 * The backup's listeners: main (`host`/`port`, port 0 = a free one) and the failsafe when given.
 * Throws RangeError as primaryLinksOf() does; two port-0 listeners on one host are two
 * addresses (each gets its own port).
 */
export function backupListenersOf(options: { host?: unknown; port?: unknown; failsafe?: unknown }): MirrorLinkAddress[] {
  if (options.failsafe !== undefined && (options.host === undefined || options.port === undefined)) {
    throw new RangeError('failsafe is given without the main address: host and port are required (the failsafe is the second link, not a replacement)');
  }
  const f: unknown = options.failsafe;
  checkMirrorAddress('listen address', options, true);
  const main: MirrorLinkAddress = { link: 'main', host: options.host, port: options.port };
  if (f === undefined) return [main];
  checkMirrorAddress('failsafe', f, true);
  const failsafe: MirrorLinkAddress = { link: 'failsafe', host: f.host, port: f.port };
  if (failsafe.port !== 0 && sameMirrorAddress(main, failsafe)) throw new RangeError(`failsafe ${formatMirrorAddress(failsafe)} is the main address: the failsafe must be another link (another address or port)`);
  return [main, failsafe];
}

/** What ended the previous connection, for redialChoice(). */
export interface RedialInput {
  /** How many addresses the backup has (1 or 2). */
  links: number;
  /** The index (0 main, 1 failsafe) the ended connection used. */
  lastIndex: number;
  /** It carried the mirror (its START was accepted). */
  wasAttached: boolean;
  /**
   * Why it ended; 'connect-failed' for a dial that never connected; 'resync' for a backup told to
   * cut its log back to a fork point (mirror-history.ts), which is expected back at once.
   */
  reason: LinkLossReason | 'connect-failed' | 'resync';
  /** Time since the last immediate switch, ms (Infinity when none). */
  sinceLastSwitchMs: number;
  /** Two immediate switches are at least this far apart, ms. */
  guardMs: number;
  /** Failed attempts so far (the backoff's exponent). */
  attempt: number;
  minMs: number;
  maxMs: number;
}

export interface RedialChoice {
  /** The address to dial next (index into the links). */
  index: number;
  /** The pause before dialling, ms (0: at once). */
  waitMs: number;
  /** An immediate switch to the other link after losing the one that carried the mirror. */
  switched: boolean;
}

/** Which address to dial after a connection ended, and after what pause (see the file's head). */
export function redialChoice(r: RedialInput): RedialChoice {
  const backoff = Math.min(r.maxMs, r.minMs * 2 ** Math.min(r.attempt, 20));
  if (r.reason === 'refused') return { index: r.lastIndex, waitMs: r.maxMs, switched: false };
  if (r.reason === 'resync') return { index: r.lastIndex, waitMs: r.minMs, switched: false };
  if (r.links < 2) return { index: 0, waitMs: backoff, switched: false };
  const other = r.lastIndex === 0 ? 1 : 0;
  const linkTrouble = r.reason === 'closed' || r.reason === 'ack-timeout' || r.reason === 'auth' || r.reason === 'protocol';
  if (r.wasAttached && linkTrouble && r.sinceLastSwitchMs >= r.guardMs) return { index: other, waitMs: 0, switched: true };
  return { index: other, waitMs: backoff, switched: false };
}
