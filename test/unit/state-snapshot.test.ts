// The state a subscriber gets when it connects: the picture `status` shows, numbered so that a
// subscriber's de-duplication neither takes a repeat of what it saw nor lets a guess about
// another node's instance hide that node's own events.
import { describe, expect, it } from 'vitest';
import { stateSnapshot, type SnapshotInput } from '../../src/agent/state-snapshot.js';
import { sourceKey } from '../../src/events/incarnation-filter.js';
import type { ServiceEvent } from '../../src/events/service-event.js';

const T = '2026-11-22T10:00:00.000Z';

function input(over: Partial<SnapshotInput> = {}, published: ServiceEvent[] = [], nodeChanges: ServiceEvent[] = []): SnapshotInput {
  let next = 1000;
  const last = new Map(published.map((e) => [sourceKey(e), e]));
  return {
    node: 'a',
    database: 'db',
    peers: [{ node: 'b', up: true }],
    instances: [{ name: 'i1', state: 'up' }],
    services: [{ name: 'sales', members: [{ instance: 'i1', node: 'a', up: true }, { instance: 'j1', node: 'b', up: true }] }, { name: 'hr', members: [{ instance: 'i1', node: 'a', up: true }] }],
    placement: [{ name: 'i1', node: 'a', role: 'primary' }, { name: 'j1', node: 'b' }],
    lastPublished: (k) => last.get(k),
    lastNodeChange: (n) => nodeChanges.find((e) => e.node === n),
    freshIncarnation: () => next++,
    now: T,
    ...over,
  };
}
const where = (e: ServiceEvent) => (e.type === 'service' ? e.service : e.type === 'service_member' ? `${e.service}/${e.instance}` : e.type === 'instance' ? e.instance : e.node);
const brief = (e: ServiceEvent) => `${e.type} ${where(e)} ${e.status} ${e.reason} #${e.incarnation}`;

describe('stateSnapshot', () => {
  it('one event per node, own instance, member and service, all marked, in that order', () => {
    const events = stateSnapshot(input());
    expect(events.every((e) => e.snapshot === true && e.timestamp === T)).toBe(true);
    expect(events.map(brief)).toEqual([
      'node a UP unknown #0', 'node b UP unknown #0',
      'instance i1 UP unknown #1000',
      'service_member sales/i1 UP unknown #1001', 'service_member sales/j1 UP unknown #0', 'service_member hr/i1 UP unknown #1002',
      'service sales UP unknown #0', 'service hr UP unknown #1003',
    ]);
    expect(events[2]).toMatchObject({ service: 'db', database: 'db', node: 'a', cardinality: 2, role: 'primary' });
    expect(events[3]).toMatchObject({ database: 'db', node: 'a', cardinality: 2, role: 'primary' });
  });

  it('repeats the last event published for a source while it still holds, with its number, time and reason', () => {
    const up: ServiceEvent = { type: 'instance', status: 'UP', reason: 'boot', incarnation: 77, timestamp: '2026-11-22T09:00:00.000Z', service: 'db', database: 'db', instance: 'i1', node: 'a', cardinality: 1 };
    const stopped: ServiceEvent = { type: 'service_member', status: 'DOWN', reason: 'user', incarnation: 90, timestamp: '2026-11-22T09:30:00.000Z', service: 'hr', database: 'db', instance: 'i1', node: 'a', cardinality: 0 };
    const hrDown: ServiceEvent = { type: 'service', status: 'DOWN', reason: 'user', incarnation: 91, timestamp: '2026-11-22T09:30:00.000Z', service: 'hr', database: 'db' };
    const bDown: ServiceEvent = { type: 'node', status: 'DOWN', reason: 'failure', incarnation: 5_000_001, timestamp: '2026-11-22T09:40:00.000Z', node: 'b' };
    const s = input({
      peers: [{ node: 'b', up: false }],
      services: [{ name: 'sales', members: [{ instance: 'i1', node: 'a', up: true }, { instance: 'j1', node: 'b', up: false }] }, { name: 'hr', members: [{ instance: 'i1', node: 'a', up: false }] }],
    }, [up, stopped, hrDown], [bDown]);
    const events = stateSnapshot(s);
    expect(events.map(brief)).toEqual([
      'node a UP unknown #0', 'node b DOWN failure #5000001',
      'instance i1 UP boot #77',
      'service_member sales/i1 UP unknown #1000', 'service_member sales/j1 DOWN unknown #0', 'service_member hr/i1 DOWN user #90',
      'service sales UP unknown #0', 'service hr DOWN user #91',
    ]);
    // The repeat carries today's cardinality: j1's node is down.
    expect(events[2]).toMatchObject({ cardinality: 1, timestamp: '2026-11-22T09:00:00.000Z' });
  });

  it('a last event that no longer holds is not repeated: own sources get a fresh number, others 0', () => {
    const bUp: ServiceEvent = { type: 'node', status: 'UP', reason: 'boot', incarnation: 4_000_000, timestamp: T, node: 'b' };
    const iUp: ServiceEvent = { type: 'instance', status: 'UP', reason: 'boot', incarnation: 77, timestamp: T, service: 'db', database: 'db', instance: 'i1', node: 'a', cardinality: 1 };
    const s = input({ peers: [{ node: 'b', up: false }], instances: [{ name: 'i1', state: 'not-restarting' }], services: [{ name: 'sales', members: [{ instance: 'i1', node: 'a', up: false }] }] }, [iUp], [bUp]);
    expect(stateSnapshot(s).map(brief)).toEqual([
      'node a UP unknown #0', 'node b DOWN unknown #0',
      'instance i1 NOT_RESTARTING unknown #1000',
      'service_member sales/i1 NOT_RESTARTING unknown #1001',
      'service sales DOWN unknown #1002',
    ]);
  });

  it('an instance not yet up (starting, hung, stopped) is DOWN, and counts nowhere', () => {
    for (const state of ['starting', 'down', 'hung', 'stopped']) {
      const s = input({ instances: [{ name: 'i1', state }], services: [{ name: 'sales', members: [{ instance: 'i1', node: 'a', up: false }] }] });
      const events = stateSnapshot(s);
      expect(events.filter((e) => e.type !== 'node').map((e) => `${e.type} ${e.status} ${e.cardinality ?? '-'}`)).toEqual(['instance DOWN 1', 'service_member DOWN 0', 'service DOWN -']);
    }
  });
});
