// Checks both signed-frame wires' tests run on their streaming readers (log-mirror-wire.test.ts,
// segment-wire.test.ts; src/wire/signed-frames.ts): the same frames whatever the chunking, and
// the seeded mutation fuzz (a valid stream mutated by mirror-helpers' mutateStream, pushed in
// random chunks as a socket would, must end in exactly one rejection, after exactly the untouched
// frames).
import { expect } from 'vitest';
import { mutateStream, seededRandom } from './mirror-helpers.js';

type Result = { ok: true; frame: { seq: bigint } } | { ok: false; reason: string; detail: string };

/** What the fuzz needs of a wire's reader. */
export interface ChunkReader<R extends Result> {
  push(chunk: Buffer): R[];
  finish(): R | null;
  readonly pendingBytes: number;
}

/** The reason of the rejection that ends `results`, or null. */
export function rejectionOf(results: readonly Result[]): string | null {
  const last = results.at(-1);
  return last && !last.ok ? last.reason : null;
}

/**
 * Asserts `stream` read by a fresh `newReader()` gives `whole` (its frames read in one push)
 * when cut in two at every 7th byte, and when pushed byte by byte (then nothing is pending).
 */
export function expectSameWhateverTheChunking<R extends Result>(stream: Buffer, whole: R[], newReader: () => ChunkReader<R>): void {
  for (let cut = 0; cut <= stream.length; cut += 7) {
    const r = newReader();
    expect([...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))], `cut at ${cut}`).toEqual(whole);
  }
  const r = newReader();
  const got: R[] = [];
  for (let i = 0; i < stream.length; i++) got.push(...r.push(stream.subarray(i, i + 1)));
  expect(got).toEqual(whole);
  expect(r.pendingBytes).toBe(0);
  expect(r.finish()).toBeNull();
}

/**
 * `iterations` seeded mutations of `frames`, each read by a fresh `newReader()` in chunks of
 * 1..300 bytes. Asserts each ends in one rejection, last, after frames equal to the unmutated
 * stream's first ones (sequence 0, 1, 2...), and that every reason of `mustReach` was met.
 * Returns how often each reason was met.
 */
export function fuzzFrameReader<R extends Result>(frames: Buffer[], newReader: () => ChunkReader<R>, seed: number, mustReach: readonly string[], iterations = 3000): Map<string, number> {
  const { int } = seededRandom(seed);
  const reference = newReader().push(Buffer.concat(frames));
  const reasons = new Map<string, number>();
  for (let iter = 0; iter < iterations; iter++) {
    const { bytes, how } = mutateStream(frames, int);
    const r = newReader();
    const results: R[] = [];
    for (let o = 0; o < bytes.length; ) {
      const n = 1 + int(300);
      results.push(...r.push(bytes.subarray(o, o + n)));
      o += n;
    }
    const end = r.finish();
    if (end) results.push(end);
    const good = results.filter((x) => x.ok);
    const bad = results.filter((x) => !x.ok);
    expect(bad.length, how).toBe(1);
    expect(results.at(-1)?.ok, how).toBe(false);
    good.forEach((g, i) => expect(g.ok && g.frame.seq, how).toBe(BigInt(i)));
    good.forEach((g, i) => expect(g, how).toEqual(reference[i]));
    const reason = rejectionOf(bad)!;
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
  }
  for (const r of mustReach) expect(reasons.get(r) ?? 0, `${r} in ${JSON.stringify([...reasons])}`).toBeGreaterThan(0);
  return reasons;
}
