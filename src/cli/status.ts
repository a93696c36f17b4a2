// `takeover status [--json]`: what the local agent sees: peer nodes and their links (since when
// in their state, why one was declared dead, what was taken over from it), its instances (since
// when, their last DOWN), the services and their members, and the last events.
import { controlRequest } from '../agent/control.js';
import type { AgentStatus } from '../agent/agent.js';
import { printFan } from '../events/fan-line.js';
import { controlPath } from './control-path.js';
import { formatAge, peerLines } from './status-history.js';
import { table } from './output.js';
import { describeExit } from '../agent/exit-description.js';
import type { InstanceInfo } from '../agent/instance-monitor.js';
import { fdLimitWarning } from '../agent/fd-limit.js';

export async function statusCommand(opts: { control?: string; config?: string; json?: boolean }): Promise<number> {
  let status: AgentStatus | undefined;
  let error: string | undefined;
  await controlRequest(await controlPath(opts), { cmd: 'status' }, (msg) => {
    if (typeof msg.error === 'string') error = msg.error;
    else status = msg as unknown as AgentStatus;
  });
  if (error || !status) throw new Error(error ?? 'the agent closed the control connection without an answer');
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
    return 0;
  }
  const s = status;
  const now = Date.now();
  const out: string[] = [`node ${s.node} (cluster ${s.cluster}), incarnation ${s.incarnation}, notifications on port ${s.notifyPort} to ${s.subscribers} subscriber(s)`, ''];
  if (s.metricsPort !== undefined) out.splice(1, 0, `metrics on port ${s.metricsPort} (GET /metrics)`);
  const peerState = (p: AgentStatus['peers'][number]) =>
    !p.heard ? 'never heard' : p.up ? 'up' : p.left ? `left (planned${p.left.serving ? ', still serving' : ''})` : 'DOWN';
  const rejected = (p: AgentStatus['peers'][number]) => Object.entries(p.rejected ?? {}).map(([k, n]) => `${k} ${n}`).join(', ');
  out.push(table([['PEER', 'STATE', 'INCARNATION', 'LINKS', 'REJECTED FROM IT'], ...s.peers.map((p) => [p.node, peerState(p), p.heard ? p.incarnation : '-', p.links.map((l) => `${l.link}:${l.up ? 'up' : 'down'}`).join(' '), rejected(p) || '-'])]), '');
  out.push(`quorum: ${s.quorum.ok ? 'yes' : 'NO'}: ${s.quorum.why}`, '');
  if (s.peers.length > 0) out.push(...peerLines(s.peers, now), '');
  if (s.leases) {
    const runsOut = (a: NonNullable<AgentStatus['leases']>['addresses'][number]) => (a.expiresAt === undefined ? '-' : `in ${formatAge(a.expiresAt - now)} unless renewed`);
    out.push(table([[`LEASED ADDRESS (${s.leases.seconds} s)`, 'INTERFACE', 'HELD', 'RUNS OUT'], ...s.leases.addresses.map((a) => [`${a.address}/${a.prefixLength}`, a.interface, a.held ? 'yes' : 'NO', runsOut(a)])]), '');
  }
  const r = s.replication;
  if (r.peers.length > 0) {
    out.push(
      table([
        ['COPY OF PEER', 'CONNECTIONS', 'SYNCED', 'LAST UPDATE', 'PEER SAYS'],
        ...r.peers.map((p) => [
          p.node,
          String(p.connections),
          p.synced ? `yes (epoch ${p.epoch})` : 'no',
          p.lastUpdateAgeMs === undefined ? 'never' : `${Math.round(p.lastUpdateAgeMs)} ms ago${p.up ? '' : ' (peer down: frozen)'}`,
          p.peerCount === undefined ? '-' : `${p.peerCount} (${p.peerPending} pending)`,
        ]),
      ]),
      '',
    );
  }
  if (r.subscribers.length > 0) {
    out.push(table([['COPY HELD BY', 'CONNECTIONS SENT', 'PENDING', 'BYTES'], ...r.subscribers.map((x) => [x.node, String(x.known), x.syncing ? `${x.pending} (syncing)` : String(x.pending), String(x.bytes)])]), '');
  }
  // Continue: each takeover's shadow (a mirror's capture or the peer's stream) and, on a primary,
  // the backups following this node's own stream: their health before a failure needs it.
  if (s.shadows.length > 0) {
    // With matchWrites, whether the probe of the peer's replication stream runs (without it, unanswered writes are reset).
    const probe = (x: AgentStatus['shadows'][number]) =>
      !x.streamProbe ? '' : x.streamProbe.connected ? `, stream probe up (${x.streamProbe.probes} probes)` : `, stream probe DOWN${x.streamProbe.lastError ? ` (${x.streamProbe.lastError})` : ''}`;
    // With walCheck, whether the standby's replication connection is seen (unseen: every unanswered PostgreSQL request is unproven).
    const walWatch = (x: AgentStatus['shadows'][number]) => {
      const w = x.walWatch;
      if (!w) return '';
      if (w.startedMs === null) return ', WAL watch STARTING';
      if (w.unseen) return `, WAL watch: replication connection NOT SEEN for ${Math.round((now - (w.lastSeenMs ?? w.startedMs)) / 1000)} s (check walCheck.primary; a takeover replays no unanswered request as it was)`;
      if (w.lastSeenMs === null) return ', WAL watch: waiting to see the replication connection';
      return `, WAL watch: replication connection seen ${Math.max(0, Math.round(now - w.lastSeenMs))} ms ago`;
    };
    const source = (x: AgentStatus['shadows'][number]) =>
      x.connected === undefined
        ? `mirror${x.capturing === false ? ' STARTING (its capture is being set up: connections opened now are not followed)' : ''}${probe(x)}${walWatch(x)}`
        : x.connected
          ? `stream up, last mark ${x.lastMarkMs ? `${Math.max(0, Math.round(now - x.lastMarkMs))} ms ago` : 'not yet'}${probe(x)}`
          : `stream DOWN${x.lastError ? ` (${x.lastError})` : ''}${probe(x)}`;
    // NOT FOLLOWED: the peer's connections (its replicated table) a takeover now would reset.
    out.push(table([['SHADOW OF PEER', 'SERVICE', 'SOURCE', 'CONNECTIONS', 'LOST FRAMES', 'NOT FOLLOWED'], ...s.shadows.map((x) => [x.peer, `${x.address}:${x.port}`, source(x), String(x.connections), String(x.captureLosses), x.unfollowed === undefined ? '-' : String(x.unfollowed)])]), '');
    const unfollowed = s.shadows.reduce((n, x) => n + (x.unfollowed ?? 0), 0);
    if (unfollowed > 0) out.push(`${unfollowed} of the peers' connection(s) are not followed (opened before the shadow started, e.g. before this agent's last start): a takeover resets them; they are followed once their clients reconnect`, '');
    const fds = fdLimitWarning(s.shadows.reduce((n, x) => n + x.connections, 0), s.openFilesLimit);
    if (fds) out.push(`WARNING: ${fds}`, '');
  }
  if (s.relaying) {
    const n = s.relaying.reduce((sum, x) => sum + x.connections, 0);
    out.push(table([['RELAYING FOR PEER', 'SERVICE', 'CONNECTIONS'], ...s.relaying.map((x) => [x.peer, `${x.address}:${x.port}`, String(x.connections)])]));
    out.push(`${n} continued connection(s) are relayed by this agent's process: stopping or restarting it resets them`, '');
  }
  const k = s.keeper;
  if (k && k.connections > 0) {
    out.push(table([['KEPT FOR PEER', 'SERVICE', 'CONNECTIONS'], ...k.services.map((x) => [x.peer, x.service, String(x.connections)])]));
    out.push(`${k.connections} continued connection(s) are relayed by the relay keeper (pid ${k.pid}, ${k.socket}): they outlive this agent's restart`, '');
  } else if (k) {
    const none = k.start ? 'none connected (looked for every 5 s, started at the next continued connection)' : 'none connected (looked for every 5 s; relayKeeper.start is false: the agent starts none, and relays what no keeper takes itself)';
    out.push(`relay keeper: ${k.pid !== undefined ? `pid ${k.pid}, no continued connection held` : none} (${k.socket})`, '');
  }
  const cs = s.connectionStream;
  if (cs) {
    const rows = cs.subscriptions.map((x) => [x.backup, x.remote, x.live ? 'yes' : 'not yet', `${Math.round(x.lagMs)} ms`, String(x.unackedBytes)]);
    out.push(cs.subscriptions.length > 0 ? table([['STREAM FOLLOWED BY', 'FROM', 'LIVE', 'LAG', 'UNACKED BYTES'], ...rows]) : 'connection stream: no backup follows it', '');
  }
  const sw = s.switchovers;
  if (sw?.took) {
    const t = sw.took;
    out.push(`switchover: took ${t.peer}'s ${t.service} at ${t.at}: ${t.moved} of ${t.connections} connection(s) moved, ${t.goodbyes ? `${t.goodbyes} told goodbye, ` : ''}${t.reset} reset; address moved ${t.releasedAfterMs ?? '?'} ms after ${t.peer}'s lock, which held ${t.lockHeldMs ?? '?'} ms (quiet ${t.quietMs} ms, dump ${t.dumpMs} ms), catch-up ${t.catchUpMs} ms, promote ${t.promoteMs} ms, all relaying ${t.totalMs} ms after the request`, '');
  }
  if (sw?.gave) {
    const g = sw.gave;
    out.push(
      g.type === 'switchover-given'
        ? `switchover: gave ${g.address}:${g.port} to ${g.backup} at ${g.at}: ${g.connections} connection(s) handed over (${g.moved} moved there, ${g.reset} reset or told goodbye), address removed ${g.releasedAfterMs} ms after the lock, lock held ${g.lockHeldMs} ms`
        : `switchover: ${g.type === 'switchover-refused' ? 'refused' : 'aborted'} ${g.backup}'s switchover of ${g.address}:${g.port} at ${g.at}: ${g.reason}${g.type === 'switchover-aborted' ? ` (${g.connections} connection(s) thawed, ${g.thawFailures} failed; lock held ${g.lockHeldMs} ms)` : ''}`,
      '',
    );
  }
  const refused = Object.entries(r.rejected).filter(([, n]) => n > 0);
  if (refused.length > 0) out.push(`replication datagrams refused: ${refused.map(([k, n]) => `${k} ${n}`).join(', ')}`, '');
  out.push(table([['INSTANCE', 'STATE', 'PID', 'SINCE', 'FAILURES', 'LAST EXIT'], ...s.instances.map(instanceRow)]), '');
  out.push(table([['SERVICE', 'MEMBERS'], ...s.services.map((v) => [v.name, v.members.map((m) => `${m.instance}@${m.node}:${m.up ? 'up' : 'down'}`).join(' ')])]), '');
  out.push('last events:', ...(s.recentEvents.length ? s.recentEvents.map((e) => `  ${printFan(e)}`) : ['  (none)']));
  process.stdout.write(`${out.join('\n')}\n`);
  return 0;
}

/** One instance: no pid unless a process runs; the last exit with the last line of its stderr. */
function instanceRow(i: InstanceInfo): string[] {
  const e = i.lastExit;
  const last = e ? `${describeExit(e)}${e.planned ? ' (stopped by the agent)' : ''} at ${new Date(e.at).toISOString()}${e.stderr.length ? `: ${e.stderr.at(-1)!.slice(0, 80)}` : ''}` : '-';
  return [i.name, `${i.state}${i.adopted ? ' (adopted)' : ''}`, i.pid === undefined ? '-' : String(i.pid), new Date(i.since).toISOString(), i.failures === undefined ? '-' : String(i.failures), last];
}
