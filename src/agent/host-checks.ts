// Checks of an agent config against the host it is read on: what a valid config can still get
// wrong about this machine (a link address that is not this host's, a takeover interface or a
// callouts directory that does not exist, a control path that cannot be created, an etcd
// certificate that is not one or a password file that cannot be read). They hold on
// this host only: the same file is right on the node it was written for and wrong on another.
// `takeover agent --check` runs them and says they are host-specific; `takeover agent` runs them
// before it starts anything, so a start fails on the same line instead of `bind EADDRNOTAVAIL`.
import dgram from 'node:dgram';
import { constants } from 'node:fs';
import { access, lstat, stat } from 'node:fs/promises';
import path from 'node:path';
import { addressKind } from '../net/address-kind.js';
import { familyOf } from '../net/endpoint.js';
import { interfaceNames } from '../net/interfaces.js';
import { CredentialFileError, readEtcdCredentials } from '../cluster/etcd-credentials.js';
import { ConfigError, type AgentConfig } from './config.js';
import { defaultControlPath } from './control.js';

/** A field that is wrong on this host; the message says the check is host-specific. */
export class HostCheckError extends ConfigError {
  constructor(file: string, field: string, problem: string) {
    super(file, field, `${problem} (a host-specific check, made on this host only)`);
  }
}

/** One check that passed: the field and what was found true of it on this host. */
export interface HostCheck {
  field: string;
  found: string;
}

type Check = () => Promise<string | undefined>;

/**
 * Checks every host-specific field of a valid config on this host, in the order of the file.
 * Resolves with what was checked (the field, and what held); rejects with a HostCheckError
 * naming the first field that does not hold. Reads only: binds a UDP socket to port 0 of each
 * address for a moment, nothing else is opened or changed.
 */
export async function checkHost(c: AgentConfig, file = 'config'): Promise<HostCheck[]> {
  const interfaces = await interfaceNames().catch(() => undefined);
  const checks: Array<[string, Check]> = [];
  c.heartbeat.links.forEach((l, j) => checks.push([`heartbeat.links[${j}].address`, () => ownAddress(l.address)]));
  checks.push(['notify.host', () => ownAddress(c.notify.host)]);
  if (c.connectionStream) checks.push(['connectionStream.address', () => ownAddress(c.connectionStream!.address)]);
  const commit = c.connectionStream?.outputCommit;
  if (commit) {
    // Its rules are iptables rules (held-traffic.ts): ip6tables too when a service is IPv6.
    const tools = ['iptables', ...(commit.services.some((s) => familyOf(s.address) === 6) ? ['ip6tables'] : [])];
    checks.push(['connectionStream.outputCommit', async () => {
      const found: string[] = [];
      for (const t of tools) found.push(await program(t)); // in order: the first missing one is named
      return found.join(', ');
    }]);
  }
  c.peers.forEach((p, i) =>
    p.takeover.forEach((t, j) => {
      const field = `peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.interface`;
      checks.push([field, async () => {
        if (interfaces === undefined) throw new Problem('cannot list the interfaces of this host (/proc/self/net/dev)');
        if (!interfaces.includes(t.interface)) throw new Problem(`${t.interface} is not an interface of this host`);
        return `${t.interface} exists`;
      }]);
      const capture = t.capture;
      if (capture !== undefined) {
        checks.push([`peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.capture`, async () => {
          if (interfaces === undefined) throw new Problem('cannot list the interfaces of this host (/proc/self/net/dev)');
          if (!interfaces.includes(capture)) throw new Problem(`${capture} is not an interface of this host (the port mirror must arrive on one)`);
          return `${capture} exists`;
        }]);
      }
      const passwordFile = t.continue?.passwordFile;
      if (passwordFile !== undefined) checks.push([`peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.continue.passwordFile`, () => readable(passwordFile)]);
      const promote = t.continue?.promote;
      if (Array.isArray(promote)) checks.push([`peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.continue.promote`, () => program(promote[0]!)]);
      const mirror = t.continue?.mirror;
      if (mirror !== undefined) {
        checks.push([`peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.continue.mirror`, async () => {
          if (interfaces === undefined) throw new Problem('cannot list the interfaces of this host (/proc/self/net/dev)');
          if (!interfaces.includes(mirror)) throw new Problem(`${mirror} is not an interface of this host (the port mirror must arrive on one)`);
          return `${mirror} exists`;
        }]);
      }
      const walInterface = t.continue?.walCheck?.interface;
      if (walInterface !== undefined && walInterface !== 'any') {
        checks.push([`peers[${i}].takeover${p.takeover.length > 1 ? `[${j}]` : ''}.continue.walCheck.interface`, async () => {
          if (interfaces === undefined) throw new Problem('cannot list the interfaces of this host (/proc/self/net/dev)');
          if (!interfaces.includes(walInterface)) throw new Problem(`${walInterface} is not an interface of this host (the standby's replication connection must arrive on one)`);
          return `${walInterface} exists`;
        }]);
      }
    }),
  );
  c.addressLease?.addresses.forEach((a, j) =>
    checks.push([`addressLease.addresses[${j}].interface`, async () => {
      if (interfaces === undefined) throw new Problem('cannot list the interfaces of this host (/proc/self/net/dev)');
      if (!interfaces.includes(a.interface)) throw new Problem(`${a.interface} is not an interface of this host`);
      return `${a.interface} exists`;
    }]),
  );
  checks.push(['control', () => controlPath(c.control ?? defaultControlPath(c.node))]);
  if (c.callouts) checks.push(['callouts.dir', () => directory(c.callouts!.dir)]);
  if (c.uptimeLog) checks.push(['uptimeLog', () => appendable(c.uptimeLog!)]);
  if (c.disk) checks.push(['disk.device', () => device(c.disk!.device)]);
  c.fencing?.devices.forEach((d, k) => checks.push([`fencing.devices[${k}]`, () => device(d)]));
  c.instances.forEach((inst, i) => {
    if (inst.node !== c.node) return;
    if (inst.pid !== undefined) checks.push([`instances[${i}].pid`, () => liveProcess(inst.pid!)]);
    if (inst.command) checks.push([`instances[${i}].command`, () => program(inst.command![0]!)]);
    const probe = inst.health?.probe;
    if (probe?.kind === 'exec') checks.push([`instances[${i}].health.probe.command`, () => program(probe.command[0]!)]);
  });
  const passed: HostCheck[] = [];
  for (const [field, check] of checks) {
    try {
      const found = await check();
      if (found !== undefined) passed.push({ field, found });
    } catch (err) {
      if (err instanceof Problem) throw new HostCheckError(file, field, err.message);
      throw err;
    }
  }
  // The etcd store's certificates, key and password file: readable, and what each field says.
  const etcd = c.store?.etcd;
  if (etcd?.tls || etcd?.auth) {
    try {
      passed.push(...(await readEtcdCredentials(etcd)).found);
    } catch (err) {
      if (err instanceof CredentialFileError) throw new HostCheckError(file, err.field, err.message);
      throw err;
    }
  }
  return passed;
}

/** What a check found wrong, in words for the operator. */
class Problem extends Error {}

const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/** An address of this host: a UDP socket binds to it (port 0: a running agent's port is no conflict). */
async function ownAddress(address: string): Promise<string | undefined> {
  if (addressKind(address) === 'unspecified') return undefined; // any address: nothing to check
  const socket = dgram.createSocket(familyOf(address) === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, address, () => resolve());
    });
  } catch (err) {
    throw new Problem(code(err) === 'EADDRNOTAVAIL' ? `${address} is not an address of this host` : `cannot bind ${address}: ${code(err)}`);
  } finally {
    socket.close();
  }
  return `${address} is an address of this host`;
}

/**
 * The agent creates the socket's directory (mode 0700) and replaces a stale socket there: the
 * nearest existing ancestor must be a directory, and whatever exists at the path a socket.
 */
async function controlPath(file: string): Promise<string> {
  const there = await lstat(file).catch(() => undefined);
  if (there && !there.isSocket()) throw new Problem(`${file} exists and is not a socket: the agent would have to delete it`);
  let dir = path.dirname(file);
  for (;;) {
    const s = await stat(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined; // (ENOTDIR: an ancestor is a file, found next)
      throw new Problem(`cannot read ${dir}: ${err.code}`);
    });
    if (s?.isDirectory()) return dir === path.dirname(file) ? `${dir} is a directory` : `${path.dirname(file)} can be created under ${dir}`;
    if (s) throw new Problem(`${dir} is not a directory: ${file} cannot be created`);
    dir = path.dirname(dir);
  }
}

async function directory(dir: string): Promise<string> {
  const s = await stat(dir).catch((err: NodeJS.ErrnoException) => {
    throw new Problem(err.code === 'ENOENT' ? `${dir} does not exist` : `cannot read ${dir}: ${err.code}`);
  });
  if (!s.isDirectory()) throw new Problem(`${dir} is not a directory`);
  return `${dir} is a directory`;
}

/** A file the agent appends to: its directory exists; the file, if there, is a regular file it may write. */
async function appendable(file: string): Promise<string> {
  await directory(path.dirname(file)).catch((err: Error) => {
    throw new Problem(`${err.message}: ${file} cannot be created`);
  });
  const s = await stat(file).catch(() => undefined);
  if (s && !s.isFile()) throw new Problem(`${file} is not a regular file`);
  await access(s ? file : path.dirname(file), constants.W_OK).catch((err: NodeJS.ErrnoException) => {
    throw new Problem(`${s ? file : path.dirname(file)} is not writable: ${err.code}`);
  });
  return `${file} can be appended to`;
}

/** A file the agent reads at start (a password): a regular file it may read. */
async function readable(file: string): Promise<string> {
  const s = await stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new Problem(err.code === 'ENOENT' ? `${file} does not exist` : `cannot read ${file}: ${err.code}`);
  });
  if (!s.isFile()) throw new Problem(`${file} is not a regular file`);
  await access(file, constants.R_OK).catch((err: NodeJS.ErrnoException) => {
    throw new Problem(`${file} is not readable: ${err.code}`);
  });
  return `${file} is readable`;
}

/** A SCSI device node: a block (/dev/sdX) or character (/dev/sgN) device, symlinks followed. */
async function device(file: string): Promise<string> {
  const s = await stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new Problem(err.code === 'ENOENT' ? `${file} does not exist` : `cannot read ${file}: ${err.code}`);
  });
  if (!s.isBlockDevice() && !s.isCharacterDevice()) throw new Problem(`${file} is not a device`);
  return `${file} is a device`;
}

async function liveProcess(pid: number): Promise<string> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists, owned by someone we may not signal (the agent runs as root anyway).
    if (code(err) !== 'EPERM') throw new Problem(`no process ${pid} on this host`);
  }
  return `process ${pid} exists`;
}

/** A program as spawn() finds it: a path, or a name looked up in PATH; executable either way. */
async function program(name: string): Promise<string> {
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, name));
  for (const file of candidates) {
    const s = await stat(file).catch(() => undefined);
    if (s?.isFile() && (await access(file, constants.X_OK).then(() => true, () => false))) return `${file} is executable`;
  }
  throw new Problem(name.includes('/') ? `${name} is not an executable file` : `${name} is not an executable in PATH`);
}
