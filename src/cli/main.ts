#!/usr/bin/env node
// The `takeover` command. Each subcommand's module is imported when it runs: a command loads
// what it needs, not the whole product (`takeover status` does not load the agent or the SCSI
// stack), which keeps every invocation's start short.
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { EXIT_USAGE, UsageError } from './errors.js';
import { addScsiCommands } from './scsi-commands.js';
import { METHOD_HELP } from '../net/close-method.js';

// A reader that goes away (`takeover flows | head`) is not an error of ours; stop quietly, and
// let finally blocks (lab teardown) run.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
});

// The etcd store's gRPC client sets the TLS server name to the member's address, and Node warns
// (once, on stderr) that an IP address there is deprecated, DEP0123: a trait of the client
// library that no operator can act on (the certificate is still checked against the address).
// Node's own printer stays for every other warning.
const [printWarning] = process.listeners('warning');
if (printWarning) {
  process.removeListener('warning', printWarning);
  process.on('warning', (w: Error & { code?: string }) => w.code === 'DEP0123' || printWarning(w));
}

/**
 * Commander's own errors ("error: unknown option '--x'\n(Did you mean --y?)\n") in the CLI's
 * one style: `takeover: ...` on one line, as our usage errors are.
 */
function usageLine(message: string): string {
  const text = message.trim().replace(/^error: /, '').replace(/\n\(Did you mean (.*)\)$/, ' (did you mean $1)');
  return `takeover: ${text.replace(/\s*\n\s*/g, ' ')}\n`;
}

// package.json sits two levels up from both src/cli/main.ts and dist/cli/main.js.
const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('takeover')
  .description('Ends the wait of TCP peers of a failed process or node.')
  .version(version)
  .exitOverride()
  .configureOutput({ writeErr: (s) => process.stderr.write(s), outputError: (s, write) => write(usageLine(s)) })
  .showSuggestionAfterError(true);

program
  .command('close-peers')
  .description('close the connections of a hung local process (--pid) or of a dead remote side (--address)')
  .option('--pid <pid>', 'a local process whose connections to close')
  .option('--address <ip>', 'the dead side\'s address (now ours, or taken over with --takeover-address)')
  .option('--port <port>', 'the dead side\'s port (with --address), or only this local port (with --pid)')
  .option('--peers <list>', 'connections to close, as ADDRESS:PORT,... of the peers')
  .option('--from-flows <file>', 'tracked connections: a file written by `takeover flows --json`')
  .option('--interface <if>', 'interface where the peers\' answers arrive (default: the one holding --address)')
  .option('--takeover-address', 'add --address to --interface and announce it (gratuitous ARP / unsolicited NA)')
  .option('--prefix-length <n>', 'prefix length for --takeover-address, applied as given: 1-32 for IPv4 (default 24), 64-128 for IPv6 (default 64)')
  .addOption(new Option('--method <method>', METHOD_HELP).default('rst'))
  .option('--assume-boundary', 'send a goodbye even where no tracked stream proves a message boundary')
  .option('--no-guard', 'let this host\'s kernel RSTs through while closing (see docs)')
  .option('--timeout-ms <ms>', 'upper bound for the whole operation', '5000')
  .option('--json', 'print one JSON document')
  .action(async (opts) => {
    process.exitCode = await (await import('./close-peers.js')).closePeersCommand(opts);
  });


program
  .command('demo')
  .description('a namespace lab: a client blocked in read on a server whose node dies silently, and takeover ending its wait')
  .option('--method <method>', METHOD_HELP, 'rst')
  .option('--json', 'print the timeline as JSON')
  .option('--cluster', 'the cluster manager instead: a whole failover and failback of a service on the embedded store')
  .action(async (opts) => {
    process.exitCode = opts.cluster ? await (await import('./demo-cluster.js')).clusterDemoCommand(opts) : await (await import('./demo.js')).demoCommand(opts);
  });

program
  .command('agent')
  .description('run the agent: watch this node\'s instances and the peer nodes, publish events, run the failure plans')
  .requiredOption('--config <file>', 'the agent configuration (YAML or JSON; see docs/AGENT.md)')
  .option('--check', 'validate the configuration (and read the key) and exit')
  .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent (default: the config\'s log.level, info)')
  .action(async (opts) => {
    process.exitCode = await (await import('./agent.js')).agentCommand(opts);
  });

program
  .command('relay-keeper')
  .description('hold continued connections\' relays apart from the agent, so that they outlive its restart (started by the agent with `relayKeeper`, or as its own service)')
  .requiredOption('--socket <path>', 'the Unix socket the agent hands relays over on (the agent\'s relayKeeper.socket)')
  .option('--idle-exit-ms <ms>', 'exit once no relay is held and no agent has been connected for this long (0: never, as a service of its own)', '10000')
  .option('--replace', 'take every relay over from the keeper running on --socket, which then exits (an upgrade that ends no connection)')
  .option('--log-level <level>', 'trace, debug, info, warn, error, fatal or silent', 'info')
  .action(async (opts) => {
    process.exitCode = await (await import('./relay-keeper.js')).relayKeeperCommand(opts);
  });

const controlOptions = (c: Command) =>
  c.option('--control <path>', 'the agent\'s control socket (default: from --config, or the only one under /run/takeover)').option('--config <file>', 'the agent configuration naming the control socket');

controlOptions(
  program
    .command('events')
    .description('print the local agent\'s recent events; --follow prints its current state, then new events')
    .option('--follow', 'print the current state (events marked snapshot), then events as they are published')
    .option('--filter <k=v,...>', 'only events for service=, database=, node= (events without the field pass)')
    .option('--format <format>', 'json, fan (the FAN text line, ISO 8601 times) or oracle (the FAN line as Oracle prints it)', 'json')
    .option('--agents <host:port,...>', 'follow these agents\' notification endpoints instead (de-duplicated)'),
).action(async (opts) => {
  process.exitCode = await (await import('./events.js')).eventsCommand(opts);
});

controlOptions(
  program
    .command('service')
    .description('planned change of a service on this node: stop (drain, stop the instance) or start')
    .argument('<action>', 'stop or start')
    .argument('<name>', 'the service')
    .option('--drain-ms <ms>', 'stop: how long to wait for the clients to leave (default: each instance\'s drainMs; 0: no wait)')
    .option('--wait-ms <ms>', 'start: how long to wait for the instance to be up (default 60000)')
    .option('--json', 'print the report (events published, what happened to each instance) as JSON')
    .addHelpText(
      'after',
      `
stop: for each member on this node, GOING_DOWN; then, unless the instance still offers another
service here, the agent waits until no connection is left on its ports (up to --drain-ms or its
drainMs) and stops it if it runs it (a command instance: SIGTERM to its process group, SIGKILL
after stopGraceMs), publishing instance DOWN; then the member DOWN, and service DOWN when no
member is left. An instance watched by pid or pidFile is drained but not stopped: the agent does
not kill what it does not run; stop it yourself (its exit is then published as planned).
start: COMING_UP; the instance is started again if the agent stopped it; instance UP, member UP
and service UP once it is up (its health probe passes, if it has one).
A member that is NOT_RESTARTING or hung is refused (exit 2): see \`takeover instance cleanup\`.
Events go to stdout, what happened to each instance to stderr. Exit 1 when an instance did not
come up; a stop interrupted (Ctrl-C) goes on in the agent.`,
    ),
).action(async (action: string, name: string, opts) => {
  process.exitCode = await (await import('./service.js')).serviceCommand(action, name, opts);
});

controlOptions(
  program
    .command('switchover')
    .description('planned switchover: take a peer\'s service over here, with its live connections, exactly')
    .argument('<service>', 'ADDRESS[:PORT]: the service address of a takeover here (the port when it has several)')
    .option('--to <node>', 'the node that takes the service over: this one (required)')
    .option('--quiet-wait-ms <ms>', 'how long the peer\'s server may take to go quiet once locked (default 2000, at most 10000; PostgreSQL\'s idle check gets at least 200)')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
Run on the node that takes over; its agent must follow the peer's service (a takeover with
continue.stream, protocol resp, or postgres with continue.switchover). The peer's agent locks
the service's connections (nftables drops them both ways; for PostgreSQL only what comes in),
waits for its server to go quiet (Redis: a PING answered; PostgreSQL: every backend idle),
dumps each connection frozen (TCP_REPAIR) and hands the states over. This agent waits for its
replica to catch up (Redis: the primary's replication offset; PostgreSQL: its WAL insert
position replayed), promotes it, asks the peer to give the address up, restores every
connection and relays it to the promoted replica (its session rebuilt, requests the old server
never read replayed); then the peer unlocks. Until the address moves, any failure undoes
everything on the peer (exit 2, the reason on stderr): its clients go on there (a replica
already promoted here stays promoted: the message says so).
Exit 0: every connection moved; 1: some were reset or told the protocol's goodbye (PostgreSQL's
57P01; the reasons are printed) or it failed after the address moved.`,
    ),
).action(async (service: string, opts) => {
  process.exitCode = await (await import('./switchover.js')).switchoverCommand(service, opts);
});

controlOptions(
  program
    .command('instance')
    .description('cleanup: reset an instance\'s failure count and start it again (the way out of NOT_RESTARTING)')
    .argument('<action>', 'cleanup')
    .argument('<name>', 'the instance (on this node)')
    .option('--wait-ms <ms>', 'how long to wait for the instance to be up (default 60000)')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
cleanup (Pacemaker's crm_resource --cleanup): the instance's failure count is reset and, unless it
is up, it is started again (a hung one is stopped first); once up, instance UP, member UP and
service UP are published (reason user). An instance stopped by \`service stop\` stays stopped
(\`service start\` starts it). Only instances the agent runs (command) can be started: one watched
by pid is refused (exit 2).`,
    ),
).action(async (action: string, name: string, opts) => {
  process.exitCode = await (await import('./service.js')).instanceCommand(action, name, opts);
});

controlOptions(
  program
    .command('flows')
    .description('track TCP flows on an interface and print the live table; or --peer: a peer\'s connections as the local agent holds them')
    .option('--interface <if>', 'interface to capture on')
    .option('--port <port>', 'only flows with this port on either side')
    .option('--host <ip>', 'only flows with this address on either side')
    .option('--interval-ms <ms>', 'time between snapshots', '1000')
    .option('--count <n>', 'stop after this many snapshots (default: until interrupted)')
    .option('--peer <node>', 'print the connections this peer\'s agent replicated to the local agent')
    .option('--json', 'print each snapshot as one JSON line (the format --from-flows reads)'),
).action(async (opts) => {
  process.exitCode = await (await import('./flows.js')).flowsCommand(opts);
});

controlOptions(
  program
    .command('status')
    .description('nodes, links, instances, services and the last events, as the local agent sees them; with `continue`, each shadow (SHADOW OF PEER: its source, the connections it follows, frames lost, NOT FOLLOWED: the peer\'s connections a takeover would reset), the connections continued here that this agent relays (RELAYING FOR PEER: a stop or restart resets them) and the backups following this node\'s stream (docs/AGENT.md)')
    .option('--json', 'print one JSON document'),
).action(async (opts) => {
  process.exitCode = await (await import('./status.js')).statusCommand(opts);
});

const storeOption = (c: Command) => c.requiredOption('--config <file>', 'an agent configuration naming the store (`store:`)');

storeOption(
  program
    .command('apps')
    .description('the clustered applications in the store: TAG, TYPE, HOST, PRIMARY, BACKUP, state, since')
    .option('--json', 'print one JSON document'),
).action(async (opts) => {
  process.exitCode = await (await import('./apps.js')).appsCommand(opts);
});

storeOption(
  program
    .command('app')
    .description('register, load, unload, fail back or switch over a clustered application')
    .argument('<action>', 'register, load, unload, failback or switchover')
    .argument('<app>', 'the application\'s TAG (register: a YAML/JSON file describing it)')
    .option('--to <node>', 'switchover: the server it moves to')
    .option('--on <node>', 'load: the server that hosts it (default: its PRIMARY)')
    .option('--wait-ms <ms>', 'how long to wait until the agents have done it (default 60000)')
    .addHelpText(
      'after',
      `
register FILE: creates the object (loading on its PRIMARY); the fields are those of the agent
config's \`apps\` entries (docs/CLUSTER.md). load: an application no server hosts (unloaded, or
failed everywhere) gets a HOST. unload: its HOST stops it and releases its address; nobody
starts it again until \`app load\`. failback: back to its PRIMARY (what AUTO-RECOVER does by
itself). switchover --to NODE: to another of its servers. unload, failback and switchover are
requests to the HOST's agent through the store; the command waits until the store shows them
done. Exit 0 done, 1 not within --wait-ms (the agents go on), 2 refused (nothing changed).`,
    ),
).action(async (action: string, app: string, opts) => {
  process.exitCode = await (await import('./apps.js')).appCommand(action, app, opts);
});

storeOption(
  program
    .command('history')
    .description('the changes of an application\'s HOST and state: when, from, to, by whom, why')
    .argument('<app>', 'the application\'s TAG')
    .option('--json', 'print one JSON document'),
).action(async (app: string, opts) => {
  process.exitCode = await (await import('./apps.js')).historyCommand(app, opts);
});

addScsiCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed its message; help and version are not failures.
    process.exitCode = err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : EXIT_USAGE;
  } else if (err instanceof UsageError) {
    process.stderr.write(`takeover: ${err.message}\n`);
    process.exitCode = EXIT_USAGE;
  } else {
    const e = err as NodeJS.ErrnoException;
    const priv = e.code === 'EPERM' || e.code === 'EACCES';
    process.stderr.write(`takeover: ${e.message}${priv ? ' (missing privileges: run as root)' : ''}\n`);
    process.exitCode = priv ? EXIT_USAGE : 1;
  }
}
