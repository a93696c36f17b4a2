// The HTTP/1.1 continue plugin (issue 12): pairs a connection's requests with its final responses
// in order (RFC 9112 §9.3.2: a server answers pipelined requests in the order they came), so the
// shadow knows which requests the dead server answered and which to replay on the new upstream.
// HTTP/1.1 is stateless between requests: no session preamble. What cannot be continued:
// - an unanswered request that is not idempotent (RFC 9110 §9.2.2: only GET, HEAD, OPTIONS,
//   TRACE, PUT and DELETE may be sent again): the dead server may have applied it, and a replay
//   would apply it twice; POST, PATCH and unknown methods are blocked;
// - a connection no longer HTTP: upgraded (101 Switching Protocols), a CONNECT tunnel;
// - `Connection: close` (or HTTP/1.0 without keep-alive) from either end while a request is
//   outstanding: the dead server was to close after its response, the client may not expect more;
// - a final response to a request not yet received whole (the server answered early, e.g. a 413):
//   the rest of that request would reach the new upstream as a new one;
// - anything the framer (http1-framer.ts) cannot frame, a response without a request, and more
//   than MAX_PENDING requests outstanding.
// Interim responses (1xx other than 101) are whole messages a client must accept any number of
// (RFC 9110 §15.2): they advance completeServerBytes but answer nothing. A final response cut by
// the death in its body is resumed where that can be proven (a GET's 200 with a strong
// validator: the replay asks for the rest with Range and If-Range, http-range-resume.ts); any
// other is left to the shadow's expectReply: the new upstream's response must begin with the
// very bytes the client has of it, or the client is reset. Responses usually carry a Date field
// (RFC 9110 §6.6.1), so one cut in its head after the second turned is reset, never mixed.
import { Http1Framer, type Http1Event, type Http1Head } from '../http1-framer.js';
import { gapReason, type ContinuePlugin, type ExchangeTracker, type ReplyCounter, type ReplyResume, type SessionPreamble } from './exchange-tracker.js';
import { planRangeResume, rangeRequestBlocker } from './http-range-resume.js';

/** Requests waiting for a response beyond this many block the connection (memory bound). */
export const MAX_PENDING = 10_000;
/** RFC 9110 §9.2.2: the methods whose requests may be repeated with the same effect (case-sensitive, §9.1). */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

interface Request {
  method: string;
  /** Client stream offset where it ends (exclusive); null while its body is being sent. */
  end: number | null;
  /** Its final response has ended. */
  responded: boolean;
  /** Where a Range field could go in its head (the offset of the head's final CRLF), or why its response cannot be resumed. */
  rangeAt: number | string;
}

class HttpTracker implements ExchangeTracker {
  // Events are taken as they happen: a response's framing depends on the request it answers.
  private readonly requests = new Http1Framer('request', { onEvent: (e) => this.sticky ?? this.onRequest(e) });
  private readonly responses = new Http1Framer('response', { requestMethod: () => this.pending[this.replyTo]?.method, onEvent: (e) => this.sticky ?? this.onResponse(e) });
  /** Requests seen (head complete), oldest not yet answered-and-whole at `head`. */
  private pending: (Request | undefined)[] = [];
  private head = 0;
  /** The request the next final response answers (head <= replyTo <= pending.length). */
  private replyTo = 0;
  private answered = 0;
  private complete = 0;
  private sticky: string | null = null;
  /** Which end said the connection ends after a message (Connection: close, HTTP/1.0), first. */
  private closing: string | null = null;

  clientData(chunk: Uint8Array): void {
    if (this.sticky) return;
    this.requests.push(chunk);
    if (this.requests.broken) this.sticky ??= `client stream not HTTP/1.1 requests: ${this.requests.broken}`;
  }

  serverData(chunk: Uint8Array): void {
    if (this.sticky) return;
    this.responses.push(chunk);
    if (this.responses.broken) this.sticky ??= `server stream not HTTP/1.1 responses: ${this.responses.broken}`;
  }

  serverGap(length: number): string | null {
    return this.gap(this.responses, length, 'server', 'they reach past a response body\'s data, and the responses cannot be framed past them');
  }

  clientGap(length: number): string | null {
    return this.gap(this.requests, length, 'client', 'they reach past a request body\'s data, and the requests cannot be framed past them');
  }

  /** Bytes lost inside a body of known length (a Content-Length body, one chunk's data) are skipped: they are not read anyway. */
  private gap(framer: Http1Framer, length: number, side: 'server' | 'client', why: string): string | null {
    if (this.sticky) return this.sticky;
    if (framer.skipLost(length)) return null;
    this.sticky = gapReason(length, side, why);
    return why;
  }

  answeredClientBytes(): number {
    return this.answered;
  }

  completeServerBytes(): number {
    return this.complete;
  }

  sessionPreamble(): SessionPreamble {
    return { bytes: Buffer.alloc(0), replies: 0 };
  }

  blocker(): string | null {
    if (this.sticky) return this.sticky;
    const first = this.pending[this.head];
    if (first?.responded) return `the server answered a ${first.method} request before it had received all of it: the rest would reach the new server as a new request`;
    for (let i = this.head; i < this.pending.length; i++) {
      const r = this.pending[i]!;
      if (!IDEMPOTENT_METHODS.has(r.method)) {
        return `a ${r.method} request not answered: not idempotent (RFC 9110 §9.2.2), the dead server may have applied it and a replay could apply it twice`;
      }
    }
    const outstanding = this.head < this.pending.length || !this.requests.between;
    if (this.closing && outstanding) return `${this.closing} said the connection ends after a message (Connection: close or HTTP/1.0) with a request outstanding`;
    return null;
  }

  /** The final response being sent (its head whole, its body cut) asked for from where it stopped: http-range-resume.ts. */
  resumeReply(): ReplyResume | string {
    if (this.sticky) return this.sticky;
    const response = this.responses.inProgress;
    const request = this.pending[this.replyTo];
    if (!response || !request) return 'the response\'s head was not whole';
    if (typeof request.rangeAt === 'string') return request.rangeAt;
    return planRangeResume(request.rangeAt, response, this.responses.offset - response.headEnd);
  }

  private onRequest(e: Http1Event): void {
    if (e.kind === 'end') {
      const r = this.pending[this.pending.length - 1]!;
      r.end = e.message.end;
      return this.advance();
    }
    const h = e.head;
    if (h.method === 'CONNECT') return void (this.sticky = 'CONNECT: the connection becomes a tunnel (RFC 9110 §9.3.6), not HTTP any more');
    if (this.pending.length - this.head >= MAX_PENDING) return void (this.sticky = `more than ${MAX_PENDING} requests pending`);
    if (h.close) this.closing ??= 'the client';
    this.pending.push({ method: h.method, end: null, responded: false, rangeAt: rangeRequestBlocker(h) ?? h.headEnd - 2 });
  }

  private onResponse(e: Http1Event): void {
    const h: Http1Head = e.kind === 'head' ? e.head : e.message.head;
    const req = this.pending[this.replyTo];
    if (!req) return void (this.sticky = `a ${h.status} response without a request`);
    if (e.kind === 'head') {
      if (h.status === 101) return void (this.sticky = `101 Switching Protocols${h.upgrade ? ` to ${h.upgrade}` : ''}: the connection is not HTTP any more`);
      if (h.close && h.status >= 200) this.closing ??= 'the server';
      return;
    }
    this.complete = e.message.end;
    if (h.status < 200) return; // interim: the final response follows
    req.responded = true;
    this.replyTo++;
    this.advance();
  }

  /** Moves `answered` past the requests that are whole and answered, in order. */
  private advance(): void {
    while (this.head < this.pending.length) {
      const r = this.pending[this.head]!;
      if (!r.responded || r.end === null) break;
      this.answered = r.end;
      this.pending[this.head++] = undefined;
    }
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.replyTo -= this.head;
      this.head = 0;
    }
  }
}

/**
 * Counts complete final responses in an upstream's stream (interim 1xx ones are not counted). It
 * cannot know the requests: it frames every response as one to a request other than HEAD or
 * CONNECT (a HEAD response with a Content-Length would be misframed). HTTP has no session
 * preamble, so the relay has no reply of it to swallow.
 */
class HttpReplyCounter implements ReplyCounter {
  private readonly framer = new Http1Framer('response');
  push(chunk: Uint8Array): number[] {
    const base = this.framer.offset;
    const ends: number[] = [];
    for (const e of this.framer.push(chunk)) if (e.kind === 'end' && e.message.head.status >= 200) ends.push(e.message.end - base);
    return ends;
  }
  get broken(): string | null {
    return this.framer.broken ?? this.framer.opaque;
  }
}

export const httpContinue: ContinuePlugin = {
  name: 'http',
  createTracker: () => new HttpTracker(),
  createReplyCounter: () => new HttpReplyCounter(),
};
