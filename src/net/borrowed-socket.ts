// A socket fd copied out of another process (pidfd_getfd). Writes and shutdowns act on the
// owner's connection itself; closing our copy does not close the owner's fd. The copy is
// always ours to close: use `using`, or call close() in a finally.
import { native } from '../native.js';

/** '!' : a byte that stands out in a peer's logs if it ever reads the urgent byte in line. */
export const DEFAULT_URGENT_BYTE = 0x21;

export class BorrowedSocket implements Disposable {
  #fd: number;

  private constructor(
    fd: number,
    readonly pid: number,
    readonly remoteFd: number,
  ) {
    this.#fd = fd;
  }

  /** Copies fd `fd` of process `pid` into this process (root or CAP_SYS_PTRACE). */
  static borrow(pid: number, fd: number): BorrowedSocket {
    return new BorrowedSocket(native.borrowFd(pid, fd), pid, fd);
  }

  /** Our fd number; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * Sends one byte as TCP urgent data (MSG_OOB), which makes the peer's kernel raise SIGURG /
   * an exceptional condition even when the peer's reader is blocked or ignoring the stream.
   */
  sendUrgent(byte: number = DEFAULT_URGENT_BYTE): void {
    if (!Number.isInteger(byte) || byte < 0 || byte > 255) throw new RangeError(`byte must be 0..255: ${byte}`);
    native.sendOnFd(this.#open(), Uint8Array.of(byte), true);
  }

  /** Queues data without blocking; returns how many bytes the kernel took (may be fewer). */
  send(data: Uint8Array | string): number {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    return native.sendOnFd(this.#open(), bytes, false);
  }

  /** FIN to the peer after queued data; affects every holder of the socket, not only us. */
  shutdownWrite(): void {
    native.shutdownWrite(this.#open());
  }

  /** Closes our copy of the fd; safe to call more than once. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1; // first, so a failing close is not retried on a number that may be reused
    native.closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): number {
    if (this.#fd < 0) throw new Error(`borrowed fd ${this.remoteFd} of pid ${this.pid} is closed`);
    return this.#fd;
  }
}
