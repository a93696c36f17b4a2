// Continues a client connection on a new upstream (issue 12): the client socket (on the backup a
// restored TCP connection, adopted with adoptSocket) is joined to a fresh connection to the
// server that takes over (e.g. the promoted local Redis replica). The upstream first gets the
// session preamble and the requests the dead server never answered; the preamble's replies are
// swallowed (counted with the plugin's ReplyCounter), so the client sees exactly the replies to
// its own requests, in order. Then bytes flow both ways with backpressure.
import net from 'node:net';
import type { ReplyCounter, SessionPreamble } from './exchange-tracker.js';
import { ReplyDigest, type ReplyFingerprint } from './reply-digest.js';

export interface RelayOptions {
  /** The client's socket; the relay owns it from here (destroys it at the end). */
  client: net.Socket;
  /** Where the new upstream listens. */
  upstream: { host: string; port: number };
  /** Sent first; its `replies` complete replies never reach the client. */
  preamble: SessionPreamble;
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
   * Instead of relaying: these bytes to the client (a protocol goodbye, ContinuePlan.goodbye),
   * then FIN. No upstream is connected; the other options are ignored.
   */
  goodbye?: Uint8Array;
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
}

export interface RelayEnd {
  /** The first thing that ended it: 'client ended', 'upstream closed', 'upstream error: ...'. */
  reason: string;
  stats: RelayStats;
}

export interface Relay {
  /** null when the relay only said goodbye (RelayOptions.goodbye). */
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

/** Starts relaying at once. Never throws; failures end up in `done`'s reason. */
export function relayConnection(options: RelayOptions): Relay {
  const { client, preamble, replyCounter } = options;
  const stats: RelayStats = { clientBytes: 0, upstreamBytes: 0, swallowedReplies: 0, swallowedBytes: 0, verifiedBytes: 0 };
  if (options.goodbye) return sayGoodbye(client, options.goodbye, stats);
  const upstream = net.connect({ host: options.upstream.host, port: options.upstream.port, allowHalfOpen: true });
  // Half-close is relayed: a client's FIN must not end its side before the upstream's last replies.
  client.allowHalfOpen = true;
  let reason: string | null = null;
  const close = (why: string) => {
    reason ??= why;
    client.destroy();
    upstream.destroy();
  };
  const connectTimer = setTimeout(() => close(`upstream not connected in ${options.connectTimeoutMs ?? 5000} ms`), options.connectTimeoutMs ?? 5000);
  upstream.once('connect', () => clearTimeout(connectTimer));

  // Net sockets queue writes made while connecting, in order: preamble, replay, then client data.
  // A dialog preamble (a login) holds the replay and the client's bytes until it is done.
  const dialog = preamble.dialog?.();
  let held = dialog !== undefined;
  if (dialog) upstream.write(dialog.start());
  else {
    if (preamble.bytes.length > 0) upstream.write(preamble.bytes);
    if (options.replay.length > 0) upstream.write(options.replay);
  }

  client.on('data', (chunk: Buffer) => {
    stats.clientBytes += chunk.length;
    if (!upstream.write(chunk)) client.pause();
  });
  if (held) client.pause();
  upstream.on('drain', () => held || client.resume());
  client.on('drain', () => upstream.resume());

  let toSwallow = dialog ? 0 : preamble.replies;
  const expected = options.expectReply;
  const seen = expected ? new ReplyDigest() : undefined;
  /** First byte of the preamble reply being read (its RESP type), once seen. */
  let replyType: number | undefined;
  upstream.on('data', (chunk: Buffer) => {
    let data = chunk;
    if (dialog && held) {
      const step = dialog.push(chunk);
      if (step.kind === 'failed') return close(`the upstream refused the session preamble: ${step.reason}`);
      if (step.kind === 'more') {
        stats.swallowedBytes += chunk.length;
        if (step.send.length > 0) upstream.write(step.send);
        return;
      }
      stats.swallowedBytes += chunk.length - step.rest.length;
      stats.swallowedReplies = preamble.replies;
      held = false;
      if (options.replay.length > 0) upstream.write(options.replay);
      client.resume();
      data = step.rest;
    } else if (toSwallow > 0) {
      const rest = swallow(chunk);
      if (rest === null) return;
      data = rest;
    }
    if (expected && stats.verifiedBytes < expected.bytes) {
      const rest = verify(data);
      if (rest === null) return;
      data = rest;
    }
    if (data.length === 0) return;
    stats.upstreamBytes += data.length;
    if (!client.write(data)) upstream.pause();
  });

  /** The part of data after the expected reply start; null when the relay ended (they differed). */
  function verify(data: Buffer): Buffer | null {
    const take = Math.min(expected!.bytes - stats.verifiedBytes, data.length);
    seen!.update(data.subarray(0, take));
    stats.verifiedBytes += take;
    if (stats.verifiedBytes < expected!.bytes) return Buffer.alloc(0);
    if (!seen!.matches(expected!)) {
      // The client holds bytes of a reply the new upstream does not reproduce: no byte of it
      // may follow them, and a FIN would read as a clean end: a RST.
      reason ??= `the reply to the replayed request differs from the ${expected!.bytes} bytes the dead server had sent of it`;
      client.resetAndDestroy();
      upstream.destroy();
      return null;
    }
    return data.subarray(take);
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

  client.on('end', () => {
    reason ??= 'client ended';
    upstream.end();
  });
  upstream.on('end', () => {
    reason ??= 'upstream ended';
    client.end();
  });
  client.on('error', (e) => close(`client error: ${e.message}`));
  upstream.on('error', (e) => close(`upstream error: ${e.message}`));

  const closed = (s: net.Socket) => new Promise<void>((r) => (s.destroyed && s.closed ? r() : s.once('close', () => r())));
  // The client gone, nobody reads the upstream's replies. The upstream gone (Redis closes after
  // QUIT), the client still gets what was written to it, then its socket closes.
  client.once('close', () => close('client closed'));
  upstream.once('close', (hadError) => {
    if (hadError) return close('upstream closed');
    reason ??= 'upstream closed';
    client.end(() => client.destroy());
    setTimeout(() => client.destroy(), FLUSH_MS).unref();
  });
  const done = Promise.all([closed(client), closed(upstream)]).then(() => {
    clearTimeout(connectTimer);
    return { reason: reason ?? 'closed', stats: { ...stats } };
  });
  if (client.destroyed) close('client socket already closed');
  return { upstream, stats, done, close };
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
    const finish = () => resolve({ reason: reason ?? 'closed', stats: { ...stats } });
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
