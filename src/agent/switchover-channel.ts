// One end of a switchover's connection (net/switchover-wire.ts) as awaitable messages: the
// frames the reader takes are queued, `next()` waits for one (bounded in time), `send()` writes
// one. A bad frame, the other end closing, or the time running out rejects `next()` with the reason.
import type net from 'node:net';
import { SwitchoverFrameReader, SwitchoverFrameWriter, type SwitchoverMessage } from '../net/switchover-wire.js';

export class SwitchoverChannel {
  private readonly queue: SwitchoverMessage[] = [];
  private waiter: { resolve: (m: SwitchoverMessage) => void; reject: (e: Error) => void } | undefined;
  private ended: Error | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly reader: SwitchoverFrameReader,
    /** Replaced once the session's nonces are known (the primary learns B's from the REQUEST). */
    public writer: SwitchoverFrameWriter,
    /** Bytes already read from the socket (the listener looked at them to route the connection). */
    first?: Buffer,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.take(chunk));
    socket.on('error', (err) => this.end(new Error(`the connection failed: ${err.message}`)));
    socket.on('close', () => this.end(new Error('the other agent closed the connection')));
    if (first && first.length > 0) this.take(first);
  }

  private take(chunk: Buffer): void {
    for (const r of this.reader.push(chunk)) {
      if (!r.ok) {
        this.end(new Error(`bad frame (${r.reason}): ${r.detail}`));
        this.socket.destroy();
        return;
      }
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(r.frame.message);
      } else this.queue.push(r.frame.message);
    }
  }

  private end(err: Error): void {
    if (this.ended) return;
    this.ended = err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  /** The next message; rejects when the stream ended or after `timeoutMs` (naming `what` was awaited). */
  next(timeoutMs: number, what: string): Promise<SwitchoverMessage> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no ${what} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (msg) => {
          clearTimeout(timer);
          resolve(msg);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  /** Writes one message (false when the socket is gone). Throws RangeError on a field out of range. */
  send(message: SwitchoverMessage): boolean {
    if (this.socket.destroyed) return false;
    this.socket.write(this.writer.frame(message));
    return true;
  }

  /** Ends the connection after what was written. */
  close(): void {
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }
}
