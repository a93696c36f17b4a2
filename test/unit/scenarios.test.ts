// Seed 001's scenarios produce exactly its event sets, and every event is valid for its type.
import { describe, expect, it } from 'vitest';
import { instanceFailure, nodeFailure, notRestarting, serviceDown, type Placement } from '../../src/events/scenarios.js';
import { validateEvent } from '../../src/events/service-event.js';

const p: Placement = {
  database: 'orcl',
  instances: { orcl1: 'node1', orcl2: 'node2', orcl3: 'node3' },
  services: { sales: ['orcl1', 'orcl2'], batch: ['orcl1'], hr: ['orcl3'] },
};
const s = { incarnation: 4, timestamp: '2026-11-22T10:00:00.000Z', reason: 'failure' };
const summary = (events: ReturnType<typeof nodeFailure>) => events.map((e) => `${e.type}:${e.status}:${e.service ?? ''}:${e.instance ?? e.node}`);

describe('seed 001 scenarios', () => {
  it('instance failure: instance DOWN, service_member DOWN per service, UP where a service restarts', () => {
    const events = instanceFailure(p, 'orcl1', s, { batch: 'orcl2' });
    expect(summary(events)).toEqual([
      'instance:DOWN:orcl:orcl1',
      'service_member:DOWN:sales:orcl1',
      'service_member:DOWN:batch:orcl1',
      'service_member:UP:batch:orcl2',
    ]);
    expect(events.map((e) => e.cardinality)).toEqual([2, 1, 0, 1]);
    for (const e of events) expect(validateEvent(e)).toEqual(e);
  });

  it('an instance failure that leaves a service with no member also takes the service down', () => {
    expect(summary(instanceFailure(p, 'orcl3', s))).toEqual(['instance:DOWN:orcl:orcl3', 'service_member:DOWN:hr:orcl3', 'service:DOWN:hr:undefined']);
  });

  it('whole service down: service_member DOWN per member, service DOWN, instance DOWN per member', () => {
    const events = serviceDown(p, 'sales', s);
    expect(summary(events)).toEqual([
      'service_member:DOWN:sales:orcl1',
      'service_member:DOWN:sales:orcl2',
      'service:DOWN:sales:undefined',
      'instance:DOWN:orcl:orcl1',
      'instance:DOWN:orcl:orcl2',
    ]);
    for (const e of events) expect(validateEvent(e)).toEqual(e);
  });

  it('node failure: a single node event with its incarnation; NOT_RESTARTING past the threshold', () => {
    expect(nodeFailure('node2', s)).toEqual([{ type: 'node', status: 'DOWN', node: 'node2', incarnation: 4, timestamp: s.timestamp, reason: 'failure' }]);
    expect(nodeFailure('node2', s, 'NOT_RESTARTING')[0]!.status).toBe('NOT_RESTARTING');
    const nr = notRestarting(p, 'sales', 'orcl2', s);
    expect(nr).toHaveLength(1);
    expect(validateEvent(nr[0])).toMatchObject({ type: 'service_member', status: 'NOT_RESTARTING', service: 'sales', instance: 'orcl2', cardinality: 1 });
  });

  it('unknown instances and services are refused', () => {
    expect(() => instanceFailure(p, 'orcl9', s)).toThrow(/unknown instance/);
    expect(() => instanceFailure(p, 'orcl1', s, { sales: 'orcl9' })).toThrow(/unknown instance/);
    expect(() => serviceDown(p, 'nope', s)).toThrow(/unknown service/);
  });
});
