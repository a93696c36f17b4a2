// Event timestamps that carry a time to the microsecond (ISO 8601 allows the digits; the event
// model accepts up to 9), so a subscriber in another process can measure latency from them.
export function timestampUs(t = performance.timeOrigin + performance.now()): string {
  const ms = Math.floor(t);
  return `${new Date(ms).toISOString().slice(0, 23)}${String(Math.floor((t - ms) * 1000)).padStart(3, '0')}Z`;
}

/** The inverse: ms since the epoch, microseconds kept. */
export function parseTimestampUs(ts: string): number {
  const frac = /\.(\d+)Z$/.exec(ts)?.[1] ?? '0';
  return Date.parse(`${ts.slice(0, 19)}Z`) + Number(`0.${frac}`) * 1000;
}
