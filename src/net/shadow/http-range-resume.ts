// Resuming an HTTP response the dead server was cut in the middle of (issue 12: "death during a
// large reply"): the replayed GET gets `Range: bytes=N-` and `If-Range: <validator>` (RFC 9110
// §14.2, §13.1.5), N being the body bytes the client has or gets in the restored socket's refill;
// the new server answers 206 with the rest of the very same representation, and the relay drops
// that 206's head, so the client reads on in the body it was reading. Without it a response cut
// after its head could only be continued if the new server reproduced it byte for byte, which
// its Date field (RFC 9110 §6.6.1) rules out once the second has turned.
//
// Only what proves the same representation is resumed: a 200 to a GET without a body, a range
// or an If-Range of its own, delimited by Content-Length (the client counts those bytes; a
// chunked body's framing could not go on from a range), with a strong validator: an ETag not
// marked weak, or else a Last-Modified at least a second before the response's Date (§8.8.2.2).
// The new server's answer must be a 206 of exactly `bytes N-(L-1)/L` with the same ETag, or a
// 200 of the same validator and length (a server without ranges: its first N body bytes are
// dropped); anything else (the representation changed: If-Range made it a 200 of another
// ETag; an error status) resets the client.
import { Http1Framer, type Http1Head } from '../http1-framer.js';
import type { ReplyFilter, ReplyResume } from './exchange-tracker.js';

/** The validator an If-Range carries (RFC 9110 §13.1.5): a strong entity tag, or an HTTP-date. */
export interface RangeValidator {
  field: 'etag' | 'last-modified';
  value: string;
}

/** A strong entity tag (RFC 9110 §8.8.3): DQUOTE etagc* DQUOTE, no W/ prefix. */
const STRONG_ETAG = /^"[\x21\x23-\x7e\x80-\xff]*"$/;
const CONTENT_RANGE = /^bytes (\d{1,16})-(\d{1,16})\/(\d{1,16})$/;

/** One value of a field that must occur once; undefined when absent or repeated. */
function single(head: Http1Head, name: string): string | undefined {
  const v = head.fields.get(name);
  return v?.length === 1 ? v[0] : undefined;
}

/**
 * Why a request's response cannot be resumed with a range, or null (RFC 9110 §14.2: a GET; one
 * that names a range itself is left alone, its answer is a 206 already).
 */
export function rangeRequestBlocker(request: Http1Head): string | null {
  if (request.method !== 'GET') return `the request is a ${request.method} (only a GET's response is resumed with a range, RFC 9110 §14.2)`;
  if (request.body !== 'none') return 'the GET has a body';
  if (request.fields.has('range') || request.fields.has('if-range')) return 'the client asked for a range itself';
  return null;
}

/** The response's strong validator for If-Range (RFC 9110 §13.1.5, §8.8.2.2), or why it has none. */
export function rangeValidator(response: Http1Head): RangeValidator | string {
  const etags = response.fields.get('etag');
  if (etags) {
    const etag = single(response, 'etag');
    if (etag === undefined) return 'more than one ETag';
    if (!STRONG_ETAG.test(etag)) return `its ETag ${etag.slice(0, 80)} is weak or malformed (If-Range needs a strong one)`;
    return { field: 'etag', value: etag };
  }
  const modified = single(response, 'last-modified');
  const date = single(response, 'date');
  if (modified === undefined) return 'it has no ETag and no Last-Modified';
  const m = Date.parse(modified);
  const d = date === undefined ? NaN : Date.parse(date);
  if (Number.isNaN(m) || Number.isNaN(d)) return 'its Last-Modified or Date is not an HTTP-date';
  if (d - m < 1000) return 'its Last-Modified is less than a second before its Date: a weak validator (RFC 9110 §8.8.2.2)';
  return { field: 'last-modified', value: modified };
}

/**
 * How to ask a new server for the rest of `response`, cut after `bodySent` bytes of its body, or
 * why it cannot be. `insertAt`: the client stream offset of the request's head's final CRLF,
 * where the Range and If-Range field lines go.
 */
export function planRangeResume(insertAt: number, response: Http1Head, bodySent: number): ReplyResume | string {
  if (response.status !== 200) return `the response is a ${response.status}, not a 200`;
  if (response.body !== 'length') return `its body is ${response.body === 'chunked' ? 'chunked' : 'not delimited by a Content-Length'} (the client counts a Content-Length body's bytes)`;
  if (bodySent >= response.length) return 'its body was sent whole';
  if ((response.fields.get('accept-ranges') ?? []).some((v) => v.trim().toLowerCase() === 'none')) return 'the server said Accept-Ranges: none';
  const validator = rangeValidator(response);
  if (typeof validator === 'string') return validator;
  const insert = Buffer.from(`Range: bytes=${bodySent}-\r\nIf-Range: ${validator.value}\r\n`, 'latin1');
  const total = response.length;
  return {
    description: `HTTP range from body byte ${bodySent} of ${total} (If-Range ${validator.value})`,
    insertAt,
    insert,
    createFilter: () => new RangeResumeFilter(bodySent, total, validator),
  };
}

/**
 * Reads the new server's answer to the ranged GET: drops its head (and any interim 1xx), checks
 * it continues the cut representation, then hands over the body (a 206's whole, a 200's after its
 * first `from` bytes).
 */
export class RangeResumeFilter implements ReplyFilter {
  private readonly framer = new Http1Framer('response', { requestMethod: () => 'GET' });
  /** Body bytes still to drop (a 200 that ignored the range); -1 while the head is read. */
  private skip = -1;

  constructor(
    private readonly from: number,
    private readonly total: number,
    private readonly validator: RangeValidator,
  ) {}

  push(chunk: Uint8Array): { kind: 'more' } | { kind: 'done'; rest: Buffer } | { kind: 'failed'; reason: string } {
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    if (this.skip >= 0) return this.drop(bytes);
    const base = this.framer.offset;
    for (const e of this.framer.push(bytes)) {
      if (e.kind !== 'head' || e.head.status < 200) continue;
      const skip = this.check(e.head);
      if (typeof skip === 'string') return { kind: 'failed', reason: `the new server's answer to the ranged GET does not go on from body byte ${this.from}: ${skip}` };
      this.skip = skip;
      return this.drop(bytes.subarray(e.head.headEnd - base));
    }
    if (this.framer.broken) return { kind: 'failed', reason: `the new server's answer to the ranged GET is not HTTP/1.1: ${this.framer.broken}` };
    return { kind: 'more' };
  }

  /** The body bytes of `head` to drop before the client's next one, or why it is not the rest of the cut response. */
  private check(head: Http1Head): number | string {
    const same = single(head, this.validator.field);
    if (same !== this.validator.value) return `its ${this.validator.field === 'etag' ? 'ETag' : 'Last-Modified'} is ${same ?? 'absent'}, was ${this.validator.value}`;
    if (head.body !== 'length') return `a ${head.status} whose body is not delimited by a Content-Length`;
    if (head.status === 200) {
      if (head.length !== this.total) return `a 200 of ${head.length} bytes, was ${this.total}`;
      return this.from;
    }
    if (head.status !== 206) return `status ${head.status}`;
    const range = CONTENT_RANGE.exec(single(head, 'content-range') ?? '');
    const last = this.total - 1;
    if (!range || Number(range[1]) !== this.from || Number(range[2]) !== last || Number(range[3]) !== this.total) {
      return `a 206 of ${single(head, 'content-range') ?? 'no single Content-Range'}, asked for bytes ${this.from}-${last}/${this.total}`;
    }
    if (head.length !== this.total - this.from) return `a 206 of ${head.length} bytes, asked for ${this.total - this.from}`;
    return 0;
  }

  private drop(bytes: Buffer): { kind: 'more' } | { kind: 'done'; rest: Buffer } {
    const n = Math.min(this.skip, bytes.length);
    this.skip -= n;
    return this.skip > 0 ? { kind: 'more' } : { kind: 'done', rest: bytes.subarray(n) };
  }
}
