// Real TCP connections and child processes for the sockdiag / borrowFd / socket_ops tests.
import type { NativeError } from '../../src/native.js';
import net from 'node:net';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Number of fds this process has open: equal before and after = nothing leaked. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/** The kernel fd behind a connected or listening Node socket. */
export function fdOf(handleOwner: net.Socket | net.Server): number {
  const fd = (handleOwner as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

export interface TcpPair {
  server: net.Server;
  port: number;
  client: net.Socket;
  accepted: net.Socket;
  close(): Promise<void>;
}

/** A listener on listenHost and one connection to it from connectHost, all in this process. */
export async function tcpPair(listenHost: string, connectHost = listenHost): Promise<TcpPair> {
  const server = net.createServer();
  server.listen(0, listenHost);
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const acceptedP = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(port, connectHost);
  await once(client, 'connect');
  const [accepted] = await acceptedP;
  // Tests provoke resets on purpose; an unhandled 'error' would crash the run.
  for (const s of [client, accepted]) s.on('error', () => {});
  return {
    server,
    port,
    client,
    accepted,
    async close() {
      client.destroy();
      accepted.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Reads `n` bytes from a socket (resolves with exactly what arrived up to n). */
export function readBytes(sock: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= n) {
        sock.off('data', onData);
        sock.off('error', reject);
        resolve(Buffer.concat(parts));
      }
    };
    sock.on('data', onData);
    sock.once('error', reject);
  });
}

/** A child process whose stdout is read as lines; waitLine() returns the next matching one. */
export class LineChild {
  readonly lines: string[] = [];
  private readonly waiters: Array<{ re: RegExp; resolve: (m: RegExpExecArray) => void }> = [];
  stderr = '';

  constructor(readonly process: ChildProcess) {
    createInterface({ input: process.stdout! }).on('line', (line) => {
      this.lines.push(line);
      for (const w of [...this.waiters]) {
        const m = w.re.exec(line);
        if (m) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
    process.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  static spawn(cmd: string, args: string[]): LineChild {
    return new LineChild(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  get pid(): number {
    return this.process.pid!;
  }

  /** First line (already seen or future) matching re. */
  waitLine(re: RegExp, timeoutMs = 5000): Promise<RegExpExecArray> {
    for (const line of this.lines) {
      const m = re.exec(line);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no line matching ${re} from pid ${this.pid}; lines ${JSON.stringify(this.lines)}; stderr ${this.stderr}`)),
        timeoutMs,
      );
      this.waiters.push({
        re,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
      });
    });
  }

  /** SIGKILL and wait for the exit; safe on an already dead child. */
  async kill(): Promise<void> {
    const p = this.process;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await exited;
  }
}

/** A child Node process running `source` (a CommonJS script given to node -e). */
export function spawnNodeScript(source: string, args: string[] = []): LineChild {
  return LineChild.spawn(process.execPath, ['-e', source, '--', ...args]);
}

/** The NativeError thrown by f; fails the test when f does not throw. */
export function caught(f: () => unknown): NativeError {
  try {
    f();
  } catch (e) {
    return e as NativeError;
  }
  throw new Error('did not throw');
}
