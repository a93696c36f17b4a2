// The dead primary's replication stream, read back from the promoted local Redis (issue 12, seed
// 003 [0055], [0080]: the log the replayed requests are matched against).
//
// A replica keeps the stream it applied in its replication backlog (repl-backlog-size, 1 MiB by
// default). Promoted (`REPLICAOF NO ONE`), it keeps that history under the old primary's replid:
// INFO replication shows master_replid2 = the old replid and second_repl_offset = the old
// history's end + 1, and it serves `PSYNC <old replid> <offset>` from its backlog like any
// primary does for a replica that lost its link: `+CONTINUE` (`+CONTINUE <new replid>` to a
// replica that announced psync2), then the stream bytes from <offset> on, then, live, the new
// history. The reader asks as a replica would, takes exactly the old history's bytes, and closes
// (the server dropped it as a replica then). Redis 7.0 replication.c
// masterTryPartialResynchronization; https://redis.io/docs/latest/operate/oss_and_stack/management/replication/.
//
// Never a full resync: an offset outside the backlog would make Redis answer +FULLRESYNC and fork
// an RDB transfer, so the offset is checked against INFO first; should the backlog move between
// that check and the PSYNC (writes to the promoted server push old bytes out of the ring), the
// reply is not +CONTINUE and the connection is closed at once, the call rejected.
import net from 'node:net';
import { encodeCommand } from '../net/shadow/resp-continue.js';
import { parseInfo } from './redis-catch-up.js';
import type { RedisEndpoint } from './redis-stream-probe.js';

/** The bytes of the old history from a stream offset to its end. */
export interface OldHistory {
  /** The stream's bytes from startOffset to the old history's end (empty when startOffset is end + 1). */
  bytes: Buffer;
  /** Stream offset of bytes[0] (bytes numbered from 1, as master_repl_offset counts them). */
  startOffset: number;
  /** Stream offset of the old history's last byte (second_repl_offset - 1). */
  end: number;
}

export type OldHistoryFailure =
  /** from.replid or from.offset is not a replid / stream offset. */
  | 'bad-argument'
  /** The server does not hold that history: its master_replid2 is another replid (not promoted, or promoted from another primary). */
  | 'other-history'
  /** from.offset is before the backlog's first byte (or the server has no backlog). */
  | 'outside-backlog'
  /** from.offset is after the old history's end + 1: the server never got that far (nothing from there on ran on it). */
  | 'after-end'
  /** More than maxBytes to read. */
  | 'too-large'
  /** The server answered INFO or PSYNC with something else than asked (an error, +FULLRESYNC). */
  | 'refused'
  /** Not done in timeoutMs. */
  | 'timeout'
  /** The connection failed or closed early. */
  | 'connection';

export class OldHistoryError extends Error {
  constructor(
    readonly failure: OldHistoryFailure,
    message: string,
  ) {
    super(message);
    this.name = 'OldHistoryError';
  }
}

export interface OldHistoryOptions {
  /** The whole read, connection to close, ms (default 5000). */
  timeoutMs?: number;
  /** Largest history read, bytes (default 4 MiB). */
  maxBytes?: number;
}

/** What INFO replication says of the promoted server's backlog. */
interface BacklogInfo {
  replid2: string;
  /** Old history's last byte: second_repl_offset - 1. */
  end: number;
  /** repl_backlog_first_byte_offset. */
  first: number;
  active: boolean;
}

/** Longest INFO reply read (its replication section is ~1 KiB; with many replicas, more). */
const MAX_INFO_BYTES = 1 << 20;
/** Longest PSYNC answer line (`+CONTINUE <40 hex>` or `+FULLRESYNC <40 hex> <offset>`). */
const MAX_LINE = 256;

/**
 * Reads the old primary's stream from `from.offset` (the first byte wanted: a probe's offset + 1
 * for what came after it) to the old history's end, from the promoted Redis at `promoted`
 * (see the file's comment). Resolves {bytes, startOffset, end}; rejects with an OldHistoryError
 * whose `failure` and message say what went wrong (the connection closed in every case).
 */
export function readOldHistory(promoted: RedisEndpoint, from: { replid: string; offset: number }, opts: OldHistoryOptions = {}): Promise<OldHistory> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const maxBytes = opts.maxBytes ?? 4 * 1024 * 1024;
  const where = `${promoted.host}:${promoted.port}`;
  if (!/^[0-9a-f]{40}$/.test(from.replid)) return Promise.reject(new OldHistoryError('bad-argument', `replid ${JSON.stringify(from.replid)} is not 40 lowercase hex digits`));
  if (!Number.isSafeInteger(from.offset) || from.offset < 1) return Promise.reject(new OldHistoryError('bad-argument', `offset ${from.offset} is not a stream offset (an integer >= 1)`));
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || !Number.isSafeInteger(maxBytes) || maxBytes < 0) return Promise.reject(new OldHistoryError('bad-argument', `timeoutMs ${timeoutMs} / maxBytes ${maxBytes} out of range`));
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: promoted.host, port: promoted.port, noDelay: true });
    let phase: 'info' | 'psync' | 'history' | 'done' = 'info';
    let pending: Buffer = Buffer.alloc(0);
    let history: Buffer = Buffer.alloc(0);
    let filled = 0;
    let info: BacklogInfo | undefined;
    const finish = (err: OldHistoryError | null, value?: OldHistory) => {
      if (phase === 'done') return;
      phase = 'done';
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => finish(new OldHistoryError('timeout', `the old history from ${from.offset} on ${where}: not read in ${timeoutMs} ms (in the ${phase} step)`)), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => finish(new OldHistoryError('connection', `${where}: ${err.code ?? err.message} (in the ${phase} step)`)));
    socket.on('close', () => finish(new OldHistoryError('connection', `${where} closed the connection in the ${phase} step`)));
    socket.on('connect', () => socket.write(encodeCommand(['INFO', 'replication'])));
    socket.on('data', (chunk: Buffer) => {
      if (phase === 'history') return take(chunk);
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      if (phase === 'info') {
        const text = bulkReply(pending, MAX_INFO_BYTES);
        if (text === undefined) return;
        if (text instanceof OldHistoryError) return finish(text);
        pending = Buffer.alloc(0);
        const checked = checkBacklog(parseInfo(text), from, maxBytes, where);
        if (checked instanceof OldHistoryError) return finish(checked);
        info = checked;
        if (from.offset === info.end + 1) return finish(null, { bytes: Buffer.alloc(0), startOffset: from.offset, end: info.end });
        phase = 'psync';
        socket.write(encodeCommand(['PSYNC', from.replid, String(from.offset)]));
        return;
      }
      if (phase === 'psync') {
        const eol = pending.indexOf('\r\n');
        if (eol < 0) {
          if (pending.length > MAX_LINE) finish(new OldHistoryError('refused', `PSYNC on ${where}: an answer line longer than ${MAX_LINE} bytes`));
          return;
        }
        const line = pending.subarray(0, eol).toString('latin1');
        if (!/^\+CONTINUE( [0-9a-f]{40})?$/.test(line)) {
          return finish(new OldHistoryError('refused', `PSYNC ${from.replid} ${from.offset} on ${where} answered ${JSON.stringify(line.slice(0, 120))}, not +CONTINUE: closed at once${line.startsWith('+FULLRESYNC') ? ' (the backlog moved past the offset after the check)' : ''}`));
        }
        phase = 'history';
        history = Buffer.allocUnsafe(info!.end - from.offset + 1);
        const rest = pending.subarray(eol + 2);
        pending = Buffer.alloc(0);
        if (rest.length > 0) take(rest);
      }
    });
    /** Copies stream bytes until the old history's end; the new history's bytes after it are dropped. */
    function take(chunk: Buffer): void {
      const n = Math.min(chunk.length, history.length - filled);
      chunk.copy(history, filled, 0, n);
      filled += n;
      if (filled === history.length) finish(null, { bytes: history, startOffset: from.offset, end: info!.end });
    }
  });
}

/** A bulk-string reply's text once whole; undefined while incomplete; an error for anything else. */
function bulkReply(b: Buffer, max: number): string | OldHistoryError | undefined {
  const eol = b.indexOf('\r\n');
  if (eol < 0) return b.length > MAX_LINE ? new OldHistoryError('refused', 'INFO answered a line too long to be a reply header') : undefined;
  const head = b.subarray(0, eol).toString('latin1');
  if (!head.startsWith('$')) return new OldHistoryError('refused', `INFO replication answered ${JSON.stringify(head.slice(0, 120))}`);
  const len = Number(head.slice(1));
  if (!Number.isSafeInteger(len) || len < 0 || len > max) return new OldHistoryError('refused', `INFO replication answered a bulk of ${head.slice(1)} bytes`);
  if (b.length < eol + 2 + len + 2) return undefined;
  return b.subarray(eol + 2, eol + 2 + len).toString('latin1');
}

/** The backlog's bounds from INFO replication, checked against what is asked; an error naming the mismatch. */
function checkBacklog(fields: Map<string, string>, from: { replid: string; offset: number }, maxBytes: number, where: string): BacklogInfo | OldHistoryError {
  const replid2 = fields.get('master_replid2') ?? '';
  const second = Number(fields.get('second_repl_offset'));
  const first = Number(fields.get('repl_backlog_first_byte_offset'));
  const active = fields.get('repl_backlog_active') === '1';
  if (replid2 !== from.replid) {
    return new OldHistoryError('other-history', `${where} does not hold the history ${from.replid}: its master_replid2 is ${replid2 || '?'} (master_replid ${fields.get('master_replid') ?? '?'}, role ${fields.get('role') ?? '?'}); it was not promoted from that primary`);
  }
  if (!Number.isSafeInteger(second) || second < 1 || !Number.isSafeInteger(first)) {
    return new OldHistoryError('refused', `${where}: INFO replication shows second_repl_offset ${fields.get('second_repl_offset') ?? '?'}, repl_backlog_first_byte_offset ${fields.get('repl_backlog_first_byte_offset') ?? '?'}`);
  }
  const end = second - 1;
  if (!active) return new OldHistoryError('outside-backlog', `${where} has no replication backlog (repl_backlog_active 0): the old history is gone`);
  if (from.offset > end + 1) return new OldHistoryError('after-end', `offset ${from.offset} is after the old history's end ${end} on ${where}`);
  if (from.offset < first) return new OldHistoryError('outside-backlog', `offset ${from.offset} is no longer in the backlog of ${where}, which starts at ${first} (old history ends at ${end})`);
  const size = end - from.offset + 1;
  if (size > maxBytes) return new OldHistoryError('too-large', `the old history from ${from.offset} to ${end} is ${size} bytes, more than maxBytes ${maxBytes}`);
  return { replid2, end, first, active };
}
