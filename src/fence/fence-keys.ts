// Reservation keys for fencing (fence_scsi's model): each node registers one 8-byte key, the
// same every time (so a node that rejoins finds its old registration), derived from the cluster
// name and the node name. The high half says which cluster, the low half which node; the keys of
// a cluster's nodes are checked for collisions, since a collision would let one node fence
// another's writes as its own.
import { createHash } from 'node:crypto';

function half(text: string): number {
  return createHash('sha256').update(text).digest().readUInt32BE(0);
}

/** The node's key: 32 bits of SHA-256(cluster) then 32 bits of SHA-256(cluster/node); never 0. */
export function fenceKey(cluster: string, node: string): bigint {
  if (!cluster || !node) throw new RangeError('cluster and node names must not be empty');
  const hi = BigInt(half(`takeover-cluster:${cluster}`));
  let lo = BigInt(half(`takeover-node:${cluster}/${node}`));
  if (lo === 0n) lo = 1n; // 0 means "no key" in PERSISTENT RESERVE OUT
  return (hi << 32n) | lo;
}

/** Every node's key; throws when two nodes' keys collide (rename one of them). */
export function clusterKeys(cluster: string, nodes: string[]): Map<string, bigint> {
  const keys = new Map<string, bigint>();
  const owner = new Map<bigint, string>();
  for (const node of nodes) {
    const key = fenceKey(cluster, node);
    const other = owner.get(key);
    if (other !== undefined && other !== node) throw new Error(`fence keys of nodes ${other} and ${node} collide (${formatKey(key)}): rename one`);
    owner.set(key, node);
    keys.set(node, key);
  }
  return keys;
}

export function formatKey(key: bigint): string {
  return `0x${key.toString(16).padStart(16, '0')}`;
}

/** Parses 0x-prefixed hex or decimal; a key is 1..2^64-1. */
export function parseKey(text: string): bigint {
  if (!/^(0x[0-9a-fA-F]{1,16}|[0-9]{1,20})$/.test(text)) throw new RangeError(`a key is 0x followed by up to 16 hex digits, or a decimal number: "${text}"`);
  const key = BigInt(text);
  if (key === 0n || key >= 1n << 64n) throw new RangeError(`a key must be between 1 and 2^64-1: "${text}"`);
  return key;
}
