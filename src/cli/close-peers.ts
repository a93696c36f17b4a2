// `takeover close-peers`: the local (--pid) and remote (--address) ways of ending the wait.
import { spawnSync } from 'node:child_process';
import { sameNetworkNamespace } from '../net/close-local.js';
import type { CloseResult } from '../net/close-result.js';
import { interfacesOfAddress } from '../net/close-remote.js';
import { closePeers } from '../net/close-peers.js';
import { readFlowSnapshot } from '../net/flow-knowledge.js';
import type { FlowRecord } from '../native.js';
import { familyOf, isLinkLocal } from '../net/endpoint.js';
import { EXIT_INCOMPLETE, EXIT_OK, UsageError, requireCapabilities } from './errors.js';
import { closeResultsTable, printJson } from './output.js';
import { addressOption, interfaceOption, intOption, methodOption, peersOption, portOption, zoneOption } from './parse-args.js';

export interface ClosePeersOptions {
  pid?: string;
  address?: string;
  port?: string;
  peers?: string;
  fromFlows?: string;
  interface?: string;
  takeoverAddress?: boolean;
  prefixLength?: string;
  method: string;
  assumeBoundary?: boolean;
  guard: boolean;
  timeoutMs: string;
  json?: boolean;
}

export async function closePeersCommand(o: ClosePeersOptions): Promise<number> {
  if ((o.pid === undefined) === (o.address === undefined)) throw new UsageError('close-peers needs exactly one of --pid or --address');
  const method = methodOption(o.method);
  if (o.pid !== undefined) return closeLocal(o, method);
  return closeRemote(o, method);
}

async function closeLocal(o: ClosePeersOptions, method: ReturnType<typeof methodOption>): Promise<number> {
  for (const bad of ['peers', 'fromFlows', 'takeoverAddress', 'interface'] as const) {
    if (o[bad] !== undefined) throw new UsageError(`--${bad.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} goes with --address, not --pid`);
  }
  const pid = intOption('--pid', o.pid!, 1, 2 ** 22);
  const ports = o.port === undefined ? undefined : [portOption('--port', o.port)];
  await requireCapabilities('close-peers --pid', method.kind === 'rst' ? ['CAP_NET_ADMIN'] : ['CAP_NET_ADMIN', 'CAP_SYS_PTRACE']);
  let inOurNs: boolean;
  try {
    inOurNs = sameNetworkNamespace(pid);
  } catch {
    throw new UsageError(`--pid ${pid}: no such process`);
  }
  if (!inOurNs) {
    // sock_diag sees only our own network namespace: run this same command inside the target's.
    const r = spawnSync('nsenter', ['-t', String(pid), '-n', process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit' });
    if (r.error) throw new UsageError(`cannot enter the network namespace of ${pid}: ${r.error.message}`);
    return r.status ?? EXIT_INCOMPLETE;
  }
  const { results } = await closePeers({ pid, ...(ports ? { ports } : {}) }, { method, assumeBoundary: o.assumeBoundary === true });
  return report(o, results, { pid });
}

async function closeRemote(o: ClosePeersOptions, method: ReturnType<typeof methodOption>): Promise<number> {
  const address = addressOption('--address', o.address!);
  // fe80::1%eth1: the zone names the link, as --interface does.
  const zone = zoneOption('--address', o.address!, address);
  if (zone !== undefined && o.interface !== undefined && zone !== o.interface) {
    throw new UsageError(`--address names interface ${zone} (%${zone}) but --interface is ${o.interface}`);
  }
  const given = o.interface ?? zone;
  if (o.port === undefined) throw new UsageError('--address needs --port (the dead side\'s port)');
  const port = portOption('--port', o.port);
  if (o.peers === undefined && o.fromFlows === undefined) throw new UsageError('--address needs --peers or --from-flows (which connections to close)');
  const peers = o.peers === undefined ? [] : peersOption(o.peers);
  for (const p of peers) {
    if (familyOf(p.address) !== familyOf(address)) throw new UsageError(`--peers: ${p.address} is not of the same family as ${address}`);
  }
  for (const p of o.peers?.split(',') ?? []) {
    const peerZone = /%([^\]]*)\]/.exec(p)?.[1];
    if (peerZone !== undefined && peerZone !== given) throw new UsageError(`--peers: ${p.trim()} names interface ${peerZone}, but the address's interface is ${given ?? 'not given'}`);
  }
  if (o.takeoverAddress && given === undefined) throw new UsageError('--takeover-address needs --interface');
  if (o.prefixLength !== undefined && !o.takeoverAddress) throw new UsageError('--prefix-length goes with --takeover-address');
  const prefixLength = takeoverPrefix(address, o.prefixLength);
  const timeoutMs = intOption('--timeout-ms', o.timeoutMs, 1, 600_000);
  let flows: FlowRecord[] = [];
  if (o.fromFlows !== undefined) {
    try {
      flows = readFlowSnapshot(o.fromFlows);
    } catch (err) {
      throw new UsageError(`--from-flows: ${(err as Error).message}`);
    }
  }
  // Before the privileges: a bad argument is a usage error wherever it runs.
  const named = given === undefined ? undefined : await interfaceOption(given);
  await requireCapabilities('close-peers --address', ['CAP_NET_RAW', 'CAP_NET_ADMIN']);
  const holders = interfacesOfAddress(address);
  if (given === undefined && holders.length > 1 && isLinkLocal(address)) {
    // Each link may have its own fe80::1: which one is meant, only the operator knows.
    throw new UsageError(`--address ${address} is link-local and on ${holders.join(', ')}: pass --interface (or ${address}%IF)`);
  }
  const ifname = named ?? holders[0];
  if (ifname === undefined) {
    throw new UsageError(`${address} is not an address of this host; pass --takeover-address --interface IF to take it over`);
  }
  const remote = await closePeers(
    { address, port, peers, flows, interface: ifname, ...(o.takeoverAddress ? { takeover: { interface: ifname, prefixLength } } : {}) },
    { method, assumeBoundary: o.assumeBoundary === true, ...(o.guard === false ? { guard: false } : {}), timeoutMs },
  );
  if (!o.json) for (const line of remoteNotes(remote)) process.stderr.write(`takeover: ${line}\n`);
  return report(o, remote.results, {
    address, port, takeovers: remote.takeovers, guard: remote.guard, ...(remote.staleGuards ? { staleGuards: remote.staleGuards } : {}), elapsedMs: remote.elapsedMs,
  });
}

/** What an operator must know beyond the table: an address replaced, a guard that failed, guards left by the dead. */
function remoteNotes(remote: Awaited<ReturnType<typeof closePeers>>): string[] {
  const notes: string[] = [];
  for (const t of remote.takeovers ?? []) {
    if (t.replaced) notes.push(`${t.address} was on ${t.interface} but could not serve (${t.replaced}): removed and added again`);
  }
  if (remote.guard && typeof remote.guard === 'object') notes.push(`the RST guard could not be installed: ${remote.guard.failed}`);
  if (remote.staleGuards?.removed.length) notes.push(`removed RST guards left by processes that died: ${remote.staleGuards.removed.join(', ')}`);
  return notes;
}

/**
 * --prefix-length, applied as given: 1-32 for IPv4 (default 24), 64-128 for IPv6 (default 64;
 * IPv6 subnets are /64 or longer, and a shorter length is refused rather than changed).
 */
function takeoverPrefix(address: string, value: string | undefined): number {
  const v4 = familyOf(address) === 4;
  if (value === undefined) return v4 ? 24 : 64;
  return intOption('--prefix-length', value, v4 ? 1 : 64, v4 ? 32 : 128, `for the IPv${v4 ? 4 : 6} address ${address}`);
}

function report(o: ClosePeersOptions, results: CloseResult[], context: Record<string, unknown>): number {
  const failed = results.filter((r) => !r.ok).length;
  if (o.json) printJson({ ...context, connections: results.length, failed, results });
  else if (results.length === 0) process.stdout.write('no connections to close\n');
  else {
    process.stdout.write(`${closeResultsTable(results)}\n`);
    process.stdout.write(`${results.length - failed} of ${results.length} connections closed${failed ? `, ${failed} failed` : ''}\n`);
  }
  return failed > 0 ? EXIT_INCOMPLETE : EXIT_OK;
}
