// Continues a client connection on a new upstream (issue 12): the client socket (on the backup a
// restored TCP connection, adopted with adoptSocket) is joined to a fresh connection to the
// server that takes over (e.g. the promoted local Redis replica). The upstream first gets the
// session preamble and the requests the dead server never answered; the preamble's replies are
// swallowed (counted with the plugin's ReplyCounter), so the client sees exactly the replies to
// its own requests, in order. Then bytes flow both ways with backpressure: in the kernel (the
// addon's SpliceRelay, splice(2) through a pipe) once the relay's JS has nothing
// left to look at, in userspace until then.
//
// The handover to the kernel: JS must see the upstream's bytes while preamble replies are
// swallowed or a reply's start is checked (expectReply) or filtered (replyFilter), so those
// phases stay on the net.Sockets.
// Afterwards, at the first moment when both sockets' write queues are empty (libuv holds no
// byte of ours), in one synchronous stretch of JS (libuv cannot read meanwhile): the bytes Node
// has read but not delivered are taken out of both readable buffers, SpliceRelay dup()s both
// fds, and both net.Sockets are destroyed (closing their own fds, so no fd is ever watched by a
// Node stream and the relay's uv_poll at once). The taken bytes are written first, in order.
// Dup-and-destroy rather than never wrapping the sockets: the setup phase needs Node's streams
// (connect, framing, backpressure), and the restored client arrives as a net.Socket (adoptSocket).
// The userspace path stays for what the kernel cannot do (looking at bytes) and as the fallback
// when no handover moment comes (a socket already half-closed, or no fd exposed).
import net from 'node:net';
import { native, type NativeError, type NativeSpliceRelay, type SpliceEnd } from '../../native.js';
import type { PreambleDialog, ReadOnlyJudge, ReadOnlyReplay, ReplyCounter, ReplyFilter, SessionPreamble } from './exchange-tracker.js';
import { ReplyDigest, type ReplyFingerprint } from './reply-digest.js';
import type { KeeperError, RelayHandOff } from '../relay-keeper/keeper-client.js';
import { resetIfSelfConnected, selfConnectError } from '../self-connect.js';

export interface RelayOptions {
  /** The client's socket; the relay owns it from here (destroys it at the end). */
  client: net.Socket;
  /** Where the new upstream listens. */
  upstream: { host: string; port: number };
  /** Sent first; its `replies` complete replies never reach the client. */
  preamble: SessionPreamble;
  /**
   * A transaction the client was inside, rebuilt after the preamble and the hold, before the
   * replay and the client's bytes (ContinuePlan.transaction): `replay.before` is sent, its
   * replies judged and dropped. When the judge fails, `goodbye` goes to the client instead of
   * anything else, then FIN (RelayEnd.saidGoodbye); the upstream is closed (its transaction
   * with it).
   */
  transaction?: { replay: ReadOnlyReplay; goodbye: Uint8Array };
  /**
   * The upstream connection opened ahead by prepareUpstream() with this preamble (and
   * `upstream`): the relay takes it over instead of connecting, and its preamble is sent already.
   */
  prepared?: PreparedUpstream;
  /**
   * The replay and the client's bytes wait for it (the promotion of the upstream: a replica must
   * not get writes before); the preamble does not. When it rejects, the client is reset (its
   * socket's own RST, exact) and the relay ends with the error's message. When it resolves with
   * `{ answer }`, those bytes go to the client instead of `replay` to the upstream: the replies
   * to the replayed requests, known already (the dead server ran them; a replay would run them
   * twice). When it resolves with `{ readOnly }`, the replay is sent that way (after `readOnly.before`)
   * and the client's bytes wait until its judge passed the replies (a read: they go to the client)
   * or failed them (a write refused: the client is reset, the reason followed by `why`: why the
   * replay could not run as it was).
   */
  hold?: Promise<void | { answer: Uint8Array } | { readOnly: ReadOnlyReplay; why: string }>;
  /** The client's unanswered requests (bytes), sent after the preamble. */
  replay: Uint8Array;
  /** Frames the upstream's replies while the preamble's are swallowed (plugin.createReplyCounter()). */
  replyCounter: ReplyCounter;
  /** Give up when the upstream is not connected by then (ms, default 5000). */
  connectTimeoutMs?: number;
  /** An error reply (RESP '-' or '!') to the preamble ends the relay (default true): the session would differ. */
  refusePreambleErrors?: boolean;
  /**
   * The dead server had already sent the start of the reply to the first replayed request (the
   * client has it, or gets it in the restored socket's refill): the upstream's first reply must
   * begin with those bytes (their count and CRCs). They are dropped, not sent twice; if they
   * differ (the replay did not reproduce the reply: a write applied twice, say) the client is reset.
   */
  expectReply?: ReplyFingerprint;
  /**
   * Instead of expectReply: the replay asked for the rest of that reply (ReplyResume); the
   * upstream's first reply goes through this filter, which drops what the client has (an HTTP
   * 206's head) and fails when the reply does not go on from there (the client is reset).
   */
  replyFilter?: ReplyFilter;
  /**
   * Instead of relaying: these bytes to the client (a protocol goodbye, ContinuePlan.goodbye),
   * then FIN. No upstream is connected; the other options are ignored.
   */
  goodbye?: Uint8Array;
  /**
   * Relay the steady state in the kernel (splice(2), default true); false keeps every byte in
   * userspace (for comparison). `pipeBytes`: the size of pipes made for it (default 256 KiB).
   */
  splice?: boolean | { pipeBytes?: number };
  /**
   * Hands the steady state to the relay keeper, another process (RelayKeeperClient.handOff),
   * instead of splicing it here: the connection then outlives this process (stats.kept). Until
   * a keeper is connected (one being started) the relay goes on in userspace; when none comes
   * up, or the keeper refuses it, it is spliced here as without this option; when the keeper is
   * lost before it answers, the relay ends (nobody can tell whether the keeper took it).
   */
  keeper?: RelayHandOff;
}

export interface RelayStats {
  /** Client bytes written to the upstream (after preamble and replay). */
  clientBytes: number;
  /** Upstream bytes written to the client. */
  upstreamBytes: number;
  /** Preamble replies (and their bytes) swallowed. */
  swallowedReplies: number;
  swallowedBytes: number;
  /** Bytes of the first reply checked against what the dead server had sent of it, and dropped. */
  verifiedBytes: number;
  /** Bytes of the first reply the replyFilter dropped (a resumed reply's new head, say). */
  filteredBytes: number;
  /** Bytes the relay answered the replayed requests with itself (RelayOptions.hold's answer; counted apart from upstreamBytes). */
  answeredBytes: number;
  /** Whether the steady state was handed to the kernel (SpliceRelay); counted in the bytes above. */
  spliced: boolean;
  /** Whether the relay keeper holds it (RelayOptions.keeper): the bytes above count to the handover, and at the end all of them. */
  kept: boolean;
  /** Handed to the relay keeper, its answer not come yet (then `kept`, or spliced here, or ended). */
  handingOver: boolean;
  /** The replay ran read-only (the hold's `readOnly`) and its replies, counted in upstreamBytes, showed no write. */
  readOnlyPassed: boolean;
}

export interface RelayEnd {
  /** The first thing that ended it: 'client ended', 'upstream closed', 'upstream error: ...'. */
  reason: string;
  /**
   * The relay reset the client (RST) for a reason of its own: the replay's reply differed from
   * what the dead server had sent of it, a resumed reply did not go on, the hold (promotion,
   * replay check) refused it. Not set for a client or upstream that ended or failed by itself.
   */
  clientReset: boolean;
  /** The relay said the transaction's goodbye (RelayOptions.transaction: its rebuild failed, the reason says why). */
  saidGoodbye: boolean;
  stats: RelayStats;
}

export interface Relay {
  /**
   * null when the relay only said goodbye (RelayOptions.goodbye). Destroyed once the steady state
   * is spliced (stats.spliced): the kernel relay holds duplicates of both fds.
   */
  readonly upstream: net.Socket | null;
  /** Live counters. */
  readonly stats: RelayStats;
  /** Resolves (never rejects) once both sockets are closed. */
  readonly done: Promise<RelayEnd>;
  /** Destroys both sockets; `reason` becomes the end reason unless one is already set. */
  close(reason: string): void;
}

/** How long a client may take to read the last upstream bytes after the upstream closed (ms). */
const FLUSH_MS = 5000;

/**
 * An upstream connection opened before its client is there: connected, with the session
 * preamble (or a login dialog's first message) sent, its answers waiting in the socket's buffer
 * for the relay. For a takeover that connects and replays sessions while the local service is
 * being promoted: a replica accepts a connection and the session commands (Redis AUTH, SELECT;
 * a PostgreSQL login on a hot standby), only the replayed requests must wait for the promotion.
 */
export interface PreparedUpstream {
  readonly socket: net.Socket;
  readonly dialog: PreambleDialog | undefined;
  /** The first error the socket reported before a relay took it over. */
  readonly error: () => Error | undefined;
  /** Destroys the socket (not taken over, or the takeover failed); idempotent. */
  close(): void;
}

/** Connects to `upstream` and sends `preamble` (or starts its dialog). Never throws; see PreparedUpstream. */
export function prepareUpstream(upstream: { host: string; port: number }, preamble: SessionPreamble): PreparedUpstream {
  const socket = net.connect({ host: upstream.host, port: upstream.port, allowHalfOpen: true, noDelay: true });
  let error: Error | undefined;
  // Until a relay listens: an error must not be unhandled (the relay reads it from here).
  const onError = (e: Error) => void (error ??= e);
  socket.on('error', onError);
  socket.once('connect', () => {
    if (resetIfSelfConnected(socket)) error ??= selfConnectError(upstream.host, upstream.port);
  });
  const dialog = preamble.dialog?.();
  if (dialog) socket.write(dialog.start());
  else if (preamble.bytes.length > 0) socket.write(preamble.bytes);
  return { socket, dialog, error: () => error, close: () => void socket.destroy() };
}

/** Starts relaying at once. Never throws; failures end up in `done`'s reason. */
export function relayConnection(options: RelayOptions): Relay {
  const { client, preamble, replyCounter } = options;
  const stats: RelayStats = { clientBytes: 0, upstreamBytes: 0, swallowedReplies: 0, swallowedBytes: 0, verifiedBytes: 0, filteredBytes: 0, answeredBytes: 0, spliced: false, kept: false, handingOver: false, readOnlyPassed: false };
  if (options.goodbye) {
    options.prepared?.close();
    return sayGoodbye(client, options.goodbye, stats);
  }
  const prepared = options.prepared;
  const upstream = prepared?.socket ?? net.connect({ host: options.upstream.host, port: options.upstream.port, allowHalfOpen: true, noDelay: true });
  // Half-close is relayed: a client's FIN must not end its side before the upstream's last replies.
  client.allowHalfOpen = true;
  // No Nagle, as the servers continued here have none on their sockets (Redis, PostgreSQL and
  // Node's http set TCP_NODELAY): a reply must not wait for the ACK of bytes still in flight.
  // On a restored socket those are often its refill, whose ACK the client may have sent to
  // the dead server's MAC before the address moved: Nagle held the next reply until the
  // restored socket's first retransmission, 1 s later (its RTO has no RTT sample yet).
  client.setNoDelay(true);
  let reason: string | null = null;
  /**
   * The kernel relay once the steady state is handed over (here, or the keeper's: its close asks
   * the keeper); the net.Sockets are destroyed then.
   */
  let pump: { close(): unknown } | undefined;
  let spliceOn = options.splice !== false;
  /** The keeper is asked to connect once; off when none came up (spliced here instead). */
  let keeperOn = options.keeper !== undefined;
  let keeperAsked = false;
  const pipeBytes = typeof options.splice === 'object' ? options.splice.pipeBytes : undefined;
  let finish!: (end: RelayEnd) => void;
  const done = new Promise<RelayEnd>((resolve) => (finish = resolve)).then((end) => {
    clearTimeout(connectTimer);
    return end;
  });
  /** Set where the relay resets the client itself (RelayEnd.clientReset). */
  let clientReset = false;
  const resetClient = (why: string) => {
    reason ??= why;
    clientReset = true;
    client.resetAndDestroy();
    upstream.destroy();
  };
  /** Set when the transaction's rebuild failed and its goodbye was said (RelayEnd.saidGoodbye). */
  let saidGoodbye = false;
  const goodbyeClient = (why: string) => {
    reason ??= `said goodbye: the transaction was not rebuilt: ${why}`;
    saidGoodbye = true;
    upstream.destroy();
    client.end(options.transaction!.goodbye);
    // What the client still sends is read and dropped; its FIN (or the timer) ends the socket.
    client.resume();
    setTimeout(() => client.destroy(), FLUSH_MS).unref();
  };
  const result = () => ({ reason: reason ?? 'closed', clientReset, saidGoodbye, stats: { ...stats } });
  const close = (why: string) => {
    reason ??= why;
    if (pump) {
      pump.close();
      finish(result());
      return;
    }
    client.destroy();
    upstream.destroy();
  };
  const connectTimer = setTimeout(() => close(`upstream not connected in ${options.connectTimeoutMs ?? 5000} ms`), options.connectTimeoutMs ?? 5000);
  if (upstream.connecting) {
    upstream.once('connect', () => {
      clearTimeout(connectTimer);
      // Connected to itself: its own request would come back as the upstream's reply (a prepared
      // upstream's own check ran first, and left its error).
      const self = resetIfSelfConnected(upstream) ? selfConnectError(options.upstream.host, options.upstream.port) : prepared?.error();
      if (self) return close(`upstream error: ${self.message}`);
      tryHandOver();
    });
  } else clearTimeout(connectTimer);
  /** Write callbacks: a write queue just emptied may be the moment to hand over. */
  const afterWrite = () => process.nextTick(tryHandOver);

  // Net sockets queue writes made while connecting, in order: preamble, replay, then client data.
  // A dialog preamble (a login) holds the replay and the client's bytes until it is done, and so
  // does `hold`. A prepared upstream has its preamble (or the dialog's first message) sent already.
  const dialog = prepared ? prepared.dialog : preamble.dialog?.();
  let dialogDone = dialog === undefined;
  let holdDone = options.hold === undefined;
  const released = () => dialogDone && holdDone;
  /** The hold's answer to the replayed requests, when it gave one (then nothing is replayed). */
  let answer: Uint8Array | undefined;
  /** The hold's read-only replay, when it asked for one, and why. */
  let readOnly: { replay: ReadOnlyReplay; why: string } | undefined;
  /** Reads the read-only replay's replies; the client's bytes wait until it passed them (judging). */
  let judge: ReadOnlyJudge | undefined;
  let judging = false;
  /** The transaction to rebuild first (options.transaction), until its judge is done. */
  let transaction = options.transaction;
  /** Once the preamble allows it and the hold is over: the transaction, the replay (or its answer), then the client's bytes. */
  const release = () => {
    if (transaction) {
      judge = transaction.replay.createJudge();
      judging = true;
      upstream.write(transaction.replay.before, afterWrite);
      return;
    }
    if (answer) {
      stats.answeredBytes = answer.length;
      client.write(answer, afterWrite);
    } else if (readOnly) {
      judge = readOnly.replay.createJudge();
      judging = true;
      upstream.write(Buffer.concat([readOnly.replay.before, options.replay]), afterWrite);
      return;
    } else if (options.replay.length > 0) upstream.write(options.replay, afterWrite);
    client.resume();
  };
  if (dialog) {
    if (!prepared) upstream.write(dialog.start());
  } else if (preamble.bytes.length > 0 && !prepared) upstream.write(preamble.bytes);

  client.on('data', (chunk: Buffer) => {
    if (pump || saidGoodbye) return;
    stats.clientBytes += chunk.length;
    if (!upstream.write(chunk, afterWrite)) client.pause();
    tryHandOver();
  });
  if (released() && !transaction) {
    if (options.replay.length > 0) upstream.write(options.replay, afterWrite);
  } else if (released()) {
    client.pause();
    release();
  } else client.pause();
  options.hold?.then(
    (r) => {
      holdDone = true;
      if (r && 'answer' in r) answer = r.answer;
      else if (r) readOnly = { replay: r.readOnly, why: r.why };
      if (reason !== null || pump) return;
      if (released()) release();
      tryHandOver();
    },
    (err: Error) => resetClient(err.message),
  );
  upstream.on('drain', () => released() && !judging && !pump && client.resume());
  client.on('drain', () => pump || upstream.resume());

  let toSwallow = dialog ? 0 : preamble.replies;
  const expected = options.expectReply;
  const seen = expected ? new ReplyDigest() : undefined;
  const filter = options.replyFilter;
  let filterDone = false;
  /** First byte of the preamble reply being read (its RESP type), once seen. */
  let replyType: number | undefined;
  upstream.on('data', (chunk: Buffer) => {
    if (pump) return;
    upstreamData(chunk);
    tryHandOver();
  });
  function upstreamData(chunk: Buffer): void {
    let data = chunk;
    if (dialog && !dialogDone) {
      const step = dialog.push(chunk);
      if (step.kind === 'failed') return close(`the upstream refused the session preamble: ${step.reason}`);
      if (step.kind === 'more') {
        stats.swallowedBytes += chunk.length;
        if (step.send.length > 0) upstream.write(step.send);
        return;
      }
      stats.swallowedBytes += chunk.length - step.rest.length;
      stats.swallowedReplies = preamble.replies;
      dialogDone = true;
      if (released()) release();
      data = step.rest;
    } else if (toSwallow > 0) {
      const rest = swallow(chunk);
      if (rest === null) return;
      data = rest;
    }
    if (judge) {
      const rest = judged(data);
      if (rest === null) return;
      data = rest;
    }
    if (expected && stats.verifiedBytes < expected.bytes) {
      const rest = verify(data);
      if (rest === null) return;
      data = rest;
    }
    if (filter && !filterDone && data.length > 0) {
      const rest = filtered(data);
      if (rest === null) return;
      data = rest;
    }
    if (data.length === 0) return;
    stats.upstreamBytes += data.length;
    if (!client.write(data, afterWrite)) upstream.pause();
  }

  /** Whether JS has nothing left to look at: preamble replies swallowed, the reply's start checked. */
  const steady = () => released() && toSwallow === 0 && !judge && (!expected || stats.verifiedBytes >= expected.bytes) && (!filter || filterDone);
  let flushAsked = false;
  /**
   * Hands the steady state to the kernel if this is the moment (see the top of the file): both
   * write queues empty, no EOF relayed yet, both fds there. Otherwise asks once for a callback
   * when the queues empty (a zero-length write completes after every write before it).
   */
  function tryHandOver(): void {
    if (!spliceOn || pump || reason !== null || !steady() || upstream.connecting) return;
    if ([client, upstream].some((s) => s.destroyed || s.readableEnded || s.writableEnded)) return;
    if (client.writableLength > 0 || upstream.writableLength > 0) {
      if (!flushAsked) {
        flushAsked = true;
        for (const s of [client, upstream]) if (s.writableLength > 0) s.write(Buffer.alloc(0), afterWrite);
      }
      return;
    }
    const keeper = keeperOn ? options.keeper : undefined;
    if (keeper && !keeper.ready) {
      // Nothing waits for a keeper to start: the userspace relay goes on meanwhile.
      if (!keeperAsked) {
        keeperAsked = true;
        keeper.connect().then(
          () => {
            keeperAsked = false; // (lost again meanwhile: asked again)
            tryHandOver();
          },
          () => {
            keeperOn = false;
            tryHandOver();
          },
        );
      }
      return;
    }
    const clientFd = fdOf(client);
    const upstreamFd = fdOf(upstream);
    if (clientFd === undefined || upstreamFd === undefined) {
      spliceOn = false;
      return;
    }
    // The keeper takes duplicates (the net.Sockets close their own fds below); a local
    // SpliceRelay dups by itself.
    let fds: [number, number] | undefined;
    let p: NativeSpliceRelay | undefined;
    try {
      if (keeper) fds = duplicates(clientFd, upstreamFd);
      else p = new native.SpliceRelay(clientFd, upstreamFd, pipeBytes);
    } catch {
      spliceOn = false; // (EMFILE, say): the userspace relay goes on
      return;
    }
    // From here to the start, synchronous: libuv reads nothing meanwhile. Set first: read() below
    // emits 'data', which the handlers above now ignore.
    let closeWanted = false;
    pump = p ?? { close: () => (closeWanted = true) };
    const init = { aToB: takeBuffered(client), bToA: takeBuffered(upstream), aEof: eofRead(client), bEof: eofRead(upstream) };
    const base = { clientBytes: stats.clientBytes, upstreamBytes: stats.upstreamBytes };
    stats.spliced = true;
    client.destroy();
    upstream.destroy();
    if (p) return startSplice(p, init, base);
    stats.handingOver = true;
    keeper!.take({ clientFd: fds![0], upstreamFd: fds![1], toUpstream: init.aToB, toClient: init.bToA, clientEof: init.aEof, upstreamEof: init.bEof, before: base }).then(
      (kept) => {
        closeFds(fds!);
        stats.handingOver = false;
        stats.kept = true;
        pump = { close: () => kept.close(reason ?? 'closed') };
        if (closeWanted) kept.close(reason ?? 'closed');
        void kept.ended.then(keptEnded);
      },
      (err: KeeperError) => {
        stats.handingOver = false;
        if (err.code !== 'EKEEPERREFUSED' || closeWanted) {
          // Maybe the keeper's now, maybe not: closing ours ends it here if it is not.
          closeFds(fds!);
          reason ??= err.message;
          return finish(result());
        }
        // Nothing taken: spliced here instead, on the duplicates.
        let local: NativeSpliceRelay;
        try {
          local = new native.SpliceRelay(fds![0], fds![1], pipeBytes);
        } catch (e) {
          reason ??= `splice relay error: ${(e as Error).message}`;
          return finish(result());
        } finally {
          closeFds(fds!);
        }
        pump = local;
        startSplice(local, init, base);
      },
    );
  }

  /** Runs the local kernel relay; the stats' byte counts follow it from `base`. */
  function startSplice(p: NativeSpliceRelay, init: { aToB: Buffer; bToA: Buffer; aEof: boolean; bEof: boolean }, base: { clientBytes: number; upstreamBytes: number }): void {
    Object.defineProperty(stats, 'clientBytes', { get: () => base.clientBytes + p.bytes().aToB, enumerable: true, configurable: true });
    Object.defineProperty(stats, 'upstreamBytes', { get: () => base.upstreamBytes + p.bytes().bToA, enumerable: true, configurable: true });
    try {
      p.start(init, (err: NativeError | null, end: SpliceEnd) => {
        reason ??= spliceEndReason(err, end);
        finish(result());
      });
    } catch (err) {
      // (uv_poll_init refused: no way back, the net.Sockets are gone.)
      close(`splice relay error: ${(err as Error).message}`);
    }
  }

  /** The keeper's relay ended: its counts are the relay's. */
  function keptEnded(end: { reason: string; clientBytes: number; upstreamBytes: number }): void {
    stats.clientBytes = end.clientBytes;
    stats.upstreamBytes = end.upstreamBytes;
    reason ??= end.reason;
    finish(result());
  }

  /** The part of data after the expected reply start; null when the relay ended (they differed). */
  function verify(data: Buffer): Buffer | null {
    const take = Math.min(expected!.bytes - stats.verifiedBytes, data.length);
    seen!.update(data.subarray(0, take));
    stats.verifiedBytes += take;
    if (stats.verifiedBytes < expected!.bytes) return Buffer.alloc(0);
    if (!seen!.matches(expected!)) {
      // The client holds bytes of a reply the new upstream does not reproduce: no byte of it
      // may follow them, and a FIN would read as a clean end: a RST.
      resetClient(`the reply to the replayed request differs from the ${expected!.bytes} bytes the dead server had sent of it`);
      return null;
    }
    return data.subarray(take);
  }

  /**
   * What follows the judged replies in data (the client's); null while the judge holds or drops
   * them, or when the relay ended (a read-only replay's write refused: the client is reset; a
   * transaction not rebuilt: its goodbye). Passed (a read-only replay): the replies go to the
   * client, the judge's `send` (RESET) to the upstream, then the client's bytes. Done after a
   * transaction's rebuild: the replay, then the client's bytes.
   */
  function judged(data: Buffer): Buffer | null {
    const step = judge!.push(data);
    if (step.kind === 'failed') {
      if (transaction) goodbyeClient(step.reason);
      else resetClient(`${step.reason}; not run as it was: ${readOnly!.why}`);
      return null;
    }
    if (step.kind === 'more') return null;
    if (step.kind === 'passed') {
      stats.readOnlyPassed = true;
      stats.upstreamBytes += step.replies.length;
      client.write(step.replies, afterWrite);
      upstream.write(step.send, afterWrite);
      judging = false;
      client.resume();
      return null;
    }
    judge = undefined;
    if (transaction) {
      // Rebuilt: now the replay (or its answer), and the client's bytes.
      transaction = undefined;
      judging = false;
      release();
    }
    return step.rest;
  }

  /** What the filter lets through of data; null when it holds all of it or the relay ended (the reply does not go on). */
  function filtered(data: Buffer): Buffer | null {
    const step = filter!.push(data);
    if (step.kind === 'failed') {
      // As in verify(): the client holds part of a reply that nothing may follow but a RST.
      resetClient(step.reason);
      return null;
    }
    if (step.kind === 'more') {
      stats.filteredBytes += data.length;
      return null;
    }
    filterDone = true;
    stats.filteredBytes += data.length - step.rest.length;
    return step.rest;
  }

  /** The part of chunk after the preamble's replies; null when nothing is left or the relay ended. */
  function swallow(chunk: Buffer): Buffer | null {
    const ends = replyCounter.push(chunk);
    if (replyCounter.broken) {
      close(`upstream reply stream unframeable while swallowing the preamble's replies: ${replyCounter.broken}`);
      return null;
    }
    let start = 0;
    replyType ??= chunk[0];
    for (const end of ends) {
      if (toSwallow === 0) break;
      if ((options.refusePreambleErrors ?? true) && (replyType === 0x2d || replyType === 0x21)) {
        const text = chunk.subarray(start, Math.min(end, start + 200)).toString('latin1').trim();
        close(`the upstream refused preamble command ${stats.swallowedReplies + 1}: ${text}`);
        return null;
      }
      stats.swallowedReplies++;
      stats.swallowedBytes += end - start;
      toSwallow--;
      start = end;
      replyType = chunk[start];
    }
    if (toSwallow > 0) {
      stats.swallowedBytes += chunk.length - start;
      return null;
    }
    return chunk.subarray(start);
  }

  // After the handover these sockets are destroyed on purpose: their events are not the relay's.
  client.on('end', () => {
    if (pump) return;
    reason ??= 'client ended';
    upstream.end();
  });
  upstream.on('end', () => {
    if (pump) return;
    reason ??= 'upstream ended';
    client.end();
  });
  client.on('error', (e) => pump || close(`client error: ${e.message}`));
  upstream.on('error', (e) => pump || close(`upstream error: ${e.message}`));

  const closed = (s: net.Socket) => new Promise<void>((r) => (s.destroyed && s.closed ? r() : s.once('close', () => r())));
  // The client gone, nobody reads the upstream's replies. The upstream gone (Redis closes after
  // QUIT), the client still gets what was written to it, then its socket closes.
  client.once('close', () => pump || close('client closed'));
  upstream.once('close', (hadError) => {
    if (pump) return;
    if (hadError) return close('upstream closed');
    reason ??= 'upstream closed';
    client.end(() => client.destroy());
    setTimeout(() => client.destroy(), FLUSH_MS).unref();
  });
  void Promise.all([closed(client), closed(upstream)]).then(() => pump || finish(result()));
  if (client.destroyed) close('client socket already closed');
  else if (prepared?.error()) close(`upstream error: ${prepared.error()!.message}`);
  else if (upstream.destroyed) close('upstream closed');
  return { upstream, stats, done, close };
}

/** The fd under a connected net.Socket (libuv's TCP handle exposes it on Linux); undefined if none. */
function fdOf(s: net.Socket): number | undefined {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/** Duplicates of both fds (closed again when the second fails). */
function duplicates(a: number, b: number): [number, number] {
  const da = native.dupFd(a);
  try {
    return [da, native.dupFd(b)];
  } catch (err) {
    native.closeFd(da);
    throw err;
  }
}

/** Closes fds this process owns; never throws (an fd closed already is gone either way). */
export function closeFds(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // (EBADF)
    }
  }
}

/** The bytes Node has read from the socket but not delivered (paused, or backpressure), in order. */
function takeBuffered(s: net.Socket): Buffer {
  const chunks: Buffer[] = [];
  // read() hands out the whole buffer at once; a few rounds at most.
  for (let i = 0; i < 64; i++) {
    const c = s.read() as Buffer | null;
    if (c === null) break;
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** Whether the socket's EOF has been read (pushed into the stream, 'end' not necessarily emitted). */
function eofRead(s: net.Socket): boolean {
  return (s as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
}

/** A kernel relay's end as a relay's end reason (the client is side a, the upstream b). */
export function spliceEndReason(err: NativeError | null, end: SpliceEnd): string {
  if (err) return `${end.side === 'b' ? 'upstream' : 'client'} error: ${err.message}`;
  return end.firstEof === 'b' ? 'upstream ended' : 'client ended';
}

/** The relay that only says goodbye: the bytes to the client, FIN, then its socket closes. */
function sayGoodbye(client: net.Socket, bytes: Uint8Array, stats: RelayStats): Relay {
  let reason: string | null = null;
  const close = (why: string) => {
    reason ??= why;
    client.destroy();
  };
  client.on('error', (e) => close(`client error: ${e.message}`));
  // What the client still sends is read and dropped: its FIN (or close) ends the socket.
  client.on('data', () => undefined);
  const done = new Promise<RelayEnd>((resolve) => {
    const finish = () => resolve({ reason: reason ?? 'closed', clientReset: false, saidGoodbye: false, stats: { ...stats } });
    if (client.destroyed && client.closed) finish();
    else client.once('close', finish);
  });
  if (client.destroyed) close('client socket already closed');
  else {
    stats.upstreamBytes = bytes.length;
    client.end(bytes, () => {
      reason ??= 'said goodbye';
    });
    setTimeout(() => client.destroy(), FLUSH_MS).unref();
  }
  return { upstream: null, stats, done, close };
}
