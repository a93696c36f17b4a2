// Fan-out of events to 100 subscribers on loopback: one agent's NotificationServer, 100
// subscribe() consumers spread over 4 processes. Latency (publish -> a consumer has the event,
// p50/p99 over every delivery) at a steady 500 events/s, then throughput as events delivered
// per second for a burst. Bounded: 1,000 + 5,000 events, 60 s at most.
import { timestampUs } from './timestamp.js';
import { NotificationServer } from '../src/events/notification-server.js';
import type { ServiceEvent } from '../src/events/service-event.js';
import { spawn } from 'node:child_process';
import { NodeChild } from '../src/lab/node-child.js';

const PROCS = 4;
const PER_PROC = 25;
const STEADY = 1000;
const BURST = 5000;


const percentile = (v: number[], p: number) => v[Math.min(v.length - 1, Math.floor(v.length * p))]!;

export async function fanout(out: (s: string) => void): Promise<void> {
  const server = new NotificationServer({ host: '127.0.0.1', port: 0, maxBufferedBytes: 64 << 20 });
  const port = await server.listen();
  const children: NodeChild[] = [];
  const deadline = Date.now() + 60_000;
  let incarnation = 1;
  const event = (): ServiceEvent => ({ type: 'node', status: 'DOWN', reason: 'failure', node: 'bench', incarnation: incarnation++, timestamp: timestampUs() });
  try {
    const script = new URL('./fixtures/fanout-subscribers.ts', import.meta.url).pathname;
    for (let i = 0; i < PROCS; i++) {
      children.push(new NodeChild(spawn(process.execPath, ['--import', 'tsx', script, '--port', String(port), '--count', String(PER_PROC)], { stdio: ['pipe', 'pipe', 'pipe'] })));
    }
    await Promise.all(children.map((c) => c.waitFor('ready', 20_000)));
    while (server.subscriberCount < PROCS * PER_PROC) {
      if (Date.now() > deadline) throw new Error(`only ${server.subscriberCount} subscribers connected`);
      await new Promise((r) => setTimeout(r, 10));
    }
    // Each process reports (and forgets) the latencies of what its consumers received since the last report.
    const report = async () => {
      const n = children.map((c) => c.events.filter((e) => e.event === 'report').length);
      children.forEach((c) => c.send({ cmd: 'report' }));
      await Promise.all(children.map((c, i) => c.waitFor('report', 20_000, () => c.events.filter((e) => e.event === 'report').length > n[i]!)));
      const last = children.map((c) => c.events.filter((e) => e.event === 'report').at(-1)!);
      return { latencies: last.flatMap((r) => r.latencies as number[]).sort((a, b) => a - b), received: last.flatMap((r) => r.received as number[]) };
    };

    // Steady: one event every 2 ms.
    for (let i = 0; i < STEADY; i++) {
      server.publish(event());
      await new Promise((r) => setTimeout(r, 2));
    }
    await new Promise((r) => setTimeout(r, 500));
    const steady = await report();
    const deliveries = steady.latencies.length;
    out(`fan-out to ${PROCS * PER_PROC} subscribers (${PROCS} processes), ${STEADY} events at 500/s: ${deliveries}/${STEADY * PROCS * PER_PROC} delivered; latency p50 ${percentile(steady.latencies, 0.5).toFixed(2)} ms, p99 ${percentile(steady.latencies, 0.99).toFixed(2)} ms, max ${steady.latencies.at(-1)!.toFixed(2)} ms`);

    // Burst: publish as fast as the loop allows (yielding every 100), until every consumer has all.
    const started = performance.now();
    for (let i = 0; i < BURST; i++) {
      server.publish(event());
      if (i % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    let burst = await report();
    let total = burst.latencies.length;
    while (total < BURST * PROCS * PER_PROC && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      burst = await report();
      total += burst.latencies.length;
    }
    const elapsed = (performance.now() - started) / 1000;
    out(`  burst of ${BURST} events: ${total}/${BURST * PROCS * PER_PROC} delivered in ${elapsed.toFixed(2)} s = ${Math.round(total / elapsed)} deliveries/s (${Math.round(BURST / elapsed)} events/s to all ${PROCS * PER_PROC}); subscribers dropped: ${server.droppedSubscribers}`);
  } finally {
    for (const c of children) await c.kill();
    await server.close();
  }
}
