// Printing results: a table for people, one JSON document for programs.
import type { CloseResult } from '../net/close-result.js';
import { formatEndpoint } from '../net/endpoint.js';

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export function closeResultsTable(results: CloseResult[]): string {
  const rows = [['LOCAL', 'PEER', 'METHOD', 'ACTION', 'SEQ', 'SEQ FROM', 'RESULT', 'MS', 'NOTE']];
  for (const r of results) {
    rows.push([
      formatEndpoint(r.local),
      formatEndpoint(r.peer),
      r.method,
      r.action,
      r.seq === undefined ? '-' : String(r.seq),
      r.seqSource ?? '-',
      `${r.outcome}${r.ok && !r.verified ? ' (unverified)' : ''}`,
      r.elapsedMs.toFixed(2),
      [r.fallback ? `fallback: ${r.fallback}` : '', r.error ?? ''].filter(Boolean).join('; '),
    ]);
  }
  return table(rows);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}
