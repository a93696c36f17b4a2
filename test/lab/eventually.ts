// Polling for a condition in lab tests (kernel state that settles asynchronously).
/** Polls fn until it returns a value other than undefined, or throws after timeoutMs. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 3000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
