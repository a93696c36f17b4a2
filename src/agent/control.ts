// The agent's control socket: a Unix socket (root only: mode 0600) that the CLI uses for
// `status`, `service stop|start`, `instance cleanup`, `events` and `flows --peer`. One JSON request line in; JSON lines out: one
// reply, or for a follow request a stream until either side closes.
import { chmod, rm } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';

export type ControlRequest =
  | { cmd: 'status' }
  /** drainMs: overrides the instances' drain time (stop); waitMs: how long a start waits for UP. */
  | { cmd: 'service'; action: 'stop' | 'start'; name: string; drainMs?: number; waitMs?: number }
  | { cmd: 'instance'; action: 'cleanup'; name: string; waitMs?: number }
  | { cmd: 'events'; follow: boolean }
  | { cmd: 'flows'; peer: string };

export type ControlHandler = (req: ControlRequest, reply: (msg: unknown) => void, onClose: (fn: () => void) => void) => Promise<'done' | 'stream'>;

export const DEFAULT_CONTROL_DIR = '/run/takeover';

export function defaultControlPath(node: string): string {
  return `${DEFAULT_CONTROL_DIR}/${node}.sock`;
}

export class ControlServer {
  private readonly server: net.Server;
  private readonly clients = new Set<net.Socket>();

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
   * Listens on the path. A socket file that still answers belongs to a running agent: this throws
   * AgentRunningError and leaves it alone (one agent per node; deleting it would cut the running
   * agent off from the CLI). A file nobody answers on was left by an agent that died: replaced.
   */
  async listen(): Promise<void> {
    if (await answers(this.path)) throw new AgentRunningError(this.path);
    await rm(this.path, { force: true }); // a socket file left by an agent that died
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.path, () => resolve());
    });
    await chmod(this.path, 0o600);
  }

  /** Stops listening; removes the socket file only when it is this server's (not another agent's). */
  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    const mine = this.server.listening;
    await new Promise<void>((r) => this.server.close(() => r()));
    if (mine) await rm(this.path, { force: true });
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

/** Whether something accepts connections on the Unix socket at `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(path);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
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
