// Resuming a cut HTTP response with Range and If-Range (http-range-resume.ts, issue 12's "death
// during a large reply"), pure: which requests and responses can be resumed and why not, the
// validator chosen (RFC 9110 §13.1.5), the filter over the new server's answer split at every
// byte (a 206, a 200 that ignored the range, interim responses before them) and each answer that
// does not go on from the cut (another ETag, another range, an error status, not HTTP).
import { describe, expect, it } from 'vitest';
import { Http1Framer, type Http1Head } from '../../src/net/http1-framer.js';
import { planRangeResume, rangeRequestBlocker, rangeValidator, RangeResumeFilter } from '../../src/net/shadow/http-range-resume.js';
import { prng } from './frame-builder.js';

const b = (s: string) => Buffer.from(s, 'latin1');

/** The head of the first message in `text` (a request or a response to a GET). */
function headOf(role: 'request' | 'response', text: string): Http1Head {
  const f = new Http1Framer(role, { requestMethod: () => 'GET' });
  const e = f.push(b(text)).find((x) => x.kind === 'head');
  if (!e || e.kind !== 'head') throw new Error(`no head: ${f.broken}`);
  return e.head;
}

const ETAG = '"6571c3a2-2000000"';
const response = (fields: string, length = 1000) => headOf('response', `HTTP/1.1 200 OK\r\nContent-Length: ${length}\r\n${fields}\r\n`);

/** Runs `filter` over `bytes` cut at `cut`; what the client would get, or the failure. */
function through(filter: RangeResumeFilter, bytes: Buffer, cut: number): { out: string; done: boolean } | { failed: string } {
  let out = '';
  let done = false;
  for (const part of [bytes.subarray(0, cut), bytes.subarray(cut)]) {
    if (done) {
      out += part.toString('latin1');
      continue;
    }
    const step = filter.push(part);
    if (step.kind === 'failed') return { failed: step.reason };
    if (step.kind === 'done') {
      done = true;
      out += step.rest.toString('latin1');
    }
  }
  return { out, done };
}

describe('what can be resumed', () => {
  it('a GET without body, range or If-Range; anything else says why', () => {
    expect(rangeRequestBlocker(headOf('request', 'GET /f HTTP/1.1\r\nHost: x\r\n\r\n'))).toBeNull();
    expect(rangeRequestBlocker(headOf('request', 'HEAD /f HTTP/1.1\r\n\r\n'))).toMatch(/a HEAD/);
    expect(rangeRequestBlocker(headOf('request', 'GET /f HTTP/1.1\r\nContent-Length: 2\r\n\r\n'))).toMatch(/has a body/);
    expect(rangeRequestBlocker(headOf('request', 'GET /f HTTP/1.1\r\nRange: bytes=0-9\r\n\r\n'))).toMatch(/asked for a range itself/);
    expect(rangeRequestBlocker(headOf('request', `GET /f HTTP/1.1\r\nIf-Range: ${ETAG}\r\n\r\n`))).toMatch(/asked for a range itself/);
  });

  it('the validator: a strong ETag first, else a Last-Modified a second or more before the Date (RFC 9110 §8.8.2.2)', () => {
    expect(rangeValidator(response(`ETag: ${ETAG}\r\nLast-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n`))).toEqual({ field: 'etag', value: ETAG });
    expect(rangeValidator(response('ETag: W/"x"\r\n'))).toMatch(/weak or malformed/);
    expect(rangeValidator(response('ETag: x\r\n'))).toMatch(/weak or malformed/);
    expect(rangeValidator(response('ETag: "a"\r\nETag: "b"\r\n'))).toMatch(/more than one ETag/);
    const lm = 'Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n';
    expect(rangeValidator(response(`${lm}Date: Wed, 02 Dec 2026 13:00:00 GMT\r\n`))).toEqual({ field: 'last-modified', value: 'Tue, 01 Dec 2026 10:00:00 GMT' });
    expect(rangeValidator(response(`${lm}Date: Tue, 01 Dec 2026 10:00:00 GMT\r\n`))).toMatch(/weak validator/);
    expect(rangeValidator(response(lm))).toMatch(/not an HTTP-date/);
    expect(rangeValidator(response('Date: Wed, 02 Dec 2026 13:00:00 GMT\r\n'))).toMatch(/no ETag and no Last-Modified/);
  });

  it('a 200 with a Content-Length body cut before its end; the Range and If-Range fields to insert', () => {
    const r = planRangeResume(123, response(`ETag: ${ETAG}\r\n`), 400);
    if (typeof r === 'string') throw new Error(r);
    expect(r.insertAt).toBe(123);
    expect(r.insert.toString('latin1')).toBe(`Range: bytes=400-\r\nIf-Range: ${ETAG}\r\n`);
    expect(r.description).toBe(`HTTP range from body byte 400 of 1000 (If-Range ${ETAG})`);
    expect(planRangeResume(0, response(`ETag: ${ETAG}\r\n`), 1000)).toMatch(/sent whole/);
    expect(planRangeResume(0, headOf('response', `HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nETag: ${ETAG}\r\n\r\n`), 3)).toMatch(/a 404, not a 200/);
    expect(planRangeResume(0, headOf('response', `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: ${ETAG}\r\n\r\n`), 3)).toMatch(/chunked/);
    expect(planRangeResume(0, response(`ETag: ${ETAG}\r\nAccept-Ranges: none\r\n`), 3)).toMatch(/Accept-Ranges: none/);
  });
});

describe('RangeResumeFilter over the new server\'s answer', () => {
  const rest = 'x'.repeat(600);
  const partial = (extra = '') => `HTTP/1.1 206 Partial Content\r\nContent-Length: 600\r\nContent-Range: bytes 400-999/1000\r\nETag: ${ETAG}\r\n${extra}\r\n${rest}`;
  const filter = () => new RangeResumeFilter(400, 1000, { field: 'etag', value: ETAG });

  it('a 206 of exactly the rest: its head dropped, its body and what follows relayed; split at every byte', () => {
    const next = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
    const bytes = b(`HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n${partial('Date: Wed, 02 Dec 2026 13:00:00 GMT\r\n')}${next}`);
    for (let cut = 0; cut <= bytes.length; cut++) expect(through(filter(), bytes, cut), `cut ${cut}`).toEqual({ out: rest + next, done: true });
  });

  it('a 200 of the same representation (a server without ranges): its first 400 body bytes dropped too', () => {
    const body = 'y'.repeat(400) + rest;
    const bytes = b(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: ${ETAG}\r\n\r\n${body}`);
    for (let cut = 0; cut <= bytes.length; cut += 7) expect(through(filter(), bytes, cut), `cut ${cut}`).toEqual({ out: rest, done: true });
  });

  it('anything that does not go on from byte 400 of that representation fails, saying why', () => {
    const fails = (text: string) => {
      const r = through(filter(), b(text), 0);
      return 'failed' in r ? r.failed : `not failed: ${JSON.stringify(r)}`;
    };
    expect(fails(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: "other"\r\n\r\n`)).toMatch(/ETag is "other", was "6571c3a2-2000000"/);
    expect(fails('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n')).toMatch(/ETag is absent/);
    expect(fails(`HTTP/1.1 200 OK\r\nContent-Length: 999\r\nETag: ${ETAG}\r\n\r\n`)).toMatch(/a 200 of 999 bytes, was 1000/);
    expect(fails(`HTTP/1.1 206 Partial Content\r\nContent-Length: 500\r\nContent-Range: bytes 500-999/1000\r\nETag: ${ETAG}\r\n\r\n`)).toMatch(/a 206 of bytes 500-999\/1000, asked for bytes 400-999\/1000/);
    expect(fails(`HTTP/1.1 206 Partial Content\r\nContent-Length: 600\r\nContent-Range: bytes 400-999/2000\r\nETag: ${ETAG}\r\n\r\n`)).toMatch(/asked for bytes 400-999\/1000/);
    expect(fails(`HTTP/1.1 206 Partial Content\r\nContent-Length: 599\r\nContent-Range: bytes 400-999/1000\r\nETag: ${ETAG}\r\n\r\n`)).toMatch(/a 206 of 599 bytes, asked for 600/);
    expect(fails(`HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\nContent-Range: bytes 400-999/1000\r\nETag: ${ETAG}\r\n\r\n`)).toMatch(/not delimited by a Content-Length/);
    expect(fails(`HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nETag: ${ETAG}\r\n\r\n`)).toMatch(/status 416/);
    expect(fails(`HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n`)).toMatch(/ETag is absent/);
    expect(fails('SSH-2.0-OpenSSH\r\n\r\n')).toMatch(/not HTTP\/1\.1/);
  });

  it('by Last-Modified: the same date and length goes on, another date fails', () => {
    const lm = 'Tue, 01 Dec 2026 10:00:00 GMT';
    const f = () => new RangeResumeFilter(400, 1000, { field: 'last-modified', value: lm });
    expect(through(f(), b(`HTTP/1.1 206 Partial Content\r\nContent-Length: 600\r\nContent-Range: bytes 400-999/1000\r\nLast-Modified: ${lm}\r\n\r\n${rest}`), 10)).toEqual({ out: rest, done: true });
    const r = through(f(), b(`HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nLast-Modified: Wed, 02 Dec 2026 10:00:00 GMT\r\n\r\n`), 10);
    expect('failed' in r && r.failed).toMatch(/Last-Modified is Wed, 02 Dec 2026 10:00:00 GMT/);
  });
});

describe('fuzz (seeded, bounded)', () => {
  it('mutated answers never throw; whatever is let through is the tail of what was fed, and only after a 206 or 200 head that checks out', () => {
    const rand = prng(0x5eed_0206);
    const valid = b(`HTTP/1.1 206 Partial Content\r\nContent-Length: 600\r\nContent-Range: bytes 400-999/1000\r\nETag: ${ETAG}\r\n\r\n${'x'.repeat(600)}`);
    let done = 0;
    for (let run = 0; run < 3000; run++) {
      const bytes = Buffer.from(valid);
      for (let m = Math.floor(rand() * 4); m > 0; m--) bytes[Math.floor(rand() * 110)] = Math.floor(rand() * 256);
      const cut = Math.floor(rand() * (bytes.length + 1));
      const r = through(new RangeResumeFilter(400, 1000, { field: 'etag', value: ETAG }), bytes, cut);
      if ('failed' in r) {
        expect(r.failed).toMatch(/^the new server's answer to the ranged GET/);
        continue;
      }
      if (!r.done) continue; // a head not ended yet (a mutated CRLF)
      done++;
      expect(bytes.toString('latin1').endsWith(r.out)).toBe(true);
      expect(r.out.length).toBeLessThanOrEqual(600);
    }
    expect(done).toBeGreaterThan(100);
  });
});
