// The baseline of `BENCH=takeover`: PostgreSQL's failover under the same kind of load, in a lab
// (bench/pg-lab.ts: a synchronous primary on host a, its streaming replica on host b, a fresh pair
// each round). The clients, the kill, the promotion and the clock are one fixture process on host
// b (bench/fixtures/pg-failover-clients.ts). Everything (lab, servers, data under tmpdir) is
// removed at the end, on failure, and on SIGINT/SIGTERM.
import { rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exited } from '../src/lab/exec.js';
import { PG_PORT, startPgPair, withPgLab } from './pg-lab.js';

const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'pg-failover-clients.ts');

/**
 * The standby's settings beyond the defaults. wal_retrieve_retry_interval (5 s by default) is how
 * long the standby's startup process waits before trying its WAL sources again after a failure;
 * PostgreSQL 15 sleeps out the rest of it when a promotion is seen while its walreceiver is being
 * restarted after the stream broke: at the default, 2 of 12 rounds measured here promoted ~5.1 s after
 * the kill instead of ~0.15 s (the standby's log: "received promote request", then "redo done"
 * 4.9 s later). 40 ms, the clients' largest backoff, is what a tuned failover would set.
 */
export const REPLICA_SETTINGS = ['wal_retrieve_retry_interval=40ms'];

/** One round, ms from the last SIGKILL (the fixture's clock). */
export interface PgFailoverTimes {
  /** Every process of the primary's cluster exited (pidfd). */
  gone: number;
  /** The standby out of recovery (accepts writes). */
  promoted: number;
  /** The first client's new session on the standby (a hot standby: read-only until promoted). */
  reconnected: number;
  /** The first resent commit acknowledged by the promoted standby. */
  firstResent: number;
  /** The first client saw its commit fail. */
  lost: number;
  /** The first client dialled the standby. */
  firstTry: number;
  killedProcesses: number;
  resends: number;
  /** Resends the standby already held (committed before the kill, the acknowledgement lost). */
  resentFound: number;
}

export interface PgFailoverRun {
  version: string;
  synchronousCommit: string;
  rounds: PgFailoverTimes[];
}

/** Runs `rounds` failovers at `synchronousCommit`; `step` reports progress. Needs root and PostgreSQL. */
export async function pgFailover(rounds: number, synchronousCommit: string, step: (what: string) => void): Promise<PgFailoverRun> {
  return withPgLab('pg-failover', async (lab, root) => {
    const out: PgFailoverRun = { version: '', synchronousCommit: '', rounds: [] };
    for (let i = 0; i < rounds; i++) {
      step(`PostgreSQL round ${i + 1}: primary and replica`);
      const pair = await startPgPair(lab, root, `r${i}`, 'CREATE TABLE msg (id bigint PRIMARY KEY, payload bytea)', REPLICA_SETTINGS);
      out.version = pair.version;
      step(`PostgreSQL round ${i + 1}: load, kill, promote`);
      const r = await lab.spawn('b', FIXTURE, [lab.host('a').ipv4, lab.host('b').ipv4, String(PG_PORT), String(pair.primary.pid), synchronousCommit]).waitFor('result', 90_000);
      await pair.primary.kill(); // dead already (the fixture killed it): reaped here
      // The promoted standby: an immediate shutdown (SIGQUIT), its backends with it, before the next pair takes the port.
      pair.replica.process.kill('SIGQUIT');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited(pair.replica.process), new Promise((res) => (timer = setTimeout(res, 10_000)))]).finally(() => clearTimeout(timer));
      await pair.replica.kill(); // SIGKILL if it did not exit within 10 s
      rmSync(path.join(root, `r${i}-a`), { recursive: true, force: true });
      rmSync(path.join(root, `r${i}-b`), { recursive: true, force: true });
      out.synchronousCommit = String(r.synchronousCommit);
      out.rounds.push({
        gone: Number(r.goneMs),
        promoted: Number(r.promotedMs),
        reconnected: Number(r.reconnectedMs),
        firstResent: Number(r.firstResentMs),
        killedProcesses: Number(r.killedProcesses),
        resends: Number(r.resends),
        resentFound: Number(r.resentFound),
        lost: Number(r.lostMs),
        firstTry: Number(r.firstTryMs),
      });
    }
    return out;
  });
}
