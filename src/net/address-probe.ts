// Whether anyone on a link still holds an address, asked before this host adds it: the address
// lease's check against a kernel that removes an expired address late (agent/address-lease.ts).
//   IPv4: an ARP probe (RFC 5227 section 2.1.1): ARP request, sender IP 0.0.0.0, target the address.
//   IPv6: a DAD Neighbour Solicitation (RFC 4862 section 5.4.2): source ::, destination the
//         solicited-node multicast group of the address, target the address.
// A host holding the address answers at once (an ARP reply; a Neighbour Advertisement); nobody
// answering within a window means nobody on the link holds it. The native AddressProbe
// (native/address_probe.cc) sends the frames and hands over what its filter lets through
// (bpf-filter.ts buildProbeAnswerFilter); here: which frame is an answer (parseProbeAnswer,
// pure), one round of probing (AddressProbe.round), and the loop that probes until the address
// is gone or gives up (probeUntilGone, pure, its probe and clock injected).
import { setTimeout as sleepFor } from 'node:timers/promises';
import { native, type NativeAddressProbe } from '../native.js';
import { buildProbeAnswerFilter } from './bpf-filter.js';
import { addressBytes, canonicalAddress } from './endpoint.js';

/**
 * How long one round waits for an answer, ms. A holder's kernel answers from its receive path
 * (softirq), without any process being scheduled. Measured (test/lab/address-probe.test.ts, the
 * labs' bridge on a 2-core VM shared with other jobs, 10 runs of 300 rounds per family, the
 * taker's own loop delay included): median 0.08-0.20 ms, 99th percentile under 2.3 ms in all but
 * one run (5 ms), the longest 13 ms (IPv4) and 52 ms (IPv6, once, load average 4 on 2 cores);
 * with both cores kept busy in both namespaces, at most 22 ms. A switched LAN adds well under a
 * millisecond. 100 ms is above all of it, and small beside the lease the taker has just waited out.
 */
export const PROBE_WINDOW_MS = 100;

/** Probe frames per round, evenly spread over its window: one lost frame does not make the address look free. */
export const PROBE_FRAMES_PER_ROUND = 2;

/** While the address is held: from the start of one round to the next, ms. */
export const PROBE_EVERY_MS = 100;

/**
 * How long to go on probing an address that is still held before giving up, ms. The longest the
 * kernel was seen keeping an address past its lifetime is 4737 ms (IPv6, a CI run), about
 * 3.4 s past what the taker waits: twice that and more. A holder that keeps it longer is not late
 * but alive, or holds it by hand: not for a taker to settle by adding it too.
 */
export const PROBE_GIVE_UP_MS = 10_000;

/** An answer to a probe: a frame saying that `mac` holds the address. */
export interface ProbeAnswer {
  /** Who holds it: the ARP sender hardware address; the NA's target link-layer address option, else its Ethernet source. */
  mac: string;
  /** An ARP reply (the holder's answer to the probe), an ARP request from the address (the holder resolving someone), or a Neighbour Advertisement. */
  kind: 'arp-reply' | 'arp-request' | 'na';
}

const macAt = (f: Buffer, o: number) => [...f.subarray(o, o + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');

/**
 * Whether an Ethernet frame says that someone holds `address` (pure; what the native probe's
 * filter lets through, checked in full). IPv4 (RFC 5227 section 2.1.1, conflicts): an ARP
 * request or reply over Ethernet whose sender IP is the address. IPv6 (RFC 4862 section 5.4.4):
 * a Neighbour Advertisement (hop limit 255, code 0) whose target is the address. A frame from
 * `ownMac` (this host) is never an answer. Undefined for anything else, malformed or cut short.
 */
export function parseProbeAnswer(frame: Uint8Array, address: string, ownMac?: string): ProbeAnswer | undefined {
  const f = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  const want = addressBytes(address);
  const own = ownMac?.toLowerCase();
  if (f.length < 14) return undefined;
  const ethSource = macAt(f, 6);
  if (ethSource === own) return undefined;
  const type = f.readUInt16BE(12);
  if (want.length === 4) {
    if (type !== 0x0806 || f.length < 42) return undefined;
    if (f.readUInt16BE(14) !== 1 || f.readUInt16BE(16) !== 0x0800 || f[18] !== 6 || f[19] !== 4) return undefined;
    const op = f.readUInt16BE(20);
    if (op !== 1 && op !== 2) return undefined;
    if (!f.subarray(28, 32).equals(want)) return undefined;
    const mac = macAt(f, 22);
    if (mac === own) return undefined;
    return { mac, kind: op === 2 ? 'arp-reply' : 'arp-request' };
  }
  const ip = 14;
  const icmp = ip + 40;
  if (type !== 0x86dd || f.length < icmp + 24) return undefined;
  if (f[ip]! >> 4 !== 6 || f[ip + 6] !== 58 || f[ip + 7] !== 255) return undefined;
  const payload = f.readUInt16BE(ip + 4);
  if (payload < 24) return undefined;
  if (f[icmp] !== 136 || f[icmp + 1] !== 0) return undefined;
  if (!f.subarray(icmp + 8, icmp + 24).equals(want)) return undefined;
  let mac = ethSource;
  const end = Math.min(f.length, icmp + payload);
  for (let o = icmp + 24; o + 8 <= end; ) {
    const len = f[o + 1]! * 8;
    if (len === 0) break; // malformed option: the Ethernet source stands
    if (f[o] === 2 && o + len <= end) {
      mac = macAt(f, o + 2); // target link-layer address
      break;
    }
    o += len;
  }
  if (mac === own) return undefined;
  return { mac, kind: 'na' };
}

/** One round of probing: the first answer within the window, or none. */
export interface ProbeRound {
  answer?: ProbeAnswer;
  /** From the round's first frame to the answer, ms. */
  answerMs?: number;
}

/** Sends one round of probes and waits up to windowMs for an answer (what probeUntilGone drives). */
export type ProbeOnce = (windowMs: number) => Promise<ProbeRound>;

const clock = () => performance.timeOrigin + performance.now();

/**
 * The native probe for one address on one interface, open until close(): rounds of probe
 * frames and the answers to them. Needs CAP_NET_RAW; the interface must be Ethernet.
 */
export class AddressProbe {
  /** The interface's MAC: the probes' sender. */
  readonly mac: string;
  private readonly probe: NativeAddressProbe;
  private round_: { startedAt: number; answer: (a: ProbeAnswer, at: number) => void; fail: (err: Error) => void } | undefined;
  private closed = false;

  /**
   * Opens the probe's socket on `ifname` for `address` (IPv4: ARP, IPv6: NDP). Throws TypeError
   * for a string that is not an IP address, ENODEV (no such interface), EOPNOTSUPP (not
   * Ethernet), EPERM (no CAP_NET_RAW), or another syscall's error (code, errno, syscall as Node's).
   */
  static open(ifname: string, address: string): AddressProbe {
    return new AddressProbe(ifname, canonicalAddress(address));
  }

  private constructor(readonly ifname: string, readonly address: string) {
    this.probe = new native.AddressProbe(ifname, address, buildProbeAnswerFilter(address));
    this.mac = this.probe.mac;
    try {
      this.probe.start(
        (frames) => this.frames(frames),
        (err) => this.round_?.fail(err),
      );
    } catch (err) {
      void this.probe.close().catch(() => undefined);
      throw err;
    }
  }

  /**
   * One round: PROBE_FRAMES_PER_ROUND probe frames spread over `windowMs` (the first at once),
   * resolved with the first answer (and how long it took, ms) or, once the window is over,
   * with none. Rejects with the send error of a probe frame (sendto's code and errno), an
   * error the socket reported meanwhile, or EBADF once closed. One round at a time.
   */
  round(windowMs: number): Promise<ProbeRound> {
    if (this.closed) return Promise.reject(Object.assign(new Error(`EBADF: the probe of ${this.address} is closed`), { code: 'EBADF' }));
    if (this.round_) return Promise.reject(new Error(`a round of probes for ${this.address} is already running`));
    if (!(windowMs > 0)) return Promise.reject(new RangeError(`windowMs must be > 0: ${windowMs}`));
    return new Promise<ProbeRound>((resolve, reject) => {
      const timers: NodeJS.Timeout[] = [];
      const startedAt = performance.now();
      const settle = (done: () => void) => {
        for (const t of timers) clearTimeout(t);
        this.round_ = undefined;
        done();
      };
      this.round_ = {
        startedAt,
        answer: (answer, at) => settle(() => resolve({ answer, answerMs: at - startedAt })),
        fail: (err) => settle(() => reject(err)),
      };
      const send = () => {
        try {
          this.probe.send();
        } catch (err) {
          this.round_?.fail(err as Error);
        }
      };
      send();
      for (let i = 1; i < PROBE_FRAMES_PER_ROUND && this.round_; i++) timers.push(setTimeout(send, (windowMs * i) / PROBE_FRAMES_PER_ROUND));
      if (!this.round_) return;
      timers.push(
        setTimeout(() => {
          // Timers run before the loop polls: an answer already on the socket is read now.
          this.frames(this.probe.read());
          if (this.round_) settle(() => resolve({}));
        }, windowMs),
      );
    });
  }

  /** Stops and closes the socket (on a libuv worker: resolves when it is closed). A round still running rejects (EBADF). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.round_?.fail(Object.assign(new Error(`EBADF: the probe of ${this.address} was closed`), { code: 'EBADF' }));
    await this.probe.close();
  }

  private frames(frames: Buffer[]): void {
    const at = performance.now();
    for (const f of frames) {
      if (!this.round_) return; // between rounds: the next round asks again
      const answer = parseProbeAnswer(f, this.address, this.mac);
      if (answer) this.round_.answer(answer, at);
    }
  }
}

/** What the probes heard while the address was held. */
export interface HeldBy {
  /** Every MAC that answered, the first first. */
  macs: string[];
  /** Rounds that drew an answer. */
  answers: number;
  /** When the first and the last answers came (ms, the options' clock). */
  firstAt: number;
  lastAt: number;
}

export type UntilGone =
  /** Nobody answered a round: the address is free on the link (at: when that round ended). */
  | { kind: 'gone'; probes: number; startedAt: number; at: number; held?: HeldBy }
  /** options.stop() gave a reason to stop probing (the address was neither found free nor given up on). */
  | { kind: 'stopped'; why: string; probes: number; held?: HeldBy };

export interface UntilGoneOptions {
  /** The address, for the error's message. */
  address: string;
  /** Who is expected to have held it (a peer's name), for the error's message. */
  holder?: string;
  /** Each round's window, ms (PROBE_WINDOW_MS). */
  windowMs?: number;
  /** From one round's start to the next while answered, ms (PROBE_EVERY_MS). */
  everyMs?: number;
  /** Probing past this long since the first round while still answered throws AddressHeldError, ms (PROBE_GIVE_UP_MS). */
  giveUpMs?: number;
  /** Asked before every round: a reason to stop (the takeover is abandoned, the agent stops), or undefined. */
  stop?: () => string | undefined;
  /** Told at the first answer (at: its time on the options' clock). */
  onHeld?: (h: { answer: ProbeAnswer; at: number }) => void;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

/** The address was still held on the link when probing gave up (code ERR_ADDRESS_HELD). */
export class AddressHeldError extends Error {
  readonly code = 'ERR_ADDRESS_HELD';
  constructor(
    readonly address: string,
    readonly held: HeldBy,
    readonly probes: number,
    /** How long it was probed, ms. */
    readonly ms: number,
    holder?: string,
  ) {
    super(
      `${address} is still held on the link${holder ? ` (${holder}'s)` : ''}: answered by ${held.macs.join(', ')} ` +
        `in ${held.answers} of ${probes} probe rounds over ${Math.round(ms)} ms; not added (two hosts would answer for it)`,
    );
    this.name = 'AddressHeldError';
  }
}

/**
 * Probes until nobody answers (RFC 5227 section 2.1.1 / RFC 4862 section 5.4: an answer means the
 * address is in use): a round of `windowMs`; answered, another `everyMs` after the last one
 * began, until a round draws no answer (resolves `gone`), `stop()` says to stop (resolves
 * `stopped`), or the address is still answered for `giveUpMs` after the first round (throws
 * AddressHeldError, code ERR_ADDRESS_HELD, naming every MAC that answered). The probe's own
 * errors are thrown as they are. Times in ms.
 */
export async function probeUntilGone(probe: ProbeOnce, options: UntilGoneOptions): Promise<UntilGone> {
  const windowMs = options.windowMs ?? PROBE_WINDOW_MS;
  const everyMs = options.everyMs ?? PROBE_EVERY_MS;
  const giveUpMs = options.giveUpMs ?? PROBE_GIVE_UP_MS;
  const now = options.now ?? clock;
  const sleep = options.sleep ?? ((ms: number) => sleepFor(ms));
  const startedAt = now();
  let probes = 0;
  let held: HeldBy | undefined;
  for (;;) {
    const why = options.stop?.();
    if (why !== undefined) return { kind: 'stopped', why, probes, ...(held ? { held } : {}) };
    const roundAt = now();
    const r = await probe(windowMs);
    probes++;
    if (!r.answer) return { kind: 'gone', probes, startedAt, at: now(), ...(held ? { held } : {}) };
    const at = roundAt + (r.answerMs ?? 0);
    if (!held) {
      held = { macs: [r.answer.mac], answers: 1, firstAt: at, lastAt: at };
      options.onHeld?.({ answer: r.answer, at });
    } else {
      held.answers++;
      held.lastAt = at;
      if (!held.macs.includes(r.answer.mac)) held.macs.push(r.answer.mac);
    }
    if (now() - startedAt >= giveUpMs) throw new AddressHeldError(options.address, held, probes, now() - startedAt, options.holder);
    const wait = roundAt + everyMs - now();
    if (wait > 0) await sleep(wait);
  }
}
