// Fencing a node off shared disks with SCSI-3 persistent reservations (fence_scsi's model, in
// one process): every node registers its key on every device (REGISTER AND IGNORE EXISTING KEY)
// and the device is reserved Write Exclusive – Registrants Only, so only registered nodes may
// write. To fence a node, a survivor PREEMPT AND ABORTs the victim's key (its registration goes,
// its queued commands are aborted) and then verifies: the key gone, the reservation held. A node
// never fences itself; several devices are kept consistent, and a partial failure is reported
// per device, never taken for success. The device commands come in through an interface, so the
// sequence is tested against a model of a LUN, and run for real over SG_IO.
import { EventEmitter } from 'node:events';
import { clusterKeys, formatKey } from './fence-keys.js';
import { isInvalidFieldInCdb } from '../scsi/transport.js';

/** SPC-3 PERSISTENT RESERVE TYPE codes. */
export const PR_TYPE = {
  writeExclusive: 1,
  exclusiveAccess: 3,
  writeExclusiveRegistrantsOnly: 5,
  exclusiveAccessRegistrantsOnly: 6,
  writeExclusiveAllRegistrants: 7,
  exclusiveAccessAllRegistrants: 8,
} as const;

/** What fencing needs from one device (one LUN through this node's I_T nexus). */
export interface ReservationDevice {
  readonly name: string;
  readKeys(): Promise<{ generation: number; keys: bigint[] }>;
  readReservation(): Promise<{ generation: number; reservation?: { key: bigint; type: number } }>;
  /** REGISTER AND IGNORE EXISTING KEY; key 0 unregisters. */
  registerAndIgnore(key: bigint): Promise<void>;
  reserve(key: bigint, type: number): Promise<void>;
  preemptAndAbort(key: bigint, victim: bigint, type: number): Promise<void>;
  preempt(key: bigint, victim: bigint, type: number): Promise<void>;
}

export type DeviceOutcome = 'registered' | 'fenced' | 'already-fenced' | 'unregistered' | 'failed';

export interface DeviceReport {
  device: string;
  outcome: DeviceOutcome;
  ok: boolean;
  error?: string;
  /** How a 'fenced' device was preempted. */
  method?: 'preempt-and-abort' | 'preempt';
  /** Why the method is not the one asked for (a target that rejects PREEMPT AND ABORT). */
  note?: string;
  elapsedMs: number;
}

export interface FenceReport {
  node: string;
  key: string;
  /** True only when every device succeeded. */
  ok: boolean;
  devices: DeviceReport[];
}

export interface FencerOptions {
  cluster: string;
  /** This node. */
  node: string;
  /** Every node of the cluster (keys are checked for collisions). */
  nodes: string[];
  devices: ReservationDevice[];
  type?: number;
  /**
   * PREEMPT AND ABORT (default): the victim's queued commands are aborted too, so a write it
   * sent just before the preempt cannot land after it. A target that rejects the service action
   * (ILLEGAL REQUEST 24/00: tgtd) gets PREEMPT instead, and the report says so. false: plain
   * PREEMPT always, for targets where the abort never completes (LIO through tcm_loop hangs on
   * it, sg_persist included; LIO over iSCSI completes it).
   */
  abort?: boolean;
}

export class FenceError extends Error {
  override readonly name = 'FenceError';
  constructor(
    message: string,
    readonly code: 'ERR_FENCE_SELF' | 'ERR_FENCE_UNKNOWN_NODE',
  ) {
    super(message);
  }
}

export class Fencer {
  readonly keys: Map<string, bigint>;
  readonly myKey: bigint;
  private readonly type: number;

  constructor(private readonly options: FencerOptions) {
    const nodes = options.nodes.includes(options.node) ? options.nodes : [...options.nodes, options.node];
    this.keys = clusterKeys(options.cluster, nodes);
    this.myKey = this.keys.get(options.node)!;
    this.type = options.type ?? PR_TYPE.writeExclusiveRegistrantsOnly;
  }

  /**
   * Registers this node on every device and reserves the ones nobody reserved (also: unfence on
   * rejoin). Nodes that join at once (a cluster starting) each find no reservation and each
   * RESERVE: the first holds it and the others get RESERVATION CONFLICT (SPC-4: a registrant
   * that does not hold the reservation). A reservation of this type found after a refused
   * RESERVE serves this node as well (registrants may write under it): joined, not an error.
   */
  join(): Promise<DeviceReport[]> {
    return this.eachDevice(async (d) => {
      await d.registerAndIgnore(this.myKey);
      const { reservation } = await d.readReservation();
      if (!reservation) {
        try {
          await d.reserve(this.myKey, this.type);
        } catch (err) {
          const now = await d.readReservation().catch(() => undefined);
          if (now?.reservation?.type !== this.type) throw err;
        }
      }
      return 'registered';
    });
  }

  /** Removes this node's registration everywhere (a clean leave). */
  leave(): Promise<DeviceReport[]> {
    return this.eachDevice(async (d) => {
      await d.registerAndIgnore(0n);
      return 'unregistered';
    });
  }

  /** Fences `victim` off every device; refuses to fence this node. */
  async fence(victim: string): Promise<FenceReport> {
    if (victim === this.options.node) throw new FenceError(`refusing to fence this node (${victim}) off its own disks`, 'ERR_FENCE_SELF');
    const key = this.keys.get(victim);
    if (key === undefined) throw new FenceError(`unknown node ${victim}: not one of ${[...this.keys.keys()].join(', ')}`, 'ERR_FENCE_UNKNOWN_NODE');
    const devices = await this.eachDevice(async (d) => {
      const before = await d.readKeys();
      if (!before.keys.includes(key)) {
        await this.verifyHeld(d, key);
        return 'already-fenced';
      }
      if (!before.keys.includes(this.myKey)) throw new Error(`this node (${formatKey(this.myKey)}) is not registered on ${d.name}: it cannot preempt (join first)`);
      const how = await this.preempt(d, key);
      await this.verifyHeld(d, key);
      return { outcome: 'fenced', ...how };
    });
    return { node: victim, key: formatKey(key), ok: devices.every((r) => r.ok), devices };
  }

  /** Whether this node's key is still registered on each device (false: we were fenced). */
  async ownKeyPresent(): Promise<Array<{ device: string; registered: boolean | undefined; error?: string }>> {
    return Promise.all(
      this.options.devices.map(async (d) => {
        try {
          return { device: d.name, registered: (await d.readKeys()).keys.includes(this.myKey) };
        } catch (err) {
          return { device: d.name, registered: undefined, error: (err as Error).message };
        }
      }),
    );
  }

  /** PREEMPT AND ABORT unless told not to, falling back to PREEMPT where the target rejects it. */
  private async preempt(d: ReservationDevice, victim: bigint): Promise<Pick<DeviceReport, 'method' | 'note'>> {
    if (this.options.abort === false) {
      await d.preempt(this.myKey, victim, this.type);
      return { method: 'preempt' };
    }
    try {
      await d.preemptAndAbort(this.myKey, victim, this.type);
      return { method: 'preempt-and-abort' };
    } catch (err) {
      if (!isInvalidFieldInCdb(err)) throw err;
      // Only the service action differs from PREEMPT: if the type were the problem, PREEMPT fails too.
      await d.preempt(this.myKey, victim, this.type);
      return { method: 'preempt', note: `${d.name} rejected PREEMPT AND ABORT (${err.sense.valid ? err.sense.description : 'invalid field in CDB'}): PREEMPT used, the victim's queued commands were not aborted` };
    }
  }

  /** After a preempt: the victim's key must be gone and the reservation held by a registrant. */
  private async verifyHeld(d: ReservationDevice, victim: bigint): Promise<void> {
    const after = await d.readKeys();
    if (after.keys.includes(victim)) throw new Error(`${formatKey(victim)} is still registered on ${d.name} after the preempt`);
    const { reservation } = await d.readReservation();
    if (!reservation) throw new Error(`${d.name} has no reservation after fencing: any initiator could write`);
    if (reservation.type !== this.type) throw new Error(`${d.name} is reserved with type ${reservation.type}, not ${this.type}`);
    // Registrants-only types name one holder (all-registrants types report key 0).
    if (reservation.key !== 0n && reservation.key === victim) throw new Error(`${d.name} is still reserved by the fenced key`);
  }

  /** Runs op on every device at once; each device's outcome or error is kept. */
  private eachDevice(op: (d: ReservationDevice) => Promise<DeviceOutcome | Pick<DeviceReport, 'outcome' | 'method' | 'note'>>): Promise<DeviceReport[]> {
    return Promise.all(
      this.options.devices.map(async (d) => {
        const started = performance.now();
        const elapsedMs = () => Math.round((performance.now() - started) * 1000) / 1000;
        try {
          const r = await op(d);
          return { device: d.name, ...(typeof r === 'string' ? { outcome: r } : r), ok: true, elapsedMs: elapsedMs() };
        } catch (err) {
          return { device: d.name, outcome: 'failed' as const, ok: false, error: (err as Error).message, elapsedMs: elapsedMs() };
        }
      }),
    );
  }
}

/**
 * The watchdog's role: checks every `intervalMs` that this node's key is still registered; when
 * it is gone from a device, this node has been fenced and must stop writing: 'fenced' is emitted
 * once (per device) for the caller to stop its service.
 */
export class OwnKeyWatch extends EventEmitter<{ fenced: [{ device: string; at: number }]; error: [{ device: string; error: string }] }> {
  private timer: NodeJS.Timeout | undefined;
  private readonly lost = new Set<string>();

  constructor(
    private readonly fencer: Fencer,
    private readonly intervalMs: number,
  ) {
    super();
  }

  start(): void {
    const round = async () => {
      for (const r of await this.fencer.ownKeyPresent()) {
        if (r.registered === false && !this.lost.has(r.device)) {
          this.lost.add(r.device);
          this.emit('fenced', { device: r.device, at: performance.timeOrigin + performance.now() });
        } else if (r.registered === undefined) this.emit('error', { device: r.device, error: r.error! });
        else if (r.registered) this.lost.delete(r.device);
      }
      if (this.timer !== undefined) this.timer = setTimeout(round, this.intervalMs);
    };
    this.timer = setTimeout(round, 0);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
