// Commands run on a Redis server pipelined on one fresh connection, each in its database (a
// SELECT sent where the database changes): how the takeover runs lost writes again and reads the
// keys it answers ran writes from (redis-replay-check.ts, redis-ran-replies.ts).
import net from 'node:net';
import { RespFramer } from '../net/resp-framer.js';
import { encodeCommand } from '../net/shadow/resp-continue.js';

/** One command and the database it runs in. */
export interface DatabaseCommand {
  db: number;
  argv: ReadonlyArray<Buffer | string>;
}

/**
 * Runs `commands` in order and resolves each one's whole reply (bytes, RESP), the SELECTs'
 * left out. Rejects, naming the server, when the connection fails or closes, a SELECT is
 * refused, a reply does not parse, or the replies do not all come within timeoutMs.
 */
export function pipelineCommands(server: { host: string; port: number }, commands: readonly DatabaseCommand[], timeoutMs: number): Promise<Buffer[]> {
  const sent: Array<{ bytes: Buffer; select: boolean }> = [];
  let db = -1;
  for (const c of commands) {
    if (c.db !== db) sent.push({ bytes: encodeCommand(['SELECT', String(c.db)]), select: true });
    db = c.db;
    sent.push({ bytes: encodeCommand(c.argv), select: false });
  }
  return new Promise((resolve, reject) => {
    const replies: Buffer[] = [];
    if (sent.length === 0) return resolve(replies);
    let settled = false;
    let index = 0;
    // Replies are kept whole until the last one (small: integers, +OK, values of counters) and
    // sliced out at each end the framer reports (its offsets are within the chunk pushed).
    let received = Buffer.alloc(0);
    let chunkBase = 0;
    let lastEnd = 0;
    const framer = new RespFramer({
      listener: {
        end: (offsetInChunk) => {
          if (settled) return;
          const reply = received.subarray(lastEnd, chunkBase + offsetInChunk);
          lastEnd = chunkBase + offsetInChunk;
          if (!sent[index++]!.select) replies.push(reply);
          else if (isErrorReply(reply)) return fail(`SELECT refused: ${JSON.stringify(reply.toString('latin1').slice(0, 80))}`);
          if (index === sent.length) done();
        },
      },
    });
    const socket = net.connect(server);
    const timer = setTimeout(() => fail(`${sent.length - index} replies missing after ${timeoutMs} ms`), timeoutMs);
    const done = () => {
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(replies);
    };
    function fail(why: string): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`${server.host}:${server.port}: ${why}`));
    }
    socket.once('connect', () => socket.write(Buffer.concat(sent.map((c) => c.bytes))));
    socket.on('data', (chunk: Buffer) => {
      chunkBase = received.length;
      received = Buffer.concat([received, chunk]);
      framer.push(chunk);
      if (framer.broken) fail(`the reply is not RESP: ${framer.broken}`);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
    socket.once('close', () => fail('the connection closed'));
  });
}

/** Whether a reply is an error (RESP2 '-', RESP3 '!'). */
export function isErrorReply(reply: Buffer): boolean {
  return reply[0] === 0x2d || reply[0] === 0x21;
}
