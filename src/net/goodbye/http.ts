// HTTP/1.1 goodbye: "503 Service Unavailable" with `Connection: close`, then FIN — sent only when
// the server is between responses, so the client reads it as the answer to its pending request
// (or as the server closing an idle keep-alive connection). Both directions are framed
// (Content-Length, chunked, bodiless statuses, HEAD) because a response's framing depends on the
// request it answers.
import type { BoundaryTracker, GoodbyePlugin } from './types.js';

const MAX_HEAD = 64 * 1024;

type Phase =
  | { kind: 'head'; buf: string }
  | { kind: 'body'; remaining: number }
  | { kind: 'chunk-size'; line: string }
  | { kind: 'chunk-data'; remaining: number }
  | { kind: 'chunk-crlf'; seen: number }
  | { kind: 'trailers'; buf: string }
  | { kind: 'until-close' }
  | { kind: 'broken'; why: string };

/** Frames a sequence of HTTP/1.x messages in one direction. */
class Http1Framer {
  phase: Phase = { kind: 'head', buf: '' };
  constructor(
    private readonly isResponse: boolean,
    /** Requests call this with their method; responses ask it for the method they answer. */
    private readonly methods: string[],
  ) {}

  get between(): boolean {
    return this.phase.kind === 'head' && this.phase.buf.length === 0;
  }

  push(chunk: Uint8Array): void {
    let i = 0;
    const text = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (i < text.length) {
      const p = this.phase;
      switch (p.kind) {
        case 'broken':
        case 'until-close':
          return;
        case 'head': {
          // Look for the end of the head within what we have.
          const combined = p.buf + text.toString('latin1', i);
          const end = combined.indexOf('\r\n\r\n');
          if (end < 0) {
            if (combined.length > MAX_HEAD) this.phase = { kind: 'broken', why: 'header block too large' };
            else this.phase = { kind: 'head', buf: combined };
            return;
          }
          const consumed = end + 4 - p.buf.length;
          i += consumed;
          this.onHead(combined.slice(0, end));
          break;
        }
        case 'body': {
          const n = Math.min(p.remaining, text.length - i);
          i += n;
          p.remaining -= n;
          if (p.remaining === 0) this.phase = { kind: 'head', buf: '' };
          break;
        }
        case 'chunk-size': {
          const nl = text.indexOf('\n', i);
          const part = text.toString('latin1', i, nl < 0 ? text.length : nl + 1);
          i += part.length;
          const line = p.line + part;
          if (nl < 0) {
            this.phase = line.length > 1024 ? { kind: 'broken', why: 'chunk size line too long' } : { kind: 'chunk-size', line };
            break;
          }
          const size = parseInt(line.split(';')[0]!.trim(), 16);
          if (!Number.isFinite(size) || size < 0) {
            this.phase = { kind: 'broken', why: 'bad chunk size' };
            break;
          }
          this.phase = size === 0 ? { kind: 'trailers', buf: '' } : { kind: 'chunk-data', remaining: size };
          break;
        }
        case 'chunk-data': {
          const n = Math.min(p.remaining, text.length - i);
          i += n;
          p.remaining -= n;
          if (p.remaining === 0) this.phase = { kind: 'chunk-crlf', seen: 0 };
          break;
        }
        case 'chunk-crlf': {
          const n = Math.min(2 - p.seen, text.length - i);
          i += n;
          p.seen += n;
          if (p.seen === 2) this.phase = { kind: 'chunk-size', line: '' };
          break;
        }
        case 'trailers': {
          const combined = p.buf + text.toString('latin1', i);
          // The trailer section ends with an empty line; with no trailers that is the very next CRLF.
          const end = combined.startsWith('\r\n') ? 0 : combined.indexOf('\r\n\r\n');
          if (end < 0) {
            this.phase = { kind: 'trailers', buf: combined };
            return;
          }
          const total = end === 0 ? 2 : end + 4;
          i += total - p.buf.length;
          this.phase = { kind: 'head', buf: '' };
          break;
        }
      }
    }
  }

  private onHead(head: string): void {
    const lines = head.split('\r\n');
    const start = lines[0] ?? '';
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const c = line.indexOf(':');
      if (c > 0) headers.set(line.slice(0, c).trim().toLowerCase(), line.slice(c + 1).trim().toLowerCase());
    }
    let bodiless = false;
    if (this.isResponse) {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(start);
      if (!m) {
        this.phase = { kind: 'broken', why: 'not an HTTP/1.x response' };
        return;
      }
      const status = Number(m[1]);
      if (status >= 100 && status < 200) {
        // Interim response: the final one for the same request follows.
        this.phase = { kind: 'head', buf: '' };
        return;
      }
      const method = this.methods.shift();
      bodiless = status === 204 || status === 304 || method === 'HEAD';
    } else {
      const m = /^([A-Z]+) \S+ HTTP\/1\.[01]$/.exec(start);
      if (!m) {
        this.phase = { kind: 'broken', why: 'not an HTTP/1.x request' };
        return;
      }
      this.methods.push(m[1]!);
      if (m[1] === 'CONNECT') {
        this.phase = { kind: 'broken', why: 'CONNECT tunnel' };
        return;
      }
    }
    const te = headers.get('transfer-encoding');
    const cl = headers.get('content-length');
    if (bodiless) this.phase = { kind: 'head', buf: '' };
    else if (te !== undefined && te.split(',').pop()!.trim() === 'chunked') this.phase = { kind: 'chunk-size', line: '' };
    else if (cl !== undefined) {
      const n = Number(cl);
      if (!Number.isSafeInteger(n) || n < 0) this.phase = { kind: 'broken', why: 'bad Content-Length' };
      else this.phase = n === 0 ? { kind: 'head', buf: '' } : { kind: 'body', remaining: n };
    } else if (this.isResponse) this.phase = { kind: 'until-close' };
    else this.phase = { kind: 'head', buf: '' };
  }
}

class HttpTracker implements BoundaryTracker {
  private readonly methods: string[] = [];
  private readonly requests = new Http1Framer(false, this.methods);
  private readonly responses = new Http1Framer(true, this.methods);

  clientData(chunk: Uint8Array): void {
    this.requests.push(chunk);
  }
  serverData(chunk: Uint8Array): void {
    this.responses.push(chunk);
  }
  atBoundary(): boolean {
    return this.responses.between && this.requests.phase.kind !== 'broken';
  }
  reason(): string {
    const r = this.responses.phase;
    if (this.requests.phase.kind === 'broken') return `client stream: ${this.requests.phase.why}`;
    if (r.kind === 'broken') return `server stream: ${r.why}`;
    if (r.kind === 'until-close') return 'the response body runs until the connection closes';
    if (!this.responses.between) return 'the server is in the middle of a response';
    return 'between responses';
  }
}

export function http503(): Buffer {
  const body = 'The server handling this connection failed; please retry.\n';
  return Buffer.from(
    'HTTP/1.1 503 Service Unavailable\r\n' +
      'Connection: close\r\n' +
      'Content-Type: text/plain\r\n' +
      'Retry-After: 1\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    'latin1',
  );
}

export const httpGoodbye: GoodbyePlugin = {
  name: 'http',
  message: http503,
  createTracker: () => new HttpTracker(),
};
