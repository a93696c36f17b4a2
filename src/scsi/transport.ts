// The seam between SCSI logic and devices: a transport takes "CDB + data out" and gives back
// "status + sense + data in". DeviceTransport does it over SG_IO on a real device; tests give
// recorded replies instead. ScsiDevice interprets replies (GOOD, RESERVATION CONFLICT, CHECK
// CONDITION with decoded sense, transport failures, timeouts) into results or typed errors, and
// retries once after a unit attention, as fence_scsi does: reservation changes leave one on the
// other nexuses (2A/03, 2A/04, 2A/05, 29/00), and it says nothing about the command itself.
import { closeSync, constants, openSync } from 'node:fs';
import { native, type SgIoReply } from '../native.js';
import { testUnitReady } from './cdb.js';
import { decodeSense, KEY, type Sense, type SenseResult } from './sense.js';

export interface ScsiCommand {
  cdb: Buffer;
  /** Bytes to read back. */
  dataIn?: number;
  dataOut?: Buffer;
  timeoutMs?: number;
}

/** What the transport reports: SG_IO's fields (status, host, driver, sense, data). */
export type RawReply = Pick<SgIoReply, 'status' | 'hostStatus' | 'driverStatus' | 'sense' | 'data' | 'resid'> & { durationUs?: number };

export interface ScsiTransport {
  readonly name: string;
  execute(cmd: ScsiCommand): Promise<RawReply>;
}

export const STATUS = { good: 0x00, checkCondition: 0x02, conditionMet: 0x04, busy: 0x08, reservationConflict: 0x18, taskSetFull: 0x28, acaActive: 0x30, taskAborted: 0x40 } as const;
const DID_TIME_OUT = 0x03;
const DRIVER_TIMEOUT = 0x06;

export class ScsiError extends Error {
  override name = 'ScsiError';
  constructor(
    message: string,
    readonly device: string,
    readonly opcode: number,
    readonly reply?: RawReply,
  ) {
    super(message);
  }
}

export class ReservationConflictError extends ScsiError {
  override name = 'ReservationConflictError';
  readonly code = 'ERR_SCSI_RESERVATION_CONFLICT';
}

export class CheckConditionError extends ScsiError {
  override name = 'CheckConditionError';
  readonly code = 'ERR_SCSI_CHECK_CONDITION';
  constructor(
    message: string,
    device: string,
    opcode: number,
    reply: RawReply,
    readonly sense: SenseResult,
  ) {
    super(message, device, opcode, reply);
  }
}

/** CHECK CONDITION with ILLEGAL REQUEST and this ASC (ASCQ 0): the target refused the command as sent. */
export function isIllegalRequest(err: unknown, asc: number): err is CheckConditionError {
  return err instanceof CheckConditionError && err.sense.valid && err.sense.key === KEY.illegalRequest && err.sense.asc === asc && err.sense.ascq === 0;
}

/**
 * ILLEGAL REQUEST, INVALID FIELD IN CDB (24/00): the target understood the opcode but not this
 * use of it, e.g. a service action it does not implement (tgtd has no PREEMPT AND ABORT).
 */
export const isInvalidFieldInCdb = (err: unknown): err is CheckConditionError => isIllegalRequest(err, 0x24);

export class ScsiTimeoutError extends ScsiError {
  override name = 'ScsiTimeoutError';
  readonly code = 'ERR_SCSI_TIMEOUT';
}

export class TransportError extends ScsiError {
  override name = 'TransportError';
  readonly code = 'ERR_SCSI_TRANSPORT';
}

export class NoPersistentReservationsError extends ScsiError {
  override name = 'NoPersistentReservationsError';
  readonly code = 'ERR_SCSI_NO_PR';
}

export interface ScsiResult {
  data: Buffer;
  /** Sense that came with GOOD status (rare: deferred errors, informational). */
  sense?: Sense;
  durationUs?: number;
}

const hex = (n: number) => `0x${n.toString(16).padStart(2, '0')}`;

/** Commands through a transport, with replies turned into results or typed errors. */
export class ScsiDevice {
  unitAttentions = 0;

  constructor(
    readonly transport: ScsiTransport,
    private readonly defaultTimeoutMs = 10_000,
  ) {}

  get name(): string {
    return this.transport.name;
  }

  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    try {
      return await this.once(cmd);
    } catch (err) {
      if (!(err instanceof CheckConditionError) || !err.sense.valid || err.sense.key !== KEY.unitAttention) throw err;
      this.unitAttentions++;
      // Clear what else is pending with TEST UNIT READY (its own unit attentions are expected).
      for (let i = 0; i < 3; i++) {
        try {
          await this.once({ cdb: testUnitReady(), timeoutMs: cmd.timeoutMs });
          break;
        } catch (e) {
          if (!(e instanceof CheckConditionError && e.sense.valid && e.sense.key === KEY.unitAttention)) break;
        }
      }
      return this.once(cmd);
    }
  }

  private async once(cmd: ScsiCommand): Promise<ScsiResult> {
    const opcode = cmd.cdb[0]!;
    const what = `${this.name}: opcode ${hex(opcode)}`;
    const timeoutMs = cmd.timeoutMs ?? this.defaultTimeoutMs;
    const reply = await this.withinDeadline(this.transport.execute({ ...cmd, timeoutMs }), timeoutMs, what, opcode);
    if (reply.hostStatus === DID_TIME_OUT || (reply.driverStatus & 0x0f) === DRIVER_TIMEOUT) {
      throw new ScsiTimeoutError(`${what} timed out after ${timeoutMs} ms`, this.name, opcode, reply);
    }
    if (reply.hostStatus !== 0) throw new TransportError(`${what} failed in transport: host status ${hex(reply.hostStatus)}`, this.name, opcode, reply);
    const sense = reply.sense.length > 0 ? decodeSense(reply.sense) : undefined;
    switch (reply.status) {
      case STATUS.good:
      case STATUS.conditionMet:
        return { data: reply.data, ...(sense?.valid ? { sense } : {}), ...(reply.durationUs !== undefined ? { durationUs: reply.durationUs } : {}) };
      case STATUS.reservationConflict:
        throw new ReservationConflictError(`${what}: RESERVATION CONFLICT`, this.name, opcode, reply);
      case STATUS.checkCondition: {
        const s = sense ?? { valid: false as const, reason: 'no sense data' };
        throw new CheckConditionError(`${what}: CHECK CONDITION: ${s.valid ? s.description : s.reason}`, this.name, opcode, reply, s);
      }
      default:
        throw new ScsiError(`${what}: status ${hex(reply.status)}`, this.name, opcode, reply);
    }
  }

  /** The transport's reply, or ScsiTimeoutError once the command is stuck (see stuckAfterMs). */
  private withinDeadline(pending: Promise<RawReply>, timeoutMs: number, what: string, opcode: number): Promise<RawReply> {
    const deadline = stuckAfterMs(timeoutMs);
    let timer: NodeJS.Timeout | undefined;
    const stuck = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ScsiTimeoutError(`${what}: no reply ${deadline} ms after it was sent (timeout ${timeoutMs} ms): stuck in the driver or the target`, this.name, opcode)), deadline);
    });
    return Promise.race([pending, stuck]).finally(() => clearTimeout(timer));
  }
}

/**
 * How long past its own timeout a command may stay unanswered. The kernel answers a timed-out
 * command once its error handler has aborted it or reset the device; a driver or target that
 * hangs in that recovery (LIO through tcm_loop does, on PREEMPT AND ABORT) never answers, and
 * the caller must not hang with it.
 */
export const stuckAfterMs = (timeoutMs: number) => 2 * timeoutMs + 1000;

/**
 * SG_IO on a device node (/dev/sgN or /dev/sdX), opened read-write and non-blocking (as
 * sg_persist does: a reserved or not-ready device must still open). close() when done.
 */
export class DeviceTransport implements ScsiTransport {
  private fd: number | undefined;
  /** Commands in the kernel: when each was sent, and its timeout. */
  private readonly inFlight = new Set<{ sentAt: number; timeoutMs: number }>();
  private closing = false;

  constructor(readonly name: string) {
    this.fd = openSync(name, constants.O_RDWR | constants.O_NONBLOCK);
  }

  async execute(cmd: ScsiCommand): Promise<RawReply> {
    if (this.fd === undefined || this.closing) throw new Error(`${this.name} is closed`);
    // Each command holds a libuv worker thread until the kernel answers. Once one is stuck past
    // its deadline, more would only block more threads (four in all, shared with fs and dns).
    const now = performance.now();
    for (const c of this.inFlight) {
      if (now - c.sentAt > stuckAfterMs(c.timeoutMs)) {
        throw new TransportError(`${this.name}: a command sent ${Math.round(now - c.sentAt)} ms ago is still stuck in the kernel; no more are sent until it returns`, this.name, cmd.cdb[0] ?? 0);
      }
    }
    const entry = { sentAt: now, timeoutMs: cmd.timeoutMs ?? 10_000 };
    this.inFlight.add(entry);
    try {
      return await native.sgIo(this.fd, cmd.cdb, cmd.dataIn ?? 0, cmd.dataOut, entry.timeoutMs);
    } finally {
      this.inFlight.delete(entry);
      if (this.inFlight.size === 0 && this.closing) this.close();
    }
  }

  /** Closes the fd; with a command in flight (its worker uses the fd), once that one is done. */
  close(): void {
    this.closing = true;
    if (this.inFlight.size > 0 || this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}
