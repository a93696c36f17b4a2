// Seed 002's SCSI heartbeat: the primary alternates RESERVE and RELEASE on the disk both servers
// share; the backup samples it with TEST UNIT READY, which a reservation held by the other
// initiator answers with RESERVATION CONFLICT. A status that changes means the primary is alive;
// one that stays the same past the timeout means it has failed (dead while reserved, or dead
// while released: both freeze the status). The device commands come in as functions, so the
// timing and the judgement are tested without a disk; `src/scsi` supplies the real ones.
import { EventEmitter } from 'node:events';
import type { Witness } from './witnessed-node-events.js';

/** What TEST UNIT READY said: the other initiator holds a reservation, or not. */
export type DiskSample = 'reserved' | 'free';

export type DiskVerdict = { kind: 'alive'; at: number } | { kind: 'dead'; at: number; lastChangeAt: number; stuck: DiskSample };

const now = () => performance.timeOrigin + performance.now();

/**
 * The judgement, as a pure state machine: samples in, verdicts out. Alive from the first change
 * seen; dead once no change has been seen for `timeoutMs` (counted from the last change, or from
 * the first sample if there never was one). Errors count as no sample: they neither prove life
 * nor freeze the status.
 */
export class DiskPulseJudge {
  private last: DiskSample | undefined;
  private lastChangeAt: number | undefined;
  private firstSampleAt: number | undefined;
  private verdict: 'unknown' | 'alive' | 'dead' = 'unknown';
  changes = 0;

  constructor(readonly timeoutMs: number) {
    if (!(timeoutMs > 0)) throw new RangeError('timeoutMs must be > 0');
  }

  get state(): 'unknown' | 'alive' | 'dead' {
    return this.verdict;
  }

  observe(sample: DiskSample, at: number): DiskVerdict[] {
    this.firstSampleAt ??= at;
    if (this.last !== undefined && sample !== this.last) {
      this.changes++;
      this.lastChangeAt = at;
      if (this.verdict !== 'alive') {
        this.verdict = 'alive';
        this.last = sample;
        return [{ kind: 'alive', at }];
      }
    }
    this.last = sample;
    return this.tick(at);
  }

  tick(at: number): DiskVerdict[] {
    const since = this.lastChangeAt ?? this.firstSampleAt;
    if (since === undefined || this.verdict === 'dead' || this.last === undefined) return [];
    if (at - since <= this.timeoutMs) return [];
    this.verdict = 'dead';
    return [{ kind: 'dead', at, lastChangeAt: since, stuck: this.last }];
  }
}

export interface DiskPulseOptions {
  /** How long each state (reserved, released) is held. */
  intervalMs: number;
}

/** The primary's side: RESERVE, wait, RELEASE, wait, ... Failures are counted and emitted, never thrown. */
export class DiskHeartbeatWriter extends EventEmitter<{ error: [Error] }> {
  private timer: NodeJS.Timeout | undefined;
  private reserved = false;
  private running = false;
  pulses = 0;
  failures = 0;

  constructor(
    private readonly ops: { reserve(): Promise<void>; release(): Promise<void> },
    private readonly options: DiskPulseOptions,
  ) {
    super();
    if (!(options.intervalMs > 0)) throw new RangeError('intervalMs must be > 0');
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.step();
  }

  /** Stops pulsing and leaves the disk released (after a command still in flight). */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.inFlight;
    if (this.reserved) await this.ops.release().catch((err: Error) => this.fail(err));
    this.reserved = false;
  }

  private inFlight: Promise<void> | undefined;

  private step(): void {
    if (!this.running) return;
    const began = now();
    this.inFlight = (async () => {
      try {
        if (this.reserved) await this.ops.release();
        else await this.ops.reserve();
        this.reserved = !this.reserved;
        this.pulses++;
      } catch (err) {
        this.fail(err as Error);
      }
    })();
    void this.inFlight.then(() => {
      if (this.running) this.timer = setTimeout(() => this.step(), Math.max(0, this.options.intervalMs - (now() - began)));
    });
  }

  private fail(err: Error): void {
    this.failures++;
    this.emit('error', err);
  }
}

export interface DiskWatchOptions {
  /** The writer's interval; samples are taken twice per interval so no state is missed. */
  intervalMs: number;
  /** No change for this long: dead. At least 3 intervals (a sample can land late). */
  timeoutMs: number;
}

/** The backup's side: TEST UNIT READY every half interval; also a Witness for node deaths. */
export class DiskHeartbeatWatcher extends EventEmitter<{ verdict: [DiskVerdict]; error: [Error] }> implements Witness {
  readonly name = 'disk';
  readonly judge: DiskPulseJudge;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  failures = 0;

  constructor(
    private readonly sample: () => Promise<DiskSample>,
    private readonly options: DiskWatchOptions,
    /** The node whose pulse this watches (a Witness answers only for it). */
    readonly node?: string,
  ) {
    super();
    if (!(options.intervalMs > 0) || !(options.timeoutMs >= 3 * options.intervalMs)) throw new RangeError('need intervalMs > 0 and timeoutMs >= 3 × intervalMs');
    this.judge = new DiskPulseJudge(options.timeoutMs);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    void this.round();
  }

  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
  }

  /** Dead by the disk too; a node this watcher does not watch is not its to dispute. */
  confirmsDown(node: string): boolean {
    if (this.node !== undefined && node !== this.node) return true;
    return this.judge.state === 'dead';
  }

  private async round(): Promise<void> {
    if (!this.running) return;
    const began = now();
    let verdicts: DiskVerdict[];
    try {
      const s = await this.sample();
      verdicts = this.judge.observe(s, now());
    } catch (err) {
      this.failures++;
      this.emit('error', err as Error);
      verdicts = this.judge.tick(now());
    }
    for (const v of verdicts) this.emit('verdict', v);
    if (!this.running) return;
    this.timer = setTimeout(() => void this.round(), Math.max(0, this.options.intervalMs / 2 - (now() - began)));
  }
}
