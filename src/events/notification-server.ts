// The out-of-band notification endpoint (seed 000 FIG. 11): each agent serves subscribers on a
// port of its own, apart from the service's connections, established before any failure. Each
// event goes to every subscriber as one JSON line. A subscriber that stops reading never blocks
// the agent: past `maxBufferedBytes` queued for it, it is told why and disconnected.
// A subscriber may ask for FAN text lines instead of JSON by sending `{"format":"fan"}` (our form,
// ISO 8601 times) or `{"format":"oracle"}` (Oracle's documented line: see fan-line.ts), at any
// time; JSON is the default. Anything else it sends is ignored.
// With a `snapshot` source, a subscriber first gets the current state (events marked
// `snapshot: true`), then the live events: both are written in the same turn of the event loop,
// so none is lost or doubled between them. A format request sends the snapshot again in the new
// format, so a subscriber reading only that format still starts from the whole state.
import { EventEmitter, once } from 'node:events';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { printFan } from './fan-line.js';
import { encodeEventJson, type ServiceEvent } from './service-event.js';

export type WireFormat = 'json' | 'fan' | 'oracle';

/** How long listen() keeps trying a port in use, ms. */
export const LISTEN_BUSY_MS = 1000;
/** Between its tries, ms. */
export const LISTEN_RETRY_MS = 20;

export interface NotificationServerOptions {
  host: string;
  port: number; // 0: any free port
  maxBufferedBytes?: number; // default 1 MiB per subscriber
  /** The current state as events, sent to each subscriber when it connects (and on a format request). */
  snapshot?: () => ServiceEvent[];
}

export class NotificationServer extends EventEmitter<{ dropped: [{ remote: string; reason: string }] }> {
  private readonly server: net.Server;
  private readonly subscribers = new Map<net.Socket, WireFormat>();
  private readonly limit: number;
  published = 0;
  droppedSubscribers = 0;

  constructor(private readonly options: NotificationServerOptions) {
    super();
    this.limit = options.maxBufferedBytes ?? 1 << 20;
    this.server = net.createServer((sock) => {
      sock.setNoDelay(true);
      sock.on('error', () => this.subscribers.delete(sock));
      sock.on('close', () => this.subscribers.delete(sock));
      this.subscribers.set(sock, 'json');
      this.sendSnapshot(sock, 'json');
      // Subscribers only ever send a format request: a flood is dropped, not buffered.
      let received = 0;
      sock.on('data', (d: Buffer) => {
        received += d.length;
        if (received > 64 * 1024 && this.subscribers.has(sock)) this.drop(sock, 'subscriber sent more than 64 KiB');
      });
      createInterface({ input: sock, crlfDelay: Infinity }).on('error', () => {}).on('line', (line) => {
        const format = requestedFormat(line);
        if (format && this.subscribers.has(sock)) {
          this.subscribers.set(sock, format);
          this.sendSnapshot(sock, format);
        }
      });
    });
  }

  /**
   * Listens; resolves with the port. A port in use is tried again every LISTEN_RETRY_MS for
   * LISTEN_BUSY_MS: a local subscriber's connect attempt can hold it for a moment (one that
   * reached itself, from its connect() to its reset: src/net/self-connect.ts). Rejects with the
   * listen error (code EADDRINUSE once a holder kept it that long).
   */
  async listen(): Promise<number> {
    const started = Date.now();
    for (;;) {
      try {
        this.server.listen(this.options.port, this.options.host);
        await once(this.server, 'listening'); // rejects with the listen error
        return (this.server.address() as net.AddressInfo).port;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || Date.now() - started >= LISTEN_BUSY_MS) throw err;
        await new Promise((r) => setTimeout(r, LISTEN_RETRY_MS));
      }
    }
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  publish(event: ServiceEvent): void {
    // JSON first: it validates the event, so a bad one throws before anything is sent.
    const lines = new Map<WireFormat, string>([['json', formatLine(event, 'json')]]);
    this.published++;
    for (const [sock, format] of this.subscribers) {
      let line = lines.get(format);
      if (line === undefined) lines.set(format, (line = formatLine(event, format)));
      if (sock.writableLength + line.length > this.limit) {
        this.drop(sock, `subscriber fell more than ${this.limit} bytes behind`);
        continue;
      }
      sock.write(line);
    }
  }

  async close(): Promise<void> {
    for (const s of this.subscribers.keys()) s.destroy();
    this.subscribers.clear();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private sendSnapshot(sock: net.Socket, format: WireFormat): void {
    if (!this.options.snapshot) return;
    let text: string;
    try {
      text = this.options.snapshot().map((e) => formatLine(e, format)).join('');
    } catch (err) {
      return this.drop(sock, `the state could not be sent: ${(err as Error).message}`);
    }
    if (sock.writableLength + text.length > this.limit) return this.drop(sock, `the state is more than ${this.limit} bytes`);
    sock.write(text);
  }

  private drop(sock: net.Socket, reason: string): void {
    this.subscribers.delete(sock);
    this.droppedSubscribers++;
    this.emit('dropped', { remote: `${sock.remoteAddress}:${sock.remotePort}`, reason });
    // The reason goes out if the socket ever drains; the connection ends either way.
    sock.end(`${JSON.stringify({ disconnected: reason })}\n`);
    setTimeout(() => sock.destroy(), 1000).unref();
  }
}

/** One event as a line of the wire format, newline included. */
export function formatLine(event: ServiceEvent, format: WireFormat): string {
  if (format === 'json') return `${encodeEventJson(event)}\n`;
  return `${printFan(event, format === 'oracle' ? 'oracle' : 'iso')}\n`;
}

function requestedFormat(line: string): WireFormat | undefined {
  try {
    const f = (JSON.parse(line) as { format?: unknown }).format;
    return f === 'json' || f === 'fan' || f === 'oracle' ? f : undefined;
  } catch {
    return undefined;
  }
}
