// Example: a backup that tracks a server's connections and, when told the server is dead
// (SIGUSR1 here; the agent's failure detector in a real deployment), takes the address over and
// closes every peer with the exact sequence numbers it saw.
// It sees the server's traffic on a port mirror (a SPAN or monitor port: the switch copies every
// frame of the server's port to an interface of this host, here the first argument), since a
// switch does not send this host another host's unicast frames. The address is taken over on
// this host's own link (the second argument), where the peers' answers then arrive: closePeers
// listens there too. On a switched network without a mirror, run the agent on both nodes instead
// (docs/AGENT.md): the server's agent replicates its connections to the backup's.
//
//   node --import tsx docs/examples/backup.ts mir0 eth0 198.18.1.2 5432 rst
//
// Run it as root in the backup's network namespace. test/lab/example.test.ts runs it.
import { closePeers, FlowTracker } from '../../src/index.js';

const [mirror = 'mir0', ifname = 'eth0', address = '198.18.1.2', port = '5432', method = 'rst'] = process.argv.slice(2);

const tracker = new FlowTracker({ interface: mirror, hosts: [address], ports: [Number(port)] });
tracker.start();
console.log(`tracking ${address}:${port} on ${mirror}; send SIGUSR1 when it is dead`);

process.once('SIGUSR1', async () => {
  const report = await closePeers(
    { address, port: Number(port), tracker, takeover: { interface: ifname, prefixLength: 24 } },
    { method },
  );
  for (const r of report.results) {
    console.log(`${r.peer.address}:${r.peer.port} ${r.action} seq=${r.seq} (${r.seqSource}) -> ${r.outcome}${r.verified ? ' (verified)' : ''}`);
  }
  tracker.close();
  process.exitCode = report.results.every((r) => r.ok) ? 0 : 1;
});
