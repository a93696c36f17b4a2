// The output commit's iptables rules (pure) and HeldTraffic's argument checks (before anything is
// bound or installed). The queues against a real kernel: test/lab/held-traffic.test.ts.
import { describe, expect, it } from 'vitest';
import { HeldTraffic, holdRules } from '../../src/net/held-traffic.js';

describe('holdRules', () => {
  it('sends a service\'s ingress to the queue and its egress to the next one, per family, with the owner\'s comment and --queue-bypass', () => {
    const rules = holdRules([{ address: '198.18.0.5', port: 6379 }, { address: '2001:db8::5', port: 5432 }], 7420, 'takeover_guard_1_2_3_fe01');
    expect(rules).toEqual([
      { command: 'iptables', chain: 'PREROUTING', spec: ['-p', 'tcp', '-d', '198.18.0.5', '--dport', '6379', '-m', 'comment', '--comment', 'takeover_guard_1_2_3_fe01', '-j', 'NFQUEUE', '--queue-bypass', '--queue-num', '7420'] },
      { command: 'iptables', chain: 'OUTPUT', spec: ['-p', 'tcp', '-s', '198.18.0.5', '--sport', '6379', '-m', 'comment', '--comment', 'takeover_guard_1_2_3_fe01', '-j', 'NFQUEUE', '--queue-bypass', '--queue-num', '7421'] },
      { command: 'ip6tables', chain: 'PREROUTING', spec: ['-p', 'tcp', '-d', '2001:db8::5', '--dport', '5432', '-m', 'comment', '--comment', 'takeover_guard_1_2_3_fe01', '-j', 'NFQUEUE', '--queue-bypass', '--queue-num', '7420'] },
      { command: 'ip6tables', chain: 'OUTPUT', spec: ['-p', 'tcp', '-s', '2001:db8::5', '--sport', '5432', '-m', 'comment', '--comment', 'takeover_guard_1_2_3_fe01', '-j', 'NFQUEUE', '--queue-bypass', '--queue-num', '7421'] },
    ]);
  });
});

describe('HeldTraffic.open', () => {
  it('refuses bad options with a RangeError before binding or installing anything', async () => {
    await expect(HeldTraffic.open({ services: [], queue: 1 })).rejects.toThrow(RangeError);
    const many = Array.from({ length: 17 }, (_, i) => ({ address: '198.18.0.5', port: 1000 + i }));
    await expect(HeldTraffic.open({ services: many, queue: 1 })).rejects.toThrow('output commit holds 1 to 16 services, not 17');
    await expect(HeldTraffic.open({ services: [{ address: '198.18.0.5', port: 1 }], queue: 65535 })).rejects.toThrow('queue must be an integer in [0, 65534]: 65535');
    await expect(HeldTraffic.open({ services: [{ address: '198.18.0.5', port: 1 }], queue: 1.5 })).rejects.toThrow(RangeError);
  });
});
