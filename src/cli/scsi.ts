// `takeover scsi ...`, `takeover fence`, `takeover unfence`: SCSI reservations and fencing from
// the shell, one process for the whole job (fence_scsi runs one sg_persist per command). Exit
// codes: 0 done, 3 RESERVATION CONFLICT, 1 any other device or fencing failure (a partial
// fence included), 2 bad arguments.
import { formatKey, parseKey } from '../fence/fence-keys.js';
import { Fencer, type DeviceReport } from '../fence/fencer.js';
import { parsePrType, prTypeName } from '../scsi/cdb.js';
import { capacity, identify } from '../scsi/inquiry.js';
import { PersistentReservations } from '../scsi/reservations.js';
import { DeviceTransport, ReservationConflictError, ScsiDevice } from '../scsi/transport.js';
import { EXIT_INCOMPLETE, EXIT_OK, UsageError } from './errors.js';
import { table } from './output.js';
import { intOption } from './parse-args.js';
import { SCSI_ACTIONS as ACTIONS } from './scsi-commands.js';

export const EXIT_CONFLICT = 3;

type Action = (typeof ACTIONS)[number];

interface ScsiOptions {
  key?: string;
  victim?: string;
  type?: string;
  aptpl?: boolean;
  abort?: boolean;
  json?: boolean;
  timeoutMs: string;
}

function keyOption(name: string, value: string | undefined): bigint {
  if (value === undefined) throw new UsageError(`--${name} is required for this action`);
  try {
    return parseKey(value);
  } catch (err) {
    throw new UsageError(`--${name}: ${(err as Error).message}`);
  }
}

function typeOption(value: string | undefined): number {
  if (value === undefined) throw new UsageError('--type is required for this action (e.g. wero)');
  try {
    return parsePrType(value);
  } catch (err) {
    throw new UsageError(`--type: ${(err as Error).message}`);
  }
}

function timeoutOption(value: string): number {
  return intOption('--timeout-ms', value, 1, 3_600_000);
}

const json = (v: unknown) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? formatKey(x) : x));

/** Runs fn with the device open; a conflict becomes exit code 3 with one line on stderr. */
async function withDevice(path: string, timeoutMs: number, fn: (pr: PersistentReservations, dev: ScsiDevice) => Promise<unknown>): Promise<number> {
  let transport: DeviceTransport;
  try {
    transport = new DeviceTransport(path);
  } catch (err) {
    throw Object.assign(new Error(`cannot open ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`), { code: (err as NodeJS.ErrnoException).code });
  }
  const dev = new ScsiDevice(transport, timeoutMs);
  try {
    await fn(new PersistentReservations(dev), dev);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof ReservationConflictError) {
      process.stderr.write(`takeover: ${err.message}\n`);
      return EXIT_CONFLICT;
    }
    throw err;
  } finally {
    transport.close();
  }
}

export async function scsiCommand(action: string, device: string, o: ScsiOptions): Promise<number> {
  if (!(ACTIONS as readonly string[]).includes(action)) throw new UsageError(`scsi: the action must be one of ${ACTIONS.join(', ')}, got "${action}"`);
  const a = action as Action;
  const timeoutMs = timeoutOption(o.timeoutMs);
  // Every argument is checked before the device is touched.
  const key = ['register', 'reserve', 'release', 'preempt', 'clear'].includes(a) ? keyOption('key', o.key) : undefined;
  const type = ['reserve', 'release', 'preempt'].includes(a) ? typeOption(o.type) : undefined;
  const victim = a === 'preempt' ? keyOption('victim', o.victim) : undefined;
  if (o.aptpl && a !== 'register') throw new UsageError('--aptpl goes with register');
  const print = (human: string, value: unknown) => process.stdout.write(`${o.json ? json(value) : human}\n`);
  return withDevice(device, timeoutMs, async (pr, dev) => {
    switch (a) {
      case 'inquiry': {
        const id = { ...(await identify(dev)), ...(await capacity(dev).catch(() => ({}))) };
        return print(`${id.vendor} ${id.product} ${id.revision}${id.serial ? `, serial ${id.serial}` : ''}${'blocks' in id ? `, ${id.blocks} blocks of ${id.blockSize} bytes` : ''}`, id);
      }
      case 'keys': {
        const k = await pr.readKeys();
        return print(`generation ${k.generation}, ${k.keys.length} key(s)${k.keys.map((x) => `\n  ${formatKey(x)}`).join('')}`, k);
      }
      case 'reservation': {
        const r = await pr.readReservation();
        return print(r.reservation ? `generation ${r.generation}: reserved by ${formatKey(r.reservation.key)}, ${prTypeName(r.reservation.type)}` : `generation ${r.generation}: no reservation`, r);
      }
      case 'capabilities': {
        const c = await pr.reportCapabilities();
        return print(`types: ${c.types?.map(prTypeName).join(', ') ?? 'not reported'}; persist through power loss: ${c.ptplC ? (c.ptplA ? 'capable, active' : 'capable') : 'no'}`, c);
      }
      case 'register':
        await pr.registerAndIgnore(key!, { aptpl: o.aptpl === true });
        return print(`registered ${formatKey(key!)}`, { registered: key });
      case 'unregister':
        await pr.registerAndIgnore(0n);
        return print('unregistered', { unregistered: true });
      case 'reserve':
        await pr.reserve(key!, type!);
        return print(`reserved, ${prTypeName(type!)}`, { reserved: key, type });
      case 'release':
        await pr.release(key!, type!);
        return print('released', { released: key, type });
      case 'preempt':
        if (o.abort) await pr.preemptAndAbort(key!, victim!, type!);
        else await pr.preempt(key!, victim!, type!);
        return print(`preempted ${formatKey(victim!)}${o.abort ? ' (and aborted its commands)' : ''}`, { preempted: victim, abort: o.abort === true });
      case 'clear':
        await pr.clear(key!);
        return print('cleared', { cleared: true });
    }
  });
}

interface FenceOptions {
  devices?: string;
  config?: string;
  cluster?: string;
  node?: string;
  nodes?: string;
  abort: boolean;
  json?: boolean;
  timeoutMs: string;
}

async function fencerFrom(o: FenceOptions): Promise<{ fencer: Fencer; close: () => void }> {
  let devicePaths = o.devices?.split(',').filter(Boolean);
  let cluster = o.cluster;
  let node = o.node;
  let nodes = o.nodes?.split(',').filter(Boolean);
  if (o.config) {
    // Loaded only with --config: the config module brings zod and yaml (~100 modules), most of
    // a SCSI command's start without it (seconds per command in an emulated guest).
    const { ConfigError, loadConfig } = await import('../agent/config.js');
    try {
      const c = await loadConfig(o.config);
      cluster ??= c.cluster;
      node ??= c.node;
      nodes ??= [c.node, ...c.peers.map((p) => p.node)];
      devicePaths ??= c.fencing?.devices;
    } catch (err) {
      if (err instanceof ConfigError) throw new UsageError(err.message);
      throw err;
    }
  }
  if (!cluster || !node || !nodes?.length) throw new UsageError('give --config FILE, or --cluster, --node and --nodes');
  if (!devicePaths?.length) throw new UsageError('--devices is required (comma-separated device paths), or a --config with fencing.devices');
  const timeoutMs = timeoutOption(o.timeoutMs);
  const transports: DeviceTransport[] = [];
  const close = () => transports.forEach((t) => t.close());
  try {
    for (const p of devicePaths) transports.push(new DeviceTransport(p));
  } catch (err) {
    close();
    throw err;
  }
  const devices = transports.map((t) => new PersistentReservations(new ScsiDevice(t, timeoutMs)));
  return { fencer: new Fencer({ cluster, node, nodes, devices, abort: o.abort }), close };
}

function printReports(reports: DeviceReport[], asJson: boolean, extra: Record<string, unknown> = {}): number {
  const ok = reports.every((r) => r.ok);
  if (asJson) process.stdout.write(`${json({ ok, ...extra, devices: reports })}\n`);
  else process.stdout.write(`${table([['DEVICE', 'OUTCOME', 'METHOD', 'MS', 'NOTE'], ...reports.map((r) => [r.device, r.outcome, r.method ?? '', r.elapsedMs.toFixed(1), r.error ?? r.note ?? ''])])}\n`);
  if (ok) return EXIT_OK;
  return reports.some((r) => /RESERVATION CONFLICT/.test(r.error ?? '')) ? EXIT_CONFLICT : EXIT_INCOMPLETE;
}

export async function fenceCommand(victim: string, o: FenceOptions): Promise<number> {
  const { fencer, close } = await fencerFrom(o);
  try {
    const r = await fencer.fence(victim).catch((err: Error & { code?: string }) => {
      if (err.code === 'ERR_FENCE_SELF' || err.code === 'ERR_FENCE_UNKNOWN_NODE') throw new UsageError(err.message);
      throw err;
    });
    return printReports(r.devices, o.json === true, { node: r.node, key: r.key });
  } finally {
    close();
  }
}

export async function unfenceCommand(o: FenceOptions): Promise<number> {
  const { fencer, close } = await fencerFrom(o);
  try {
    return printReports(await fencer.join(), o.json === true, { key: formatKey(fencer.myKey) });
  } finally {
    close();
  }
}
