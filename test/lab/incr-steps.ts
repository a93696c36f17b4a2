// The steps between one counter connection's successive INCR replies (resp-counter-client.ts):
// 1 is each INCR applied once; 2 an INCR applied twice (a replay of one the dead server had
// applied), 0 one lost (the client saw a reply whose write the replica never got); any other
// step is a defect of its own.
export function incrSteps(values: readonly number[]): { doubled: number; lost: number; other: Array<{ reply: number; step: number }> } {
  const out = { doubled: 0, lost: 0, other: [] as Array<{ reply: number; step: number }> };
  for (let k = 1; k < values.length; k++) {
    const step = values[k]! - values[k - 1]!;
    if (step === 2) out.doubled++;
    else if (step === 0) out.lost++;
    else if (step !== 1) out.other.push({ reply: k, step });
  }
  return out;
}
