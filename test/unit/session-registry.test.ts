import { describe, expect, it } from 'vitest';
import { SessionRegistry } from '../../src/events/session-registry.js';
import type { ServiceEvent } from '../../src/events/service-event.js';

const env = { status: 'DOWN' as const, reason: 'failure', incarnation: 1, timestamp: '2026-11-22T10:00:00Z' };

describe('SessionRegistry (seed 001 signatures)', () => {
  const r = new SessionRegistry<string>();
  r.record('s1', { service: 'sales', database: 'orcl', instance: 'orcl1', node: 'node1' });
  r.record('s2', { service: 'sales', database: 'orcl', instance: 'orcl2', node: 'node2' });
  r.record('s3', { service: 'hr', database: 'orcl', instance: 'orcl1', node: 'node1' });
  r.record('s4', { service: 'sales', database: 'other', instance: 'x1', node: 'node3' });

  it.each<[string, ServiceEvent, string[]]>([
    ['service', { ...env, type: 'service', service: 'sales', database: 'orcl' }, ['s1', 's2']],
    ['service_member', { ...env, type: 'service_member', service: 'sales', database: 'orcl', instance: 'orcl1', node: 'node1', cardinality: 1 }, ['s1']],
    ['database', { ...env, type: 'database', service: 'sales', database: 'orcl', cardinality: 0 }, ['s1', 's2', 's3']],
    ['instance', { ...env, type: 'instance', service: 'orcl', database: 'orcl', instance: 'orcl1', node: 'node1', cardinality: 1 }, ['s1', 's3']],
    ['node', { ...env, type: 'node', node: 'node1' }, ['s1', 's3']],
    ['node elsewhere', { ...env, type: 'node', node: 'node9' }, []],
  ])('%s event: exact matching', (_n, event, expected) => {
    expect(r.affected(event)).toEqual(expected);
  });

  it('forgets sessions that ended', () => {
    const q = new SessionRegistry<object>();
    const s = {};
    q.record(s, { service: 'a', database: 'b', instance: 'c', node: 'd' });
    q.forget(s);
    expect(q.size).toBe(0);
    expect(q.affected({ ...env, type: 'node', node: 'd' })).toEqual([]);
  });
});
