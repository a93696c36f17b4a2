// Recorded SCSI exchanges from real targets, for unit tests without a device. RecordingTransport
// wraps the real transport in the guest and keeps each command with the target's reply;
// ReplayTransport answers the same commands from that record, in order, and fails loudly when
// the code under test sends something else than was recorded (the replay no longer applies).
import type { RawReply, ScsiCommand, ScsiTransport } from '../../src/scsi/transport.js';

/** One command and its reply, bytes as hex (JSON). */
export interface Exchange {
  cdb: string;
  dataIn?: number;
  dataOut?: string;
  status: number;
  hostStatus: number;
  driverStatus: number;
  sense: string;
  data: string;
  resid: number;
}

export class RecordingTransport implements ScsiTransport {
  readonly exchanges: Exchange[] = [];
  constructor(private readonly inner: ScsiTransport) {}

  get name(): string {
    return this.inner.name;
  }

  async execute(cmd: ScsiCommand): Promise<RawReply> {
    const r = await this.inner.execute(cmd);
    this.exchanges.push({
      cdb: cmd.cdb.toString('hex'),
      ...(cmd.dataIn ? { dataIn: cmd.dataIn } : {}),
      ...(cmd.dataOut ? { dataOut: cmd.dataOut.toString('hex') } : {}),
      status: r.status, hostStatus: r.hostStatus, driverStatus: r.driverStatus,
      sense: Buffer.from(r.sense).toString('hex'), data: Buffer.from(r.data).toString('hex'), resid: r.resid,
    });
    return r;
  }
}

export class ReplayTransport implements ScsiTransport {
  private next = 0;
  constructor(
    readonly name: string,
    private readonly exchanges: readonly Exchange[],
  ) {}

  /** Whether every recorded exchange was asked for. */
  get done(): boolean {
    return this.next === this.exchanges.length;
  }

  async execute(cmd: ScsiCommand): Promise<RawReply> {
    const at = this.next;
    const e = this.exchanges[at];
    const cdb = cmd.cdb.toString('hex');
    if (!e) throw new Error(`${this.name}: replay ran out after ${at} exchanges; CDB ${cdb} was not recorded`);
    const dataOut = cmd.dataOut?.toString('hex');
    if (e.cdb !== cdb || e.dataOut !== dataOut || (e.dataIn ?? 0) !== (cmd.dataIn ?? 0)) {
      throw new Error(`${this.name}: replay diverged at exchange ${at}: recorded CDB ${e.cdb} (in ${e.dataIn ?? 0}, out ${(e.dataOut?.length ?? 0) / 2}), sent ${cdb} (in ${cmd.dataIn ?? 0}, out ${(dataOut?.length ?? 0) / 2})`);
    }
    this.next++;
    return { status: e.status, hostStatus: e.hostStatus, driverStatus: e.driverStatus, sense: Buffer.from(e.sense, 'hex'), data: Buffer.from(e.data, 'hex'), resid: e.resid };
  }
}
