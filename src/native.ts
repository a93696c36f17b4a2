// Typed loader for the C++ addon. The addon does syscalls and bytes only; everything that
// decides lives in TypeScript. Each section below is implemented by one native/*.cc file.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const require = createRequire(import.meta.url);
// src/native.ts and dist/native.js both sit one level below the package root.
const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** A Node-style system error raised by the addon. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

// ---- packet_parse.cc (parsePacket is exported by packet_capture.cc) ----------------------
export const LINK_ETHERNET = 1;
export const LINK_RAW_IP = 0;

/** TCP flag bits as on the wire. */
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;

/** One TCP segment's headers, as parsed by the addon. Addresses are text (1.2.3.4 / ::1). */
export interface ParsedSegment {
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number; // uint32
  ack: number; // uint32
  flags: number;
  window: number; // raw 16-bit field, unscaled
  urgentPointer: number;
  payloadLength: number;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  tsval?: number;
  tsecr?: number;
  /** Present only when the capture was asked for payload bytes. */
  payload?: Buffer;
  /** When the kernel captured the frame, in ms since the epoch (sub-ms precision). */
  timeMs?: number;
}

// ---- tcp_flows.cc + packet_capture.cc ---------------------------------------------------
export type FlowState =
  | 'SYN_SENT' | 'SYN_RECEIVED' | 'ESTABLISHED' | 'FIN_WAIT' | 'CLOSING' | 'CLOSED' | 'RESET';

/** What one side of a flow has been seen to send. */
export interface FlowSide {
  address: string;
  port: number;
  /** seq of the next byte this side will send (its SND.NXT as seen on the wire). */
  nextSeq: number;
  /** Highest ack this side has sent (its RCV.NXT when it last acked). */
  ack: number;
  /** Last advertised window, scaled by the side's wscale when known. */
  window: number;
  wscale: number; // -1 when the SYN was not seen
  mss: number; // 0 when unknown
  sackPermitted: boolean;
  tsval: number; // last TSval sent, 0 when none
  tsecr: number;
  finSent: boolean;
  lastSeenMs: number;
  packets: number;
  /** Payload bytes seen from this side, retransmissions included. */
  bytes: number;
}

export interface FlowRecord {
  family: 4 | 6;
  /** 'a' is the side that sent the SYN when the handshake was seen, else the first side seen. */
  a: FlowSide;
  b: FlowSide;
  state: FlowState;
  handshakeSeen: boolean;
  firstSeenMs: number;
  lastSeenMs: number;
}

/** A flow table snapshot as the addon copies it out: numbers per flow, two addresses per flow. */
export interface RawFlows {
  count: number;
  numbers: Float64Array;
  addresses: string[];
  /** The table's generation: grows by one per segment that updated a flow. */
  generation: number;
}

export interface CaptureOptions {
  /** An interface name, or 'any': every interface (frames are then read from their IP header). */
  interface: string;
  /** Classic BPF program as struct sock_filter[] bytes (8 bytes per instruction). */
  filter?: Buffer;
  /** Ring geometry; defaults 1 MiB blocks x 8. */
  blockSize?: number;
  blockCount?: number;
  /** A partly filled block is handed over after this many ms (default 2): the ring's latency. */
  blockTimeoutMs?: number;
  /** Deliver up to this many payload bytes per segment to onSegments (0 = none, the default). */
  payloadBytes?: number;
  /** Flows idle longer than this are expired on each poll (default 600000 ms). */
  idleTimeoutMs?: number;
  /**
   * 'block' (default): a TPACKET_V3 ring, handed over per block (up to 2 ms late). 'packet': no
   * ring, a wake-up per packet (tens of microseconds), for what must be known at once.
   */
  wakeup?: 'block' | 'packet';
  /** Deliver only segments carrying one of these TCP flags (plus, with payloadBytes, data). */
  deliverFlags?: number;
  /** false: no flow table, segments are only delivered (default true). */
  trackFlows?: boolean;
  /**
   * true: the ring ('block') is set up by open() on a libuv worker instead of in the
   * constructor, which would hold the event loop for a kernel RCU grace period (PACKET_RX_RING:
   * 7-44 ms measured, more on a loaded host). Nothing is captured until open() resolves.
   */
  background?: boolean;
}

export interface CaptureStats {
  packets: number; // frames read from our ring
  drops: number; // dropped by the kernel because the ring was full (PACKET_STATISTICS)
  malformed: number; // frames that were not a valid, whole TCP segment
  flows: number;
  refused: number; // segments that could not start a flow (lone RST, table full)
  /** Errors the socket reported (ENETDOWN when its interface went down), each taken and watching resumed. */
  pollErrors: number;
  lastErrno: number; // 0 when none
  /** False once an error could not be taken and the capture stopped (it then hears nothing). */
  polling: boolean;
}

export interface NativeCapture {
  /**
   * Starts uv_poll on the ring (for a background capture, once open() has set it up; never, for
   * one whose open() failed: stats().polling stays false); onSegments gets each batch while
   * delivery is on.
   */
  start(onSegments: (segments: ParsedSegment[]) => void): void;
  /**
   * For a capture made with background: true, sets the ring up on a libuv worker; resolves once
   * frames land in it, rejects with the failing syscall's error (code, errno, syscall; also
   * counted in stats().pollErrors and lastErrno). Resolves at once otherwise, and once closed.
   * Throws ERR_INVALID_ARG_VALUE when called twice while opening.
   */
  open(): Promise<void>;
  /** Whether parsed segments are turned into JS objects and delivered (off: tracking only). */
  setDeliver(on: boolean): void;
  stop(): void;
  /**
   * Stops capturing at once; the socket is closed and the ring unmapped on a libuv worker
   * (closing a packet socket waits for an RCU grace period), and the promise resolves then.
   * Idempotent.
   */
  close(): Promise<void>;
  /** The flow table, flat (see FLOW_FIELDS in net/flow-tracker.ts); FlowTracker.flows() builds records.
   *  With `since` (a generation an earlier call returned): only flows updated after it. */
  flows(since?: number): RawFlows;
  /** The flow between two endpoints (either order): count 0 or 1. Throws on bad or mixed-family addresses. */
  find(x: string, xPort: number, y: string, yPort: number): RawFlows;
  /** Replaces the BPF program on the live socket (the flow table stays); optionally the payload bytes delivered. */
  setFilter(filter: Buffer, payloadBytes?: number): void;
  stats(): CaptureStats;
}

// ---- forge.cc ---------------------------------------------------------------------------
export interface SegmentSpec {
  src: string;
  dst: string; // same family as src
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  window?: number; // default 65535 (raw field)
  urgentPointer?: number;
  payload?: Uint8Array;
  /** When set, a timestamp option (NOP NOP TS) is added with these values. */
  tsval?: number;
  tsecr?: number;
  ttl?: number; // IPv4 TTL / IPv6 hop limit, default 64
}

export interface NativeRawSender {
  /** Sends one forged segment; returns the number of bytes written. */
  send(spec: SegmentSpec): number;
  close(): void;
}

// ---- sockdiag.cc ------------------------------------------------------------------------
export interface DiagSocket {
  family: 4 | 6;
  state: number; // TCP_ESTABLISHED = 1, ... as in include/net/tcp_states.h
  src: string;
  sport: number;
  dst: string;
  dport: number;
  /** Device the socket is bound to (0 = none); needed to destroy e.g. IPv6 link-local ones. */
  ifindex: number;
  /** 0 for sockets no fd refers to (TIME_WAIT, NEW_SYN_RECV). */
  inode: number;
  uid: number;
  /** sock cookie as a decimal string (64-bit). */
  cookie: string;
  /**
   * Bytes received and not read by the process (RCV.NXT - copied_seq; for a listener, the
   * accept queue's length): idiag_rqueue, as /proc/net/tcp's rx_queue. 0 for TIME_WAIT.
   */
  rqueue: number;
  /**
   * Bytes written and not acknowledged (write_seq - SND.UNA; for a listener, its backlog):
   * idiag_wqueue, as /proc/net/tcp's tx_queue. 0 for TIME_WAIT.
   */
  wqueue: number;
}

/**
 * A dump as the addon hands it over: per socket 11 numbers (family, state, sport, dport,
 * ifindex, inode, uid, cookie low and high 32 bits, rqueue, wqueue) and 2 addresses (src, dst).
 */
export interface RawSockets {
  count: number;
  numbers: Float64Array;
  addresses: string[];
}

/** What SOCK_DESTROY needs to name one socket exactly; ifindex defaults to 0. */
export type DiagSocketId = Pick<DiagSocket, 'family' | 'src' | 'sport' | 'dst' | 'dport' | 'cookie'> &
  Partial<Pick<DiagSocket, 'ifindex'>>;

// ---- netlink_addr.cc -------------------------------------------------------------------
export interface AddressEntry {
  prefixLength: number;
  /** IFA_F_* bits (include/uapi/linux/if_addr.h): TENTATIVE 0x40, DADFAILED 0x08, DEPRECATED 0x20, ... */
  flags: number;
  /** RT_SCOPE_*: 0 universe, 253 link, 254 host. */
  scope: number;
  /** Seconds left, -1 for forever. */
  preferredLifetime: number;
  validLifetime: number;
}

// ---- socket_ops.cc ----------------------------------------------------------------------
export interface RepairSeq {
  sendSeq: number; // write_seq (SND.NXT + unsent)
  recvSeq: number; // rcv_nxt
}

// ---- tcp_repair.cc ----------------------------------------------------------------------
/** One end of a connection as the addon reports and takes it. */
export interface NativeEndpoint {
  address: string;
  port: number;
  /** IPv6 only: the interface index of a link-local address (0 otherwise). */
  scopeId?: number;
}

/**
 * A connection's TCP_REPAIR state in the addon's flat shape (src/net/tcp-repair-state.ts is the
 * typed, validated form). Sequence numbers are uint32; windows in bytes (already scaled).
 */
export interface NativeRepairState {
  family: 4 | 6;
  local: NativeEndpoint;
  remote: NativeEndpoint;
  /** SND.UNA: seq of sendQueue[0]. */
  sendSeq: number;
  /** Unacknowledged then unsent bytes (write_seq - SND.UNA of them). */
  sendQueue: Uint8Array;
  /** How many trailing bytes of sendQueue were never transmitted (SIOCOUTQNSD). */
  sendUnsent: number;
  /** Seq of recvQueue[0]: the first byte the application has not read. */
  recvSeq: number;
  recvQueue: Uint8Array;
  /** mss_clamp: the peer's MSS (TCP_MAXSEG read in repair mode). */
  mss: number;
  sack: boolean;
  timestamps: boolean;
  wscale: boolean;
  sndWscale: number;
  rcvWscale: number;
  /** TCP_TIMESTAMP: the TSval clock (ms, with the connection's random offset). */
  timestamp: number;
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
  /** SO_SNDBUF / SO_RCVBUF as getsockopt reports them (the kernel's doubled values). */
  sndbuf: number;
  rcvbuf: number;
}

export interface NativeRestoreOk {
  fd: number;
  /** Trailing send-queue bytes the kernel did not take; the caller writes them. */
  pending: number;
  durationUs: number;
}
export type NativeRestoreResult = NativeRestoreOk | { error: NativeError; durationUs: number };

/** The TCP_INFO fields that show whether a connection kept its options. */
export interface TcpInfoSummary {
  state: number;
  /** TCPI_OPT_*: 1 timestamps, 2 SACK, 4 window scale. */
  options: number;
  sndWscale: number;
  rcvWscale: number;
  sndMss: number;
  rcvMss: number;
  rttUs: number;
  sndCwnd: number;
  totalRetrans: number;
  bytesAcked: number;
  bytesReceived: number;
}

export interface NativeBindings {
  parsePacket(buf: Uint8Array, linkType: number, options?: { verifyChecksum?: boolean }): ParsedSegment | null;
  Capture: new (options: CaptureOptions) => NativeCapture;

  buildSegment(spec: SegmentSpec): Buffer;
  /**
   * A header-included raw socket; `ifname`: the interface link-local destinations (fe80::/10,
   * 169.254.0.0/16) leave through. Without one, sending to such a destination throws.
   */
  RawSender: new (family: 4 | 6, ifname?: string) => NativeRawSender;

  tcpSockets(family: 4 | 6): DiagSocket[];
  /** The same dump on a libuv worker, flat (net/sockdiag.ts decodes it); only these states (bitmask of 1 << state) and local ports. */
  tcpSocketsAsync(family: 4 | 6, options?: { states?: number; localPorts?: number[] }): Promise<RawSockets>;
  /** SOCK_DESTROY of each, over one netlink socket on a libuv worker: per socket 0 or the errno (2 = ENOENT). */
  destroySocketsAsync(sockets: DiagSocketId[]): Promise<Int32Array>;
  /** /proc/PID/fd scanned on a libuv worker (every process, or only pid: ENOENT when gone): (inode, pid, fd) for one holder of each socket inode. */
  socketOwnersAsync(inodes?: number[], pid?: number): Promise<Float64Array>;
  /** SOCK_DESTROY (CAP_NET_ADMIN): RST to the peer, ECONNABORTED to the owner. ENOENT if gone. */
  destroySocket(sock: DiagSocketId): void;

  /** pidfd_open(pid) watched with uv_poll: onExit(timeMs) runs once when the process exits. */
  ProcessWatch: new (pid: number) => { start(onExit: (timeMs: number) => void): void; close(): void };
  /**
   * posix_spawnp(3) of `file` (PATH lookup) with `args` (argv[1..]): no copy of this process
   * (vfork semantics), stdio on /dev/null, its own process group, default signal dispositions
   * and an empty mask. Throws ErrnoError (syscall posix_spawnp: ENOENT, EACCES...). start()
   * must follow at once: onExit(code, signal) once the child is reaped (waitid on its pidfd);
   * killGroup(signal) signals its group until then (false once reaped or gone).
   */
  Spawned: new (file: string, args: string[]) => { readonly pid: number; start(onExit: (code: number | null, signal: number | null) => void): void; killGroup(signal: number): boolean };
  /**
   * The wall clock (CLOCK_REALTIME) in ms since the epoch, fractional: the clock capture rings
   * stamp frames with (ParsedSegment.timeMs), to a fraction of a µs, unlike Date.now().
   */
  realtimeMs(): number;

  /** pidfd_open(pid) then pidfd_getfd(fd): a duplicate of another process's fd (CAP_SYS_PTRACE). */
  borrowFd(pid: number, fd: number): number;
  /** send(2) on an fd, MSG_OOB when oob; returns bytes written. Never blocks (MSG_DONTWAIT). */
  sendOnFd(fd: number, data: Uint8Array, oob: boolean): number;
  shutdownWrite(fd: number): void;
  /** shutdown(fd, SHUT_RD): reads see end-of-file from now on; TCP sends nothing. */
  shutdownRead(fd: number): void;
  closeFd(fd: number): void;
  /** fcntl(F_DUPFD_CLOEXEC): a new fd for the same open file, the caller's to closeFd. Throws (syscall 'fcntl') EBADF, EMFILE. */
  dupFd(fd: number): number;
  /** getpeername(2) of a connected IPv4/IPv6 socket. Throws (syscall 'getpeername') ENOTCONN, ENOTSOCK, EBADF; ERR_INVALID_ARG_VALUE for another family. */
  socketPeer(fd: number): { address: string; port: number };
  /** TCP_REPAIR peek of a local socket's kernel sequence numbers (CAP_NET_ADMIN). */
  tcpRepairSeq(fd: number): RepairSeq;
  /**
   * Closes a connected TCP socket without a FIN or a RST (repair mode first; CAP_NET_ADMIN).
   * Throws (syscall 'setsockopt') and leaves the fd open when repair mode is refused.
   */
  tcpRepairClose(fd: number): void;
  /** flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another open file holds it. Never waits. */
  tryLockExclusive(fd: number): boolean;

  addAddress(ifname: string, address: string, prefixLength: number): void;
  removeAddress(ifname: string, address: string, prefixLength: number): void;
  /** RTM_GETADDR: each entry of address on ifname ([] when absent; IPv4 may hold it under several prefix lengths). */
  addressEntries(ifname: string, address: string): AddressEntry[];
  /**
   * RTM_GETROUTE (`ip route get ADDRESS oif IFNAME`): true when packets for address are
   * delivered on this host (its route is local). Throws TypeError for a bad address, a
   * NativeError (ENODEV) for an unknown interface.
   */
  routesLocally(ifname: string, address: string): boolean;
  /**
   * RTM_NEWADDR + NLM_F_REPLACE with IFA_CACHEINFO: valid and preferred lifetime of an address on
   * ifname, in seconds from now (-1: forever, permanent again); `flags` (IFA_F_*) replace an IPv6
   * address's own. The kernel ADDS an address that is not there: call it only for one just seen.
   */
  setAddressLifetime(ifname: string, address: string, prefixLength: number, lifetimeSeconds: number, flags: number): void;
  /** Gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) for address on ifname. */
  announceAddress(ifname: string, address: string): void;
  /**
   * A packet socket on ifname (Ethernet only: EOPNOTSUPP otherwise) bound to ARP (IPv4 address)
   * or IPv6 with `filter` (bpf-filter.ts buildProbeAnswerFilter) attached; net/address-probe.ts
   * wraps it. Throws ERR_INVALID_ARG_VALUE, ENODEV, or the failing syscall's error.
   */
  AddressProbe: new (ifname: string, address: string, filter: Buffer) => NativeAddressProbe;

  /**
   * One SCSI command through SG_IO, on a worker thread. `dataIn`: bytes to read (0: none);
   * `dataOut`: bytes to write (or undefined). Rejects with a NativeError (syscall 'ioctl') when
   * the ioctl fails; a command the target refused resolves with its status and sense.
   */
  sgIo(fd: number, cdb: Uint8Array, dataIn: number, dataOut: Uint8Array | undefined, timeoutMs: number): Promise<SgIoReply>;
  /**
   * TCP_REPAIR dump of an ESTABLISHED socket (CAP_NET_ADMIN). keepRepair: the socket stays in
   * repair mode (sends nothing; closing it sends neither FIN nor RST). Throws EINVAL (listening)
   * or ENOTCONN (any other state), syscall 'getsockopt'.
   */
  tcpRepairDump(fd: number, keepRepair: boolean): NativeRepairState;
  /** A new socket in the dumped state (O_NONBLOCK, O_CLOEXEC), on the JS thread. Throws the failing syscall's error. */
  tcpRepairRestore(state: NativeRepairState & { transparent?: boolean }): NativeRestoreOk;
  /** The same for many states, one after another on a libuv worker; one result per state, in order. */
  tcpRepairRestoreAsync(states: Array<NativeRepairState & { transparent?: boolean }>): Promise<NativeRestoreResult[]>;
  tcpInfoOf(fd: number): TcpInfoSummary;

  /**
   * splice_relay.cc: joins two connected stream sockets both ways in the kernel. Duplicates both
   * fds (the caller closes its own). Each direction takes a pipe from a per-thread pool while bytes
   * pass (new ones of `pipeBytes`, default 256 KiB, kept smaller when the kernel refuses).
   * Throws ERR_INVALID_ARG_VALUE, or the fcntl/getsockopt error.
   */
  SpliceRelay: new (fdA: number, fdB: number, pipeBytes?: number) => NativeSpliceRelay;
  /** Empty pipes the SpliceRelay pool keeps on this thread (2 fds each; 16 at most). */
  splicePipesFree(): number;

  /**
   * nf_queue.cc: binds netfilter queue `queueNumber` (nfnetlink_queue), packets copied whole up
   * to copyBytes, at most maxLength held (the kernel drops beyond). Throws EPERM (no
   * CAP_NET_ADMIN, or another socket holds the queue) or the socket's error.
   */
  EgressQueue: new (queueNumber: number, copyBytes: number, maxLength: number) => NativeEgressQueue;
}

/** One packet a netfilter queue handed over: held by the kernel until a verdict covers its id. */
export interface QueuedPacket {
  /** The queue's id (grows by one per packet; verdicts name the last id they cover). */
  id: number;
  /** When it was read (wall clock, ms since the epoch): after the read that returned it, before any verdict on it. */
  timeMs: number;
  /** The packet parsed, absent when it is not a whole TCP segment over IPv4/IPv6. */
  segment?: ParsedSegment;
}

export interface NativeEgressQueue {
  /** onPackets(batch) on the loop for each batch read, in id order. */
  start(onPackets: (batch: QueuedPacket[]) => void): void;
  /** A VERDICT_BATCH: every packet held up to `id`, in the queue's order, accepted or dropped. */
  verdict(id: number, accept: boolean): void;
  stats(): { received: number; unparsed: number; malformed: number; overflows: number; verdictErrors: number };
  /** Accepts what is still held, unbinds, closes; idempotent. */
  close(): void;
}

/** Bytes written by a SpliceRelay, per direction (userspace leftovers included). */
export interface SpliceBytes {
  aToB: number;
  bToA: number;
}

/** How a SpliceRelay ended: the counts, the socket an error came from, which EOF came first. */
export interface SpliceEnd extends SpliceBytes {
  side?: 'a' | 'b';
  firstEof?: 'a' | 'b';
}

export interface NativeSpliceRelay {
  /**
   * Starts relaying (uv_poll; the first pass on the next loop turn). aToB/bToA: bytes already read
   * from one socket in userspace, written to the other before anything else; aEof/bEof: that
   * socket's EOF was already read. EOF one way shuts the other socket down for writing (SHUT_WR).
   * onEnd runs once: err null when both ways reached EOF, else a NativeError (syscall splice, send,
   * shutdown, pipe2, or poll for an error the socket reported); everything is closed before it runs.
   */
  start(init: { aToB?: Uint8Array; bToA?: Uint8Array; aEof?: boolean; bEof?: boolean }, onEnd: (err: NativeError | null, end: SpliceEnd) => void): void;
  /** Written so far. */
  bytes(): SpliceBytes;
  /** Closes both sockets and the pipes now (FIN, or RST with unread bytes); onEnd is not called. Idempotent. */
  close(): SpliceBytes;
  /**
   * Stops relaying without closing anything, for another relay to go on where this one stopped
   * (a relay keeper handing its relays to its replacement). fdA/fdB are the caller's now (it
   * closes them); aToB/bToA: bytes read from one socket and not yet written to the other (what
   * the pipes held included), to give the next relay as its leftovers, with aEof/bEof; `bytes`:
   * written so far. onEnd is not called. Throws when not relaying (started, not ended), and
   * (syscall 'read') when a pipe cannot be read out: the relay is closed then.
   */
  detach(): { fdA: number; fdB: number; aToB: Buffer; bToA: Buffer; aEof: boolean; bEof: boolean; bytes: SpliceBytes };
}

/** native/address_probe.cc: an ARP probe (RFC 5227 2.1.1) or DAD solicitation (RFC 4862 5.4.2) and the answers. */
export interface NativeAddressProbe {
  /** ifname's MAC, aa:bb:cc:dd:ee:ff: the probe's sender. */
  readonly mac: string;
  /** One probe frame onto the link (IPv4: ARP request from 0.0.0.0, broadcast; IPv6: NS from :: to the solicited-node group). Throws the sendto error. */
  send(): void;
  /**
   * Watches the socket (uv_poll): onFrames(frames, timeMs) with the frames the filter passed that
   * this host did not send, each from its Ethernet header (at most 256 bytes), and the time read
   * (ms since the epoch); onError(err) for an error the socket reported (ENETDOWN...).
   */
  start(onFrames: (frames: Buffer[], timeMs: number) => void, onError: (err: NativeError) => void): void;
  /** The frames queued on the socket now, read at once (the same that onFrames gets); [] once closed. */
  read(): Buffer[];
  /** Stops watching and closes the socket on a libuv worker (a packet socket's close waits ~10 ms for RCU). Idempotent. */
  close(): Promise<void>;
}

/** What SG_IO reports (sg v3 header): SCSI status, transport and driver status, sense, data. */
export interface SgIoReply {
  status: number;
  maskedStatus: number;
  hostStatus: number;
  driverStatus: number;
  /** SG_INFO_*: bit 0 set means something other than GOOD (check status/host/driver). */
  info: number;
  resid: number;
  durationUs: number;
  sense: Buffer;
  data: Buffer;
}

function load(): NativeBindings {
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeBindings;
  return nodeGypBuild(packageRoot);
}

export const native: NativeBindings = load();
