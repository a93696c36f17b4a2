// RESP (Redis protocol) goodbye: an error reply, then FIN. Replies are framed (../resp-framer.ts:
// RESP2 and RESP3) so the error only goes between replies, where the client takes it as the
// answer to its oldest pending command.
import { RespFramer } from '../resp-framer.js';
import type { BoundaryTracker, GoodbyePlugin } from './types.js';

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
