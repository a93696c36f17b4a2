// What every guest job shares: result lines for the host ("TKO {json}", bigints as hex), a
// command's outcome as 'ok' / 'conflict' / the error's message, and checks that report their
// own failure instead of ending the job.
import { ReservationConflictError } from '../../../src/scsi/transport.js';

export const report = (check: string, ok: boolean, detail: Record<string, unknown> = {}) =>
  console.log(`TKO ${JSON.stringify({ check, ok, ...detail }, (_, v) => (typeof v === 'bigint' ? `0x${v.toString(16)}` : v))}`);

export async function outcome(op: () => Promise<unknown>): Promise<'ok' | 'conflict' | string> {
  try {
    await op();
    return 'ok';
  } catch (err) {
    return err instanceof ReservationConflictError ? 'conflict' : (err as Error).message;
  }
}

export const block = (fill: number) => Buffer.alloc(512, fill);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until cond() holds or ms pass; returns whether it holds. */
export async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(20);
  return cond();
}

export async function check(name: string, fn: () => Promise<Record<string, unknown> | boolean>): Promise<void> {
  try {
    const r = await fn();
    if (typeof r === 'boolean') report(name, r);
    else report(name, r.ok !== false, r);
  } catch (err) {
    report(name, false, { error: (err as Error).stack ?? String(err) });
  }
}
