// A third path to a primary for MirrorWatch (seed 004 step 420, "Network 58"): a connection to
// its ReliableServer on the clients' network, a HELLO, and its greeting (READY or RECOVERED).
// Only the server's process answers that: a TCP handshake alone would not do (a stopped
// process's listen backlog completes it). The probe sends no request, so nothing is applied or
// logged; the server counts one client ID more (`clientId`, fixed per probe).
import net from 'node:net';
import { CLIENT_ACCEPTS, ReliableFrameReader, encodeReliable } from './reliable-wire.js';
import { resetIfSelfConnected } from '../net/self-connect.js';

export interface GreetingProbeOptions {
  host: string;
  port: number;
  /** The greeting must name this node (the primary), else the answer is "silent". */
  node?: string;
  /** Default 'mirror-watch-probe' (1..64 bytes). */
  clientId?: string;
  /** Default 200 ms. */
  timeoutMs?: number;
}

/**
 * A `thirdPath` for MirrorWatch: resolves true when the server greeted (READY or RECOVERED,
 * from `node` when given) within `timeoutMs`, false otherwise (refused, closed, an ERROR, a bad
 * frame, silence, another node). Never rejects.
 */
export function greetingProbe(options: GreetingProbeOptions): () => Promise<boolean> {
  const hello = encodeReliable({ type: 'hello', clientId: options.clientId ?? 'mirror-watch-probe' });
  return () =>
    new Promise<boolean>((resolve) => {
      const socket = net.connect(options.port, options.host);
      const reader = new ReliableFrameReader(CLIENT_ACCEPTS);
      let done = false;
      const end = (answer: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.destroy();
        resolve(answer);
      };
      const timer = setTimeout(() => end(false), options.timeoutMs ?? 200);
      socket.on('connect', () => (resetIfSelfConnected(socket) ? end(false) : socket.write(hello)));
      socket.on('error', () => end(false));
      socket.on('close', () => end(false));
      socket.on('data', (chunk: Buffer) => {
        for (const r of reader.push(chunk)) {
          if (!r.ok) return end(false);
          const m = r.message;
          if (m.type === 'ready' || m.type === 'recovered') return end(options.node === undefined || m.node === options.node);
          return end(false);
        }
      });
    });
}
