// `takeover switchover` against a control socket that answers as an agent would: the request it
// sends (through the control socket's own parser), its usage errors before anything is sent, and
// its exit codes (0 all moved, 1 some reset or a failure after the address moved, 2 refused).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ControlServer, controlRequest, type ControlRequest } from '../../src/agent/control.js';
import { switchoverCommand } from '../../src/cli/switchover.js';

let dir: string;
let file: string;
let server: ControlServer;
let seen: ControlRequest[];
let answer: unknown;

beforeEach(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'tko-switchover-cli-'));
  file = path.join(dir, 'b.sock');
  seen = [];
  server = new ControlServer(file, async (req, reply) => {
    seen.push(req);
    reply(answer);
    return 'done';
  });
  await server.listen();
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
});

afterEach(async () => {
  vi.restoreAllMocks();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const report = { service: '198.18.7.200:6379', connections: 3, moved: 3, goodbyes: 0, goodbyeBy: {}, reset: 0, resetBy: {}, quietMs: 1, dumpMs: 1, lockHeldMs: 9, releasedAfterMs: 4, handedOverMs: 2, statesMs: 2, plansMs: 0, catchUp: 'ok', catchUpMs: 1, promoteMs: 1, releasedMs: 3, timings: { plannedMs: 0, addressMs: 1, firstRelayingMs: 1, relayingMs: 1, doneMs: 1 }, totalMs: 5 };

describe('takeover switchover', () => {
  it('sends the service, the node and the quiet wait; exit 0 when every connection moved', async () => {
    answer = report;
    expect(await switchoverCommand('198.18.7.200:6379', { control: file, to: 'b', quietWaitMs: '500' })).toBe(0);
    expect(seen).toEqual([{ cmd: 'switchover', address: '198.18.7.200', port: 6379, to: 'b', quietWaitMs: 500 }]);
    answer = { ...report, reset: 1, moved: 2, resetBy: { 'it cannot be moved exactly: pub/sub': 1 } };
    expect(await switchoverCommand('198.18.7.200', { control: file, to: 'b' })).toBe(1);
    expect(seen[1]).toEqual({ cmd: 'switchover', address: '198.18.7.200', to: 'b' });
    // A session told the protocol's goodbye (PostgreSQL's 57P01) was not moved either: exit 1, the reason printed.
    const err = vi.mocked(process.stderr.write);
    err.mockClear();
    answer = { ...report, goodbyes: 1, moved: 2, goodbyeBy: { 'not shadowed here': 1 } };
    expect(await switchoverCommand('198.18.7.200', { control: file, to: 'b' })).toBe(1);
    expect(err.mock.calls.map((c) => String(c[0])).join('')).toMatch(/2 of 3 connections moved, 1 told goodbye, 0 reset;[^]*\n  told goodbye 1: not shadowed here\n/);
  });

  it('refused or aborted: exit 2; failed after the address moved: exit 1', async () => {
    answer = { error: 'aborted, the primary serves on: no', phase: 'aborted' };
    expect(await switchoverCommand('198.18.7.200:6379', { control: file, to: 'b' })).toBe(2);
    answer = { error: 'no answer to RELEASE', phase: 'after-release' };
    expect(await switchoverCommand('198.18.7.200:6379', { control: file, to: 'b' })).toBe(1);
  });

  it('usage errors before anything is sent', async () => {
    await expect(switchoverCommand('198.18.7.200:6379', { control: file })).rejects.toThrow(/--to NODE is required/);
    await expect(switchoverCommand('redis:6379', { control: file, to: 'b' })).rejects.toThrow(/is not ADDRESS\[:PORT\]/);
    await expect(switchoverCommand('198.18.7.200:6379', { control: file, to: 'b', quietWaitMs: '20000' })).rejects.toThrow(/--quiet-wait-ms must be an integer from 0 to 10000/);
    expect(seen).toEqual([]);
  });

  it('the control socket refuses a malformed request, naming what is wrong', async () => {
    let reply: Record<string, unknown> | undefined;
    await controlRequest(file, { cmd: 'switchover', address: '198.18.7.200', port: 0, to: 'b' }, (m) => (reply = m));
    expect(reply).toEqual({ error: 'port must be 1-65535' });
    await controlRequest(file, { cmd: 'switchover', address: '198.18.7.200', to: 'b', quietWaitMs: -1 }, (m) => (reply = m));
    expect(reply).toEqual({ error: 'quietWaitMs must be an integer number of ms, 0-86400000' });
    expect(seen).toEqual([]);
  });
});
