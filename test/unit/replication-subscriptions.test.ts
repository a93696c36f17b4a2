// Which connections a node asks each peer to replicate (subscriptions()): its takeovers, and the
// clustered applications it and that peer may both host, whether from the config's `apps` or
// only in the store (registered by `takeover app register`).
import { describe, expect, it } from 'vitest';
import { subscriptions } from '../../src/agent/replication/subscriptions.js';

const peer = (node: string, takeover: Array<{ address: string; port: number; method?: string }> = []) => ({ node, links: [], takeover: takeover.map((t) => ({ interface: 'eth0', prefixLength: 24, method: 'rst', ...t })) }) as never;

describe('subscriptions', () => {
  const config = { node: 'b', peers: [peer('a', [{ address: '192.0.2.10', port: 6379, method: 'goodbye:resp' }]), peer('c')] };

  it('the takeovers, then each application with an address and port that the peer and this node may both host', () => {
    const apps = [
      { primary: 'a', backups: ['b'], address: { address: '192.0.2.20', port: 5432 } }, // a or b: asked of a
      { primary: 'c', backups: ['a', 'b'], address: { address: '192.0.2.30', port: 80 } }, // asked of a and c
      { primary: 'a', backups: ['c'], address: { address: '192.0.2.40', port: 80 } }, // b does not host it
      { primary: 'a', backups: ['b'], address: { address: '192.0.2.50' } }, // no port: nothing to replicate
      { primary: 'a', backups: ['b'] },
    ];
    expect(subscriptions(config, apps)).toEqual(new Map([
      ['a', [{ address: '192.0.2.10', port: 6379, goodbye: 'resp' }, { address: '192.0.2.20', port: 5432 }, { address: '192.0.2.30', port: 80 }]],
      ['c', [{ address: '192.0.2.30', port: 80 }]],
    ]));
  });

  it('an application both in the config and in the store (or also a takeover) is asked for once, as first given', () => {
    const pg = { primary: 'a', backups: ['b'], address: { address: '2001:db8::20', port: 5432 } };
    const again = { primary: 'a', backups: ['b'], address: { address: '2001:0db8:0:0::20', port: 5432 } };
    const asTakeover = { primary: 'a', backups: ['b'], address: { address: '192.0.2.10', port: 6379 } };
    expect(subscriptions(config, [pg, again, asTakeover]).get('a')).toEqual([{ address: '192.0.2.10', port: 6379, goodbye: 'resp' }, { address: '2001:db8::20', port: 5432 }]);
  });

  it('no takeover and no application: nothing asked of anyone', () => {
    expect(subscriptions({ node: 'b', peers: [peer('a')] }, [])).toEqual(new Map());
  });
});
