// Seed 002's RESOURCE LIST check: before a server hosts an application it verifies that it has
// what the application needs ("by comparing a resource list stored in the object attribute
// RESOURCE with information contained in the backup system"). A server that lacks one does not
// take the application: it hands it to the next backup, saying what is missing.
//
// Reads files only (/proc and stat), a handful per application: cheap enough for the event loop.
import { stat, readFile } from 'node:fs/promises';
import type { AppObject } from './app-object.js';
import { findOnHost } from '../agent/address-holding.js';

/** What is missing here, one line each ([] when everything is). */
export async function missingResources(resources: AppObject['resources'], proc = '/proc'): Promise<string[]> {
  const missing: string[] = [];
  for (const a of resources.addresses) if (findOnHost(a) === undefined) missing.push(`address ${a} is not on this node`);
  for (const d of resources.devices) {
    const s = await stat(d).catch((err: NodeJS.ErrnoException) => err.code ?? 'error');
    if (typeof s === 'string') missing.push(`device ${d}: ${s}`);
    else if (!s.isBlockDevice() && !s.isCharacterDevice()) missing.push(`device ${d} is not a device`);
  }
  for (const p of resources.paths) {
    const s = await stat(p).catch((err: NodeJS.ErrnoException) => err.code ?? 'error');
    if (typeof s === 'string') missing.push(`path ${p}: ${s}`);
  }
  if (resources.mounts.length > 0) {
    const points = mountPoints(await readFile(`${proc}/self/mountinfo`, 'utf8'));
    for (const m of resources.mounts) if (!points.has(m.replace(/(.)\/+$/, '$1'))) missing.push(`${m} is not a mount point`);
  }
  if (resources.freePorts.length > 0) {
    const listening = new Set<number>();
    for (const f of ['net/tcp', 'net/tcp6']) {
      const text = await readFile(`${proc}/${f}`, 'utf8').catch(() => '');
      for (const p of listeningPorts(text)) listening.add(p);
    }
    for (const p of resources.freePorts) if (listening.has(p)) missing.push(`port ${p} is in use (a socket listens on it)`);
  }
  return missing;
}

/** The mount points of a /proc/PID/mountinfo (field 5; octal escapes such as \040 decoded). */
export function mountPoints(mountinfo: string): Set<string> {
  const out = new Set<string>();
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length > 4) out.add(f[4]!.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/** Local ports of LISTEN sockets (state 0A) in /proc/net/tcp or tcp6. */
export function listeningPorts(table: string): number[] {
  const out: number[] = [];
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 3 && f[3] === '0A') {
      const port = parseInt(f[1]!.split(':')[1] ?? '', 16);
      if (Number.isInteger(port)) out.push(port);
    }
  }
  return out;
}
