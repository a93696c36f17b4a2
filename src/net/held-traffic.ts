// A service's TCP traffic routed through this process by netfilter queues, for output commit
// (issue 12: the primary's stream holds what its service sends until the backup has the copy).
// - Ingress (PREROUTING, to the service's address and port): copied and accepted at once, batch
//   by batch; the service's kernel sees a client's segment only after this process has read it.
// - Egress (OUTPUT, from the service's address and port): held by the kernel until release(id).
// So the copy is ordered by cause: a segment the service sends that acknowledges a client's
// bytes is read after those bytes (it could not exist before the service got them).
//
// The rules are iptables rules (the nf_tables backend, `iptables-nft`: the NFQUEUE target, which
// nft itself expresses only on kernels with nft_queue). Each carries `--queue-bypass`: with no
// process bound to the queue, packets pass, so a dead agent never stops its service. Each also
// carries its owner in a comment (guard-owner.ts: pid namespace, pid, start time), and
// sweepStaleHoldRules() removes the rules of owners that are gone (an agent killed with SIGKILL:
// its held packets are dropped by the kernel when its socket closes, and TCP sends them again).
import { randomBytes } from 'node:crypto';
import { native, type NativeEgressQueue, type ParsedSegment, type QueuedPacket } from '../native.js';
import { commandMissing, run } from '../run-command.js';
import { familyOf, type Endpoint } from './endpoint.js';
import { guardTableName, judgeGuardTable, processStartTicks, selfIdentity } from './guard-owner.js';

/** A packet read from one of the queues, in the order read. */
export interface HeldPacket {
  /** 'in': to the service (accepted once the listeners have it); 'out': from it (held until released). */
  direction: 'in' | 'out';
  /** The queue's id: for 'out', what release() names. */
  id: number;
  /**
   * When it was read (ms since the epoch, after the read that returned it): later than the
   * service sent an 'out' packet, earlier than the service can read an 'in' one.
   */
  timeMs: number;
  segment?: ParsedSegment;
}

export interface HeldTrafficOptions {
  /** The services whose traffic goes through the queues (address and port; at most 16). */
  services: readonly Endpoint[];
  /** Netfilter queue numbers: `queue` for ingress, `queue + 1` for egress (0..65534). */
  queue: number;
  /** Packets held at most (the kernel drops beyond, and TCP sends them again); default 65,536. */
  maxHeld?: number;
}

export interface HeldTrafficStats {
  /** Packets read (both queues). */
  received: number;
  /** Packets that were not whole TCP segments (passed on, not in the copy). */
  unparsed: number;
  /** Times the kernel could not hand packets over (dropped them: TCP sends them again). */
  overflows: number;
  /** Egress packets read, and released, so far (ids grow by one per packet from 1). */
  egressRead: number;
  egressReleased: number;
}

/** The agent's default ingress queue number (`outputCommit.queue`; egress is the next one). */
export const DEFAULT_HOLD_QUEUE = 7420;
const MAX_SERVICES = 16;
const COMMENT_TAG = 'fe';
const ID_SPACE = 2 ** 32;

/** One iptables rule: the command (iptables or ip6tables), chain, and match/target arguments. */
export interface HoldRule {
  command: 'iptables' | 'ip6tables';
  chain: 'PREROUTING' | 'OUTPUT';
  spec: string[];
}

/** The rules for `services` (exported for the unit test): ingress to queue, egress to queue + 1. */
export function holdRules(services: readonly Endpoint[], queue: number, comment: string): HoldRule[] {
  return services.flatMap((s) => {
    const command = familyOf(s.address) === 4 ? 'iptables' : 'ip6tables';
    const tail = ['-m', 'comment', '--comment', comment, '-j', 'NFQUEUE', '--queue-bypass', '--queue-num'];
    return [
      { command, chain: 'PREROUTING', spec: ['-p', 'tcp', '-d', s.address, '--dport', String(s.port), ...tail, String(queue)] },
      { command, chain: 'OUTPUT', spec: ['-p', 'tcp', '-s', s.address, '--sport', String(s.port), ...tail, String(queue + 1)] },
    ];
  });
}

/** iptables failed: its message, with what to install when the command is missing. */
function iptablesError(err: unknown, what: string): Error {
  const msg = commandMissing(err) ? 'iptables is not installed (output commit needs iptables with the nf_tables backend and the kernel\'s NFQUEUE target)' : (err as Error).message;
  return new Error(`${what}: ${msg}`, { cause: err });
}

/**
 * Removes, in this network namespace, the hold rules whose owner is gone. Returns the comments of
 * the rules removed. A missing iptables means no rule can exist: returns [].
 */
export async function sweepStaleHoldRules(): Promise<string[]> {
  const self = await selfIdentity();
  const removed: string[] = [];
  for (const command of ['iptables', 'ip6tables'] as const) {
    let stdout: string;
    try {
      ({ stdout } = await run(command, ['-w', '-t', 'mangle', '-S']));
    } catch (err) {
      if (commandMissing(err)) return removed;
      throw iptablesError(err, `${command} -S`);
    }
    for (const line of stdout.split('\n')) {
      const comment = /--comment "?(takeover_guard_[0-9_a-f]+)"?/.exec(line)?.[1];
      if (!comment || !line.startsWith('-A ')) continue;
      if ((await judgeGuardTable(comment, self, processStartTicks)) !== 'stale') continue;
      const [, chain, ...spec] = line.replaceAll('"', '').split(' ');
      await run(command, ['-w', '-t', 'mangle', '-D', chain!, ...spec]).catch(() => {}); // gone meanwhile: fine
      removed.push(comment);
    }
  }
  return removed;
}

/** What a segment stream's source uses of a hold (HeldTraffic; tests give their own). */
export interface PacketHold {
  readonly services: readonly Endpoint[];
  onPackets(listener: (packets: HeldPacket[]) => void): () => void;
  /** The last egress id read (0 before any). */
  readonly lastHeldId: number;
  /** Egress packets read and not yet released. */
  readonly heldCount: number;
  release(id: number): void;
  stats(): HeldTrafficStats;
}

export class HeldTraffic implements PacketHold {
  private readonly listeners = new Set<(packets: HeldPacket[]) => void>();
  // Ids as read, unwrapped: the kernel's are 32-bit and wrap (after ~12 h at 100,000 packets/s).
  private lastEgressId = 0;
  private released = 0;
  private egressRead = 0;
  private closed = false;

  private constructor(
    /** The services held. */
    readonly services: readonly Endpoint[],
    private readonly ingress: NativeEgressQueue,
    private readonly egress: NativeEgressQueue,
    private readonly rules: HoldRule[],
    /** What the sweep at open removed: the comments (owners) of rules whose owner was gone. */
    readonly swept: string[],
  ) {
    ingress.start((batch) => this.read('in', batch));
    egress.start((batch) => this.read('out', batch));
  }

  /**
   * Sweeps stale hold rules, binds both queues, then installs this process's rules. Throws
   * RangeError on bad options, EPERM when a queue is held by another process (or without
   * CAP_NET_ADMIN), or iptables' message (or that it is missing). Nothing stays installed or
   * bound after a throw.
   */
  static async open(options: HeldTrafficOptions): Promise<HeldTraffic> {
    const { services, queue } = options;
    if (services.length === 0 || services.length > MAX_SERVICES) throw new RangeError(`output commit holds 1 to ${MAX_SERVICES} services, not ${services.length}`);
    if (!Number.isInteger(queue) || queue < 0 || queue > 65534) throw new RangeError(`queue must be an integer in [0, 65534]: ${queue}`);
    const maxHeld = options.maxHeld ?? 65536;
    const swept = await sweepStaleHoldRules().catch((): string[] => []); // a failed sweep alone does not stop the hold
    const comment = guardTableName(await selfIdentity(), COMMENT_TAG + randomBytes(2).toString('hex'));
    const opened: NativeEgressQueue[] = [];
    const installed: HoldRule[] = [];
    try {
      opened.push(new native.EgressQueue(queue, 65535, maxHeld));
      opened.push(new native.EgressQueue(queue + 1, 65535, maxHeld));
      for (const rule of holdRules(services, queue, comment)) {
        try {
          await run(rule.command, ['-w', '-t', 'mangle', '-I', rule.chain, ...rule.spec]);
        } catch (err) {
          throw iptablesError(err, `installing the output-commit rule for ${rule.spec.join(' ')}`);
        }
        installed.push(rule);
      }
    } catch (err) {
      await removeRules(installed);
      for (const q of opened) q.close();
      if ((err as { code?: unknown }).code === 'EPERM' && opened.length < 2) {
        throw Object.assign(new Error(`netfilter queue ${queue + opened.length} is held by another process (or this one lacks CAP_NET_ADMIN)`, { cause: err }), { code: 'EPERM' });
      }
      throw err;
    }
    return new HeldTraffic([...services], opened[0]!, opened[1]!, installed, swept);
  }

  /** Registers a listener for every batch read (ingress batches before they are accepted); returns its removal. */
  onPackets(listener: (packets: HeldPacket[]) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** The last egress id read (0 before any). */
  get lastHeldId(): number {
    return this.lastEgressId;
  }

  /** Releases every egress packet held up to `id` (ids only grow; an id at or below the last released is a no-op). */
  release(id: number): void {
    if (this.closed || id <= this.released) return;
    const upTo = Math.min(id, this.lastEgressId);
    if (upTo <= this.released) return;
    this.egress.verdict(upTo % ID_SPACE, true); // the kernel compares ids in its wrapping space
    this.released = upTo;
  }

  /** Egress packets read and not yet released. */
  get heldCount(): number {
    return this.lastEgressId - this.released;
  }

  stats(): HeldTrafficStats {
    const a = this.ingress.stats();
    const b = this.egress.stats();
    return { received: a.received + b.received, unparsed: a.unparsed + b.unparsed, overflows: a.overflows + b.overflows, egressRead: this.egressRead, egressReleased: this.released };
  }

  /** Removes the rules, then releases what is held and unbinds; idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    await removeRules(this.rules);
    this.ingress.close();
    this.egress.close();
  }

  private read(direction: 'in' | 'out', batch: QueuedPacket[]): void {
    if (this.closed || batch.length === 0) return;
    const packets = batch.map((p): HeldPacket => ({ direction, id: direction === 'out' ? this.unwrap(p.id) : p.id, timeMs: p.timeMs, ...(p.segment ? { segment: p.segment } : {}) }));
    if (direction === 'out') this.egressRead += batch.length;
    for (const l of [...this.listeners]) l(packets);
    // The copy is taken: the service may now see what came in.
    if (direction === 'in') this.ingress.verdict(batch.at(-1)!.id, true);
  }

  /** The egress id `raw` (32-bit, wrapping) after lastEgressId: ids grow by one per packet. */
  private unwrap(raw: number): number {
    const last = this.lastEgressId;
    let id = last - (last % ID_SPACE) + raw;
    if (id < last) id += ID_SPACE;
    this.lastEgressId = id;
    return id;
  }
}

async function removeRules(rules: readonly HoldRule[]): Promise<void> {
  for (const rule of rules) await run(rule.command, ['-w', '-t', 'mangle', '-D', rule.chain, ...rule.spec]).catch(() => {});
}
