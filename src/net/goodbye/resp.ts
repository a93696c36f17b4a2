// RESP (Redis protocol) goodbye: an error reply, then FIN. Replies are framed (RESP2 and RESP3:
// simple lines, bulk strings, aggregates nested to any depth) so the error only goes between
// replies, where the client takes it as the answer to its oldest pending command.
import type { BoundaryTracker, GoodbyePlugin } from './types.js';

const LINE_TYPES = new Set(['+', '-', ':', '_', ',', '#', '(']);
const BULK_TYPES = new Set(['$', '!', '=']);
const AGGREGATE_TYPES = new Map([['*', 1], ['~', 1], ['>', 1], ['%', 2], ['|', 2]]);

class RespFramer {
  private line = '';
  private bulkRemaining = -1; // bytes of bulk payload + CRLF still to skip
  /** Elements still expected at each open aggregate level. */
  private readonly pending: number[] = [];
  broken: string | null = null;

  get between(): boolean {
    return this.line.length === 0 && this.bulkRemaining < 0 && this.pending.length === 0;
  }

  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length && !this.broken) {
      if (this.bulkRemaining >= 0) {
        const n = Math.min(this.bulkRemaining, chunk.length - i);
        i += n;
        this.bulkRemaining -= n;
        if (this.bulkRemaining === 0) {
          this.bulkRemaining = -1;
          this.elementDone();
        }
        continue;
      }
      const c = chunk[i++]!;
      this.line += String.fromCharCode(c);
      if (this.line.length > 64 * 1024) this.broken = 'line too long';
      if (!this.line.endsWith('\r\n')) continue;
      this.onLine(this.line.slice(0, -2));
      this.line = '';
    }
  }

  private onLine(line: string): void {
    const type = line[0] ?? '';
    const rest = line.slice(1);
    if (LINE_TYPES.has(type)) return this.elementDone();
    const n = Number(rest);
    if (BULK_TYPES.has(type)) {
      if (!Number.isInteger(n) || n < -1) return void (this.broken = `bad bulk length ${rest}`);
      if (n === -1) return this.elementDone();
      this.bulkRemaining = n + 2;
      return;
    }
    const width = AGGREGATE_TYPES.get(type);
    if (width !== undefined) {
      if (!Number.isInteger(n) || n < -1) return void (this.broken = `bad aggregate length ${rest}`);
      if (n <= 0) return this.elementDone();
      if (this.pending.length >= 64) return void (this.broken = 'aggregates nested too deep');
      this.pending.push(n * width);
      return;
    }
    this.broken = `unknown RESP type ${JSON.stringify(type)}`;
  }

  private elementDone(): void {
    while (this.pending.length > 0) {
      const top = this.pending.length - 1;
      this.pending[top]!--;
      if (this.pending[top]! > 0) return;
      this.pending.pop();
    }
  }
}

class RespTracker implements BoundaryTracker {
  private readonly replies = new RespFramer();
  clientData(): void {
    // Commands do not change how replies are framed.
  }
  serverData(chunk: Uint8Array): void {
    this.replies.push(chunk);
  }
  atBoundary(): boolean {
    return !this.replies.broken && this.replies.between;
  }
  reason(): string {
    if (this.replies.broken) return `server stream not RESP: ${this.replies.broken}`;
    return this.replies.between ? 'between replies' : 'the server is in the middle of a reply';
  }
}

export const respGoodbye: GoodbyePlugin = {
  name: 'resp',
  message: () => Buffer.from('-ERR server failed; connection closed by takeover\r\n'),
  createTracker: () => new RespTracker(),
};
