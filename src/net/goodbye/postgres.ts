// PostgreSQL goodbye: ErrorResponse FATAL 57P01 "terminating connection due to administrator
// command" — what a backend sends on pg_terminate_backend or a fast shutdown — then FIN.
// Framing (protocol 3.0): the client's first message is untyped (int32 length + body); an
// SSLRequest or GSSENCRequest gets a one-byte answer; every later message is type + int32 length.
import { PgMessageFramer } from '../pg-framer.js';
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

class PostgresTracker implements BoundaryTracker {
  private readonly client = new PgMessageFramer({ typed: false, keep: (type) => (type === '' ? 4 : 0) });
  private readonly server = new PgMessageFramer({ typed: true });
  private startupSeen = false;
  private awaitingNegotiationByte = false;
  private encrypted = false;

  clientData(chunk: Uint8Array): void {
    if (this.encrypted) return;
    let data = chunk;
    while (data.length > 0 && !this.client.broken) {
      if (this.startupSeen) return void this.client.push(data);
      // Untyped until the StartupMessage; an SSL/GSS request is answered by one byte first.
      const before = this.client.offset;
      const [m] = this.client.push(data, () => true);
      data = data.subarray(this.client.offset - before);
      if (!m) return;
      const code = m.body.length >= 4 ? m.body.readInt32BE(0) : 0;
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) this.awaitingNegotiationByte = true;
      else {
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
    return !this.encrypted && !this.server.broken && !this.awaitingNegotiationByte && this.server.between;
  }

  reason(): string {
    if (this.encrypted) return 'the connection is encrypted (TLS/GSS); its messages cannot be followed';
    if (this.server.broken) return `server stream not PostgreSQL: ${this.server.broken}`;
    if (this.awaitingNegotiationByte) return 'server has not answered the SSL/GSS request yet';
    if (!this.server.between) return 'the server is in the middle of a message';
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
