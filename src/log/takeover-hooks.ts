// Real `beforeTakeover` hooks for takeOverFenced() and MirrorWatch (mirror-failure.ts: never two
// primaries, seed 004 steps 420-425). A backup's silence-based verdict cannot tell a dead primary
// from one cut off; before it serves, the old primary must be made unable to go on:
//   fenceHook      the old primary's node fenced off the shared devices (SCSI-3 persistent
//                  reservations, src/fence): resolves only when every device was fenced.
//   roleClaimHook  the log's primary role taken in the cluster store (primary-role.ts): resolves
//                  only once the compare-and-swap succeeded, which needs the old holder's lease
//                  to have run out (an old primary that is only cut off loses its lease first,
//                  and stops acknowledging when it does: PrimaryHold.lost).
//   chainHooks     several in order, e.g. fence, then claim.
import { FenceFailedError } from '../agent/node-fencing.js';
import type { FenceReport } from '../fence/fencer.js';
import type { ClaimWhenFreeOptions, LogPrimaryRole } from './primary-role.js';

/** A `beforeTakeover` hook: resolves once the old primary cannot go on; a rejection stops the takeover. */
export type BeforeTakeover = () => Promise<void>;

/** What fenceHook needs: Fencer's fence() (src/fence/fencer.ts), or anything that reports the same way. */
export interface FencesNodes {
  fence(victim: string): Promise<FenceReport>;
}

/**
 * A hook that fences `victim` (the old primary's node, or a function giving it when the hook
 * runs) off every shared device with `fencer.fence()`. Resolves only when the FenceReport is ok
 * (every device fenced or already fenced); rejects with FenceFailedError (code ERR_FENCE_FAILED,
 * `report`: each device's outcome) otherwise, or with what fence() throws (FenceError
 * ERR_FENCE_SELF, ERR_FENCE_UNKNOWN_NODE). `onReport` sees every report, ok or not.
 */
export function fenceHook(fencer: FencesNodes, victim: string | (() => string | Promise<string>), onReport?: (report: FenceReport) => void): BeforeTakeover {
  return async () => {
    const node = typeof victim === 'function' ? await victim() : victim;
    const report = await fencer.fence(node);
    onReport?.(report);
    if (!report.ok) throw new FenceFailedError(report);
  };
}

/**
 * A hook that takes the log's primary role for this node (`role.claimWhenFree(options)`): it
 * resolves once the compare-and-swap succeeded, after the old holder's lease ran out; then
 * `role.hold` is the new primary's hold, whose `lost` the application must watch while it
 * serves. Rejects as claimWhenFree(): PrimaryRoleError EMIRRORROLEHELD (the holder's lease stayed
 * live for `timeoutMs`: it is not dead, or still reaches the store), StoreUnavailableError,
 * PrimaryRoleError EMIRRORROLEBAD.
 */
export function roleClaimHook(role: LogPrimaryRole, options?: ClaimWhenFreeOptions): BeforeTakeover {
  return async () => {
    await role.claimWhenFree(options);
  };
}

/** Runs `hooks` one after another; the first rejection stops the chain (and the takeover) with its error. */
export function chainHooks(...hooks: BeforeTakeover[]): BeforeTakeover {
  if (hooks.length === 0) throw new RangeError('chainHooks needs at least one hook: an empty chain would fence nothing');
  return async () => {
    for (const h of hooks) await h();
  };
}
