// Failure -> subscriber notified, end to end: a process is SIGKILLed; its death is noticed,
// an instance DOWN event is published on the agent's endpoint, and a subscribe() consumer in
// another process has it. Ours notices through a pidfd; the baseline polls /proc every 100 ms
// (what a monitor loop does), everything else equal. 15 kills each, at random phases.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { timestampUs } from './timestamp.js';
import { NotificationServer } from '../src/events/notification-server.js';
import type { ServiceEvent } from '../src/events/service-event.js';
import { NodeChild, nowMs } from '../src/lab/node-child.js';
import { ProcessExitWatch } from '../src/monitor/process-exit.js';

const KILLS = 15;


function dead(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return true;
  }
}

export async function notify(out: (s: string) => void): Promise<void> {
  const server = new NotificationServer({ host: '127.0.0.1', port: 0 });
  const port = await server.listen();
  const script = new URL('./fixtures/fanout-subscribers.ts', import.meta.url).pathname;
  const sub = new NodeChild(spawn(process.execPath, ['--import', 'tsx', script, '--port', String(port), '--count', '1'], { stdio: ['pipe', 'pipe', 'pipe'] }));
  let incarnation = 1;
  // The event's timestamp carries the kill time: the subscriber's latency is kill -> received.
  const publish = (killedAt: number) => {
    const e: ServiceEvent = { type: 'instance', status: 'DOWN', reason: 'failure', service: 'db', database: 'db', instance: 'db1', node: 'n1', cardinality: 0, incarnation: incarnation++, timestamp: timestampUs(killedAt) };
    server.publish(e);
  };
  const collect = async () => {
    const n = sub.events.filter((e) => e.event === 'report').length;
    sub.send({ cmd: 'report' });
    await sub.waitFor('report', 10_000, () => sub.events.filter((e) => e.event === 'report').length > n);
    return (sub.events.filter((e) => e.event === 'report').at(-1)!.latencies as number[]).sort((a, b) => a - b);
  };
  const median = (v: number[]) => v[Math.floor(v.length / 2)]!;
  const ours: number[] = [];
  const polled: number[] = [];
  try {
    await sub.waitFor('ready', 20_000);
    while (server.subscriberCount < 1) await new Promise((r) => setTimeout(r, 10));
    for (const how of ['pidfd', 'poll'] as const) {
      for (let i = 0; i < KILLS; i++) {
        const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
        await new Promise((r) => victim.once('spawn', r));
        let noticed: Promise<void>;
        let killedAt = 0;
        if (how === 'pidfd') {
          const watch = new ProcessExitWatch(victim.pid!);
          noticed = watch.exited.then(() => {
            publish(killedAt);
            watch.close();
          });
        } else {
          noticed = new Promise((resolve) => {
            const t = setInterval(() => {
              if (!dead(victim.pid!)) return;
              clearInterval(t);
              publish(killedAt);
              resolve();
            }, 100);
          });
        }
        await new Promise((r) => setTimeout(r, 20 + Math.random() * 100));
        killedAt = nowMs();
        victim.kill('SIGKILL');
        await noticed;
        await new Promise((r) => setTimeout(r, 30)); // delivered before the next kill
      }
      const lat = await collect();
      if (lat.length !== KILLS) throw new Error(`${how}: ${lat.length} of ${KILLS} events arrived`);
      (how === 'pidfd' ? ours : polled).push(...lat);
    }
    out(`failure -> subscriber notified (SIGKILL, instance DOWN over the endpoint to another process): pidfd ${median(ours).toFixed(2)} ms, polling every 100 ms ${median(polled).toFixed(2)} ms (medians of ${KILLS}); ratio polling / pidfd = ${(median(polled) / median(ours)).toFixed(0)}x`);
  } finally {
    await sub.kill();
    await server.close();
  }
}
