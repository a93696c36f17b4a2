// TCP sequence-space arithmetic (RFC 1982 serial numbers over 2^32).
const MOD = 0x1_0000_0000;

export function seqAdd(seq: number, n: number): number {
  return (((seq + n) % MOD) + MOD) % MOD;
}

/** Signed distance b - a in sequence space, in (-2^31, 2^31]. */
export function seqDiff(a: number, b: number): number {
  const d = (b - a) % MOD;
  if (d > 0x7fff_ffff) return d - MOD;
  if (d <= -0x8000_0000) return d + MOD;
  return d;
}

export function seqLt(a: number, b: number): boolean {
  return seqDiff(a, b) > 0;
}

/** True when seq lies in [start, start + length). */
export function seqInWindow(seq: number, start: number, length: number): boolean {
  const d = seqDiff(start, seq);
  return d >= 0 && d < length;
}
