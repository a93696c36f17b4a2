// The agent's control socket: a Unix socket (root only: mode 0600) that the CLI uses for
// `status`, `service stop|start`, `instance cleanup`, `events`, `flows --peer` and `switchover`. One JSON request line in; JSON lines out: one
// reply, or for a follow request a stream until either side closes.
import { once } from 'node:events';
import { chmod, rm } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { removeStaleSocket } from '../unix-socket.js';

export type ControlRequest =
  | { cmd: 'status' }
  /** drainMs: overrides the instances' drain time (stop); waitMs: how long a start waits for UP. */
  | { cmd: 'service'; action: 'stop' | 'start'; name: string; drainMs?: number; waitMs?: number }
  | { cmd: 'instance'; action: 'cleanup'; name: string; waitMs?: number }
  | { cmd: 'events'; follow: boolean }
  | { cmd: 'flows'; peer: string }
  /** A planned switchover of a peer's service (address, and port when it has several) to node `to` (this one). */
  | { cmd: 'switchover'; address: string; port?: number; to: string; quietWaitMs?: number };

export type ControlHandler = (req: ControlRequest, reply: (msg: unknown) => void, onClose: (fn: () => void) => void) => Promise<'done' | 'stream'>;

export const DEFAULT_CONTROL_DIR = '/run/takeover';

export function defaultControlPath(node: string): string {
  return `${DEFAULT_CONTROL_DIR}/${node}.sock`;
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly clients = new Set<net.Socket>();
  private listening = false;

  constructor(
    readonly path: string,
    handler: ControlHandler,
  ) {
    this.server = net.createServer((sock) => {
      this.clients.add(sock);
      sock.on('close', () => this.clients.delete(sock));
      sock.on('error', () => {});
      const rl = createInterface({ input: sock });
      rl.on('error', () => {}); // the socket's own error handler has it
      const reply = (msg: unknown) => {
        if (!sock.destroyed) sock.write(`${JSON.stringify(msg)}\n`);
      };
      rl.once('line', (line) => {
        rl.close();
        let req: ControlRequest;
        try {
          req = parseRequest(line);
        } catch (err) {
          sock.end(`${JSON.stringify({ error: (err as Error).message })}\n`);
          return;
        }
        handler(req, reply, (fn) => sock.once('close', fn)).then(
          (mode) => {
            if (mode === 'done') sock.end();
          },
          (err: Error) => sock.end(`${JSON.stringify({ error: err.message })}\n`),
        );
      });
    });
  }

  /**
   * Listens at the path, replacing a socket left by an agent that died. Throws AgentRunningError
   * (code EAGENTRUNNING) if an agent answers on it: one agent per node, and taking its path would
   * cut that agent off from the CLI; and (code EEXIST) if something other than a socket is there.
   */
  async listen(): Promise<void> {
    await removeStaleSocket(this.path, 'control', () => new AgentRunningError(this.path));
    this.server.listen(this.path);
    await once(this.server, 'listening'); // rejects with the listen error
    this.listening = true;
    await chmod(this.path, 0o600);
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    // Only our own socket: after a refused listen the path is another agent's (or not a socket).
    if (this.listening) await rm(this.path, { force: true });
    this.listening = false;
  }
}

/** Another agent answers on this control socket: one agent per node (code EAGENTRUNNING). */
export class AgentRunningError extends Error {
  override readonly name = 'AgentRunningError';
  readonly code = 'EAGENTRUNNING';
  constructor(readonly path: string) {
    super(`another agent is running for this node: its control socket ${path} answers (stop it first, or give this one another node name and control path)`);
  }
}

function parseRequest(line: string): ControlRequest {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error('request is not JSON');
  }
  if (o.cmd === 'status') return { cmd: 'status' };
  if (o.cmd === 'events') return { cmd: 'events', follow: o.follow === true };
  if (o.cmd === 'service' && (o.action === 'stop' || o.action === 'start') && typeof o.name === 'string') {
    return { cmd: 'service', action: o.action, name: o.name, ...optionalMs(o, 'drainMs'), ...optionalMs(o, 'waitMs') };
  }
  if (o.cmd === 'instance' && o.action === 'cleanup' && typeof o.name === 'string') return { cmd: 'instance', action: 'cleanup', name: o.name, ...optionalMs(o, 'waitMs') };
  if (o.cmd === 'flows' && typeof o.peer === 'string') return { cmd: 'flows', peer: o.peer };
  if (o.cmd === 'switchover' && typeof o.address === 'string' && typeof o.to === 'string') {
    if (o.port !== undefined && !(Number.isInteger(o.port) && (o.port as number) >= 1 && (o.port as number) <= 65535)) throw new Error('port must be 1-65535');
    return { cmd: 'switchover', address: o.address, to: o.to, ...(o.port !== undefined ? { port: o.port as number } : {}), ...optionalMs(o, 'quietWaitMs') };
  }
  throw new Error('unknown request');
}

/** `{ [key]: ms }` when the request has it; throws naming it when it is not a count of ms. */
function optionalMs(o: Record<string, unknown>, key: string): Record<string, number> {
  const v = o[key];
  if (v === undefined) return {};
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 86_400_000) throw new Error(`${key} must be an integer number of ms, 0-86400000`);
  return { [key]: v };
}

/** Sends one request; calls onMessage for each line back; resolves when the agent closes. */
export function controlRequest(path: string, req: ControlRequest, onMessage: (msg: Record<string, unknown>) => void, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    signal?.addEventListener('abort', () => sock.destroy(), { once: true });
    sock.once('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.once('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? ` (is \`takeover agent\` running? control socket ${path})` : '';
      reject(Object.assign(new Error(`${err.message}${hint}`), { code: err.code }));
    });
    // readline re-emits the socket's errors; the socket's own handler above reports them.
    createInterface({ input: sock }).on('error', () => {}).on('line', (line) => {
      try {
        onMessage(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not ours
      }
    });
    sock.once('close', () => resolve());
  });
}
