// The network interfaces of this host, as the calling process's network namespace has them.
// Read from /proc/self/net/dev: it follows the namespace of the reader (where /sys/class/net
// follows whichever sysfs is mounted), and lists interfaces that have no address too (where
// os.networkInterfaces() lists only those with one).
import { readFile } from 'node:fs/promises';

/** Names of every interface of this network namespace. Rejects only if /proc is not mounted. */
export async function interfaceNames(): Promise<string[]> {
  const text = await readFile('/proc/self/net/dev', 'utf8');
  // Two header lines, then "  eth0: 1234 ..." per interface.
  return text
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0]!.trim())
    .filter((name) => name.length > 0);
}

/** Whether this network namespace has an interface of that name. */
export async function interfaceExists(name: string): Promise<boolean> {
  return (await interfaceNames()).includes(name);
}
