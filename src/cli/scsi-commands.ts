// The SCSI commands' definitions (`takeover scsi`, `fence`, `unfence`): their arguments and
// options only, so that registering them loads nothing of the SCSI stack; scsi.ts runs them.
import type { Command } from 'commander';

export const SCSI_ACTIONS = ['inquiry', 'keys', 'reservation', 'capabilities', 'register', 'unregister', 'reserve', 'release', 'preempt', 'clear'] as const;

export function addScsiCommands(program: Command): void {
  program
    .command('scsi')
    .description('SCSI reservations on one device (SG_IO): inquiry, keys, reservation, capabilities, register, unregister, reserve, release, preempt, clear')
    .argument('<action>', SCSI_ACTIONS.join('|'))
    .argument('<device>', 'a SCSI device: /dev/sgN or /dev/sdX')
    .option('--key <key>', 'this node\'s reservation key (0x hex or decimal)')
    .option('--victim <key>', 'preempt: the key to remove')
    .option('--type <type>', 'reservation type: wero, earo, wear, eaar, we, ea, or 1/3/5/6/7/8')
    .option('--aptpl', 'register: persist through power loss')
    .option('--abort', 'preempt: PREEMPT AND ABORT (also abort the victim\'s queued commands)')
    .option('--timeout-ms <ms>', 'per command', '10000')
    .option('--json', 'print JSON')
    .action(async (action: string, device: string, opts) => {
      process.exitCode = await (await import('./scsi.js')).scsiCommand(action, device, opts);
    });
  const fenceOptions = (c: Command) =>
    c
      .option('--devices <paths>', "the shared devices, comma-separated (default: the config's fencing.devices)")
      .option('--config <file>', 'an agent configuration: cluster, this node and its peers')
      .option('--cluster <name>', 'the cluster name (keys derive from it)')
      .option('--node <name>', 'this node')
      .option('--nodes <names>', 'every node of the cluster, comma-separated')
      .option('--no-abort', 'PREEMPT instead of PREEMPT AND ABORT (targets that cannot abort)')
      .option('--timeout-ms <ms>', 'per command', '10000')
      .option('--json', 'print JSON');
  fenceOptions(program.command('fence').description('fence NODE off the shared devices (preempt and abort its key, verified)').argument('<node>', 'the node to fence')).action(
    async (node: string, opts) => {
      process.exitCode = await (await import('./scsi.js')).fenceCommand(node, opts);
    },
  );
  fenceOptions(program.command('unfence').description('register this node on the shared devices again (after it rejoins)')).action(async (opts) => {
    process.exitCode = await (await import('./scsi.js')).unfenceCommand(opts);
  });
}
