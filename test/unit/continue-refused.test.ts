// continueConnections' bookkeeping of the replay check's refusals (takeRefused): a refused
// connection's relay resets its client, so it is reported as reset; a goodbye (PostgreSQL's
// 57P01, or a server that had sent its FIN) waits for no check and was said all the same.
import { describe, expect, it } from 'vitest';
import { takeRefused, type ContinuedConnection } from '../../src/net/shadow/continue-connections.js';

const server = { address: '198.18.5.10', port: 6379 };
const conn = (port: number, goodbye?: string): ContinuedConnection =>
  ({ client: { address: '198.18.5.20', port }, server, restoreUs: 1, replayBytes: 0, preambleReplies: 0, midReplyBytes: 0, ...(goodbye ? { goodbye } : {}), relay: {} as ContinuedConnection['relay'] });

describe('takeRefused', () => {
  it('moves the refused relays to the resets with the check\'s reason; goodbyes and the others stay', () => {
    const continued = [conn(1), conn(2), conn(3, 'the server had closed its side (FIN)'), conn(4)];
    const refused = new Map([['198.18.5.20|2', 'a write ran'], ['198.18.5.20|3', 'a write ran']]);
    expect(takeRefused(continued, refused)).toEqual([{ client: { address: '198.18.5.20', port: 2 }, server, reason: 'a write ran' }]);
    expect(continued.map((c) => c.client.port)).toEqual([1, 3, 4]);
    expect(takeRefused(continued, undefined)).toEqual([]);
    expect(continued).toHaveLength(3);
  });
});
