// The one margin the lab tests give a survivor's decision that a peer died, past the detector's
// deadline (docs/AGENT.md, the paragraph on the survivor's clock). Shared so that every lab
// bounds the detection time by the same stated promise.

/**
 * Ms a survivor may decide a peer's death past its deadline (`misses` × `intervalMs` + the skew
 * after the last heartbeat it read; from the death, the timeout): half an interval. The agent's
 * own share is at most ~2 ms (its timer counts whole ms; pinned on a fake clock in
 * test/unit/heartbeat-agent.test.ts); the rest is its process waking late on a busy host, up to
 * ~30 ms measured with both cores of the 2-vCPU lab VM held by busy loops. Half an interval still
 * tells a decision at its deadline from one that waited for another heartbeat slot (a whole
 * interval late).
 */
export function survivorLatenessMs(intervalMs: number): number {
  return intervalMs / 2;
}
