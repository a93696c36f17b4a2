// PostgreSQL goodbye: ErrorResponse FATAL 57P01 "terminating connection due to administrator
// command" — what a backend sends on pg_terminate_backend or a fast shutdown — then FIN.
// Framing (protocol 3.0): the client's first message is untyped (int32 length + body); an
// SSLRequest or GSSENCRequest gets a one-byte answer; every later message is type + int32 length.
import type { BoundaryTracker, GoodbyePlugin } from './types.js';

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

export function postgresErrorResponse(fields: { severity: string; code: string; message: string }): Buffer {
  const parts = [
    Buffer.from('S'), Buffer.from(`${fields.severity}\0`),
    Buffer.from('V'), Buffer.from(`${fields.severity}\0`),
    Buffer.from('C'), Buffer.from(`${fields.code}\0`),
    Buffer.from('M'), Buffer.from(`${fields.message}\0`),
    Buffer.from([0]),
  ];
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.write('E', 0, 'latin1');
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** Counts through length-prefixed messages; `typed` says whether a type byte precedes the length. */
class MessageFramer {
  private header = Buffer.alloc(0);
  private remaining = 0; // body bytes left in the current message
  messages = 0;
  broken: string | null = null;

  constructor(private typed: boolean) {}

  setTyped(typed: boolean): void {
    this.typed = typed;
  }

  get inMessage(): boolean {
    return this.header.length > 0 || this.remaining > 0;
  }

  /** Feeds bytes; calls onMessage(first bytes of the message) at each message's end. */
  push(chunk: Uint8Array, onHeader?: (header: Buffer) => void): void {
    let i = 0;
    while (i < chunk.length && !this.broken) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - i);
        this.remaining -= n;
        i += n;
        if (this.remaining === 0) this.messages++;
        continue;
      }
      const need = this.typed ? 5 : 4;
      const take = Math.min(need - this.header.length, chunk.length - i);
      this.header = Buffer.concat([this.header, chunk.subarray(i, i + take)]);
      i += take;
      if (this.header.length < need) break;
      const len = this.header.readInt32BE(this.typed ? 1 : 0);
      if (len < 4 || len > 1 << 30) {
        this.broken = `implausible message length ${len}`;
        break;
      }
      onHeader?.(this.header);
      this.header = Buffer.alloc(0);
      this.remaining = len - 4;
      if (this.remaining === 0) this.messages++;
    }
  }
}

class PostgresTracker implements BoundaryTracker {
  private readonly client = new MessageFramer(false);
  private readonly server = new MessageFramer(true);
  private startupSeen = false;
  private awaitingNegotiationByte = false;
  private encrypted = false;
  private startupBody = Buffer.alloc(0);

  clientData(chunk: Uint8Array): void {
    if (this.encrypted) return;
    if (!this.startupSeen) {
      // Collect the first 8 bytes of the untyped startup packet to recognise SSL/GSS requests.
      this.startupBody = Buffer.concat([this.startupBody, chunk]).subarray(0, 8);
    }
    this.client.push(chunk);
    if (!this.startupSeen && this.startupBody.length >= 8) {
      const code = this.startupBody.readInt32BE(4);
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        this.awaitingNegotiationByte = true;
        this.startupBody = Buffer.alloc(0);
      } else {
        this.startupSeen = true;
        this.client.setTyped(true);
      }
    }
  }

  serverData(chunk: Uint8Array): void {
    if (this.encrypted) return;
    let data = chunk;
    if (this.awaitingNegotiationByte && data.length > 0) {
      const answer = String.fromCharCode(data[0]!);
      this.awaitingNegotiationByte = false;
      if (answer === 'S' || answer === 'G') {
        this.encrypted = true;
        return;
      }
      data = data.subarray(1);
    }
    this.server.push(data);
  }

  atBoundary(): boolean {
    return !this.encrypted && !this.server.broken && !this.awaitingNegotiationByte && !this.server.inMessage;
  }

  reason(): string {
    if (this.encrypted) return 'the connection is encrypted (TLS/GSS); its messages cannot be followed';
    if (this.server.broken) return `server stream not PostgreSQL: ${this.server.broken}`;
    if (this.awaitingNegotiationByte) return 'server has not answered the SSL/GSS request yet';
    if (this.server.inMessage) return 'the server is in the middle of a message';
    return 'at a message boundary';
  }
}

export const postgresGoodbye: GoodbyePlugin = {
  name: 'postgres',
  message: () =>
    postgresErrorResponse({
      severity: 'FATAL',
      code: '57P01',
      message: 'terminating connection due to administrator command',
    }),
  createTracker: () => new PostgresTracker(),
};
