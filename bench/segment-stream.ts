// The segment stream's throughput on loopback (issue 12's second source): a primary process
// (SegmentStreamSource, its capture synthesized: one RESP connection reading 1 MiB values, the
// replies in 64 KiB GSO-sized segments, the client's ACKs) and a backup process (PeerShadow with
// the RESP plugin, its shadows kept as in a takeover) each measure their CPU time; payload MB/s
// is what the backup took. The capture is kept just ahead of the stream (at most 16 MiB
// unacknowledged), so this is the stream's own limit, HMAC and the backup's shadow included.
// Also, in one process: encode + decode of 1 MiB SEGMENTS frames alone.
//   npx tsx bench/segment-stream.ts            (5 s; SEGSTREAM_SECONDS=n for another duration)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { TCP_ACK, TCP_PSH, TCP_SYN, type ParsedSegment } from '../src/native.js';
import { seqAdd } from '../src/net/seq.js';
import { PeerShadow } from '../src/net/shadow/peer-shadow.js';
import { encodeCommand, respContinue } from '../src/net/shadow/resp-continue.js';
import type { SegmentCapture } from '../src/net/shadow/segment-capture.js';
import { SegmentStreamSource } from '../src/net/shadow/segment-stream-source.js';
import { decodeSegmentFrame, encodeSegmentFrame, splitSegments } from '../src/net/shadow/segment-wire.js';

const KEY = Buffer.from('segment-stream-bench-key-0123456');
const SERVER = { address: '198.18.5.10', port: 6379 };
const CLIENT = { address: '198.18.5.20', port: 40000 };
const SECONDS = Number(process.env.SEGSTREAM_SECONDS ?? 5);
const VALUE = 1024 * 1024;
const GSO = 65_483;

/** One connection's segments: the handshake, then for each GET a 1 MiB reply and the client's ACK. */
function synthesizer() {
  let c = 0x10000;
  let s = 0x20000;
  let ts = 1;
  const value = Buffer.alloc(VALUE, 0x61);
  const reply = Buffer.concat([Buffer.from(`$${VALUE}\r\n`), value, Buffer.from('\r\n')]);
  const get = encodeCommand(['GET', 'big']);
  const seg = (fromServer: boolean, flags: number, payload: Buffer): ParsedSegment => {
    const out: ParsedSegment = {
      family: 4,
      src: fromServer ? SERVER.address : CLIENT.address,
      dst: fromServer ? CLIENT.address : SERVER.address,
      sport: fromServer ? SERVER.port : CLIENT.port,
      dport: fromServer ? CLIENT.port : SERVER.port,
      seq: fromServer ? s : c,
      ack: fromServer ? c : s,
      flags,
      window: 1000,
      urgentPointer: 0,
      payloadLength: payload.length,
      payload,
      tsval: ts++,
      tsecr: 1,
      timeMs: performance.timeOrigin + performance.now(),
    };
    if (fromServer) s = seqAdd(s, payload.length);
    else c = seqAdd(c, payload.length);
    return out;
  };
  const handshake = (): ParsedSegment[] => {
    const syn = { ...seg(false, TCP_SYN, Buffer.alloc(0)), ack: 0, mss: 65495, wscale: 7, sackPermitted: true };
    c = seqAdd(c, 1);
    const synAck = { ...seg(true, TCP_SYN | TCP_ACK, Buffer.alloc(0)), mss: 65495, wscale: 7, sackPermitted: true };
    s = seqAdd(s, 1);
    return [syn, synAck, seg(false, TCP_ACK, Buffer.alloc(0))];
  };
  const round = (): ParsedSegment[] => {
    const out = [seg(false, TCP_ACK | TCP_PSH, get)];
    for (let o = 0; o < reply.length; o += GSO) out.push(seg(true, TCP_ACK, reply.subarray(o, o + GSO)));
    out.push(seg(false, TCP_ACK, Buffer.alloc(0)));
    return out;
  };
  return { handshake, round, roundPayload: get.length + reply.length };
}

async function primary(): Promise<void> {
  let capture: (SegmentCapture & { push(s: ParsedSegment[]): void }) | null = null;
  const src = new SegmentStreamSource({
    node: 'node-a',
    key: KEY,
    listen: { host: '127.0.0.1', port: 0 },
    capture: () => {
      const listeners = new Set<(s: ParsedSegment[]) => void>();
      capture = {
        ready: Promise.resolve(),
        onSegments: (l) => (listeners.add(l), () => void listeners.delete(l)),
        stats: () => ({ drops: 0 }),
        completeToMs: (t) => t - 1,
        close: () => listeners.clear(),
        push: (segs) => listeners.forEach((l) => l(segs)),
      };
      return capture;
    },
  });
  const { port } = await src.ready();
  process.stdout.write(`${JSON.stringify({ port })}\n`);
  while (src.stats().subscribers === 0) await new Promise((r) => setTimeout(r, 5));
  const syn = synthesizer();
  capture!.push(syn.handshake());
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let rounds = 0;
  // The synthesized capture keeps just ahead of the stream: a round whenever less than 16 MiB
  // is unacknowledged, checked every turn of the loop.
  while (performance.now() - t0 < SECONDS * 1000) {
    const sub = src.stats().subscriptions[0];
    if (!sub) throw new Error('the subscription ended (cut?)');
    if (sub.unackedBytes < 16 * 1024 * 1024) {
      capture!.push(syn.round());
      rounds++;
    }
    await new Promise((r) => setImmediate(r));
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  const st = src.stats();
  process.stdout.write(`${JSON.stringify({ side: 'primary', rounds, payloadMB: (rounds * syn.roundPayload) / 1e6, wallMs: wall, cpuMs: (cpu.user + cpu.system) / 1000, bytesSent: st.bytesSent, maxLagMs: st.maxLagMs, cuts: st.cuts })}\n`);
  await src.close();
}

async function backup(port: number): Promise<void> {
  const b = new PeerShadow({ node: 'node-b', key: KEY, primary: { host: '127.0.0.1', port }, services: [SERVER], plugin: respContinue });
  while (!b.connected) await new Promise((r) => setTimeout(r, 5));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let maxLag = 0;
  while (performance.now() - t0 < SECONDS * 1000) {
    await new Promise((r) => setTimeout(r, 50));
    maxLag = Math.max(maxLag, b.stats().lagMs);
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  const st = b.stats();
  const [plan] = await b.plans();
  process.stdout.write(`${JSON.stringify({ side: 'backup', wallMs: wall, cpuMs: (cpu.user + cpu.system) / 1000, bytesReceived: st.bytesReceived, segments: st.segmentsReceived, maxLagMs: maxLag, breaks: st.breaks, plan: plan?.kind === 'reset' ? plan.reason : plan?.kind })}\n`);
  b.close();
}

function local(): void {
  const syn = synthesizer();
  syn.handshake();
  const segs = syn.round();
  const [group] = splitSegments(segs, 4 * 1024 * 1024);
  const t0 = performance.now();
  let n = 0;
  let bytes = 0;
  while (performance.now() - t0 < 1000) {
    const f = encodeSegmentFrame({ backupNonce: 1n, primaryNonce: 2n, seq: BigInt(n), message: { type: 'segments', segments: group! } }, KEY);
    const r = decodeSegmentFrame(f, KEY);
    if (!r.ok) throw new Error(r.detail);
    bytes += syn.roundPayload;
    n++;
  }
  const encT0 = performance.now();
  let m = 0;
  while (performance.now() - encT0 < 1000) {
    encodeSegmentFrame({ backupNonce: 1n, primaryNonce: 2n, seq: BigInt(m), message: { type: 'segments', segments: group! } }, KEY);
    m++;
  }
  console.log(`in process, 1 MiB replies: encode+decode ${(bytes / 1e6 / ((performance.now() - t0 - (performance.now() - encT0)) / 1000)).toFixed(0)} MB/s of payload; encode alone ${((m * syn.roundPayload) / 1e6).toFixed(0)} MB/s`);
}

async function main(): Promise<void> {
  const role = process.argv[2];
  if (role === 'primary') return primary();
  if (role === 'backup') return backup(Number(process.argv[3]));
  local();
  const self = fileURLToPath(import.meta.url);
  const tsx = ['--import', 'tsx', self];
  const p = spawn(process.execPath, [...tsx, 'primary'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d;
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) lines.push(buf.slice(0, i));
  });
  while (lines.length === 0) await new Promise((r) => setTimeout(r, 10));
  const { port } = JSON.parse(lines[0]!) as { port: number };
  const b = spawn(process.execPath, [...tsx, 'backup', String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let bOut = '';
  b.stdout.on('data', (d) => (bOut += d));
  await Promise.all([once(p, 'exit'), once(b, 'exit')]);
  const P = JSON.parse(lines[1]!);
  const B = JSON.parse(bOut.trim());
  console.log(`loopback, ${SECONDS} s, 1 MiB replies in 64 KiB segments: ${(P.payloadMB / (P.wallMs / 1000)).toFixed(0)} MB/s of payload (${(P.bytesSent / 1e6 / (P.wallMs / 1000)).toFixed(0)} MB/s on the wire)`);
  console.log(`  primary CPU ${((100 * P.cpuMs) / P.wallMs).toFixed(0)}% of a core (${((P.cpuMs / P.payloadMB) * 1000 / 1000).toFixed(2)} ms per MB), max capture-to-write ${P.maxLagMs.toFixed(1)} ms, cuts ${P.cuts}`);
  console.log(`  backup CPU ${((100 * B.cpuMs) / B.wallMs).toFixed(0)}% of a core (${(B.cpuMs / P.payloadMB).toFixed(2)} ms per MB), max lag ${B.maxLagMs.toFixed(0)} ms, breaks ${B.breaks}, plan at the end: ${B.plan}`);
}

await main();
