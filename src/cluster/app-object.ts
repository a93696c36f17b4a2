// A clustered application as the cluster's store keeps it: seed 002's object (TAG, TYPE, COMMAND,
// HOST SERVER, PRIMARY SERVER, BACKUP SERVER(S), RESOURCE LIST, AUTO-RECOVER) plus seed 000's
// mobile service address and seed 002's resume marker, and what the cluster manager needs to
// hand the application over safely (its state on the HOST and since when).
//
// Every write goes through `validateApp` (both store engines call it), so a bad object never
// reaches the store; an object read back is validated too, so a hand-edited store cannot steer
// an agent. Errors name the field, as the agent's config does.
import { z } from 'zod';
import { argv, firstIssue, ifname, ip, ms, name, port } from '../schema-fields.js';

/** What the cluster manager does with the application (seed 002, "cluster capable" / "cluster aware"). */
export const APP_TYPES = ['cluster-capable', 'cluster-aware'] as const;
export type AppType = (typeof APP_TYPES)[number];

/**
 * Where the application stands on its HOST:
 * - `loading`: the HOST's agent is starting it (COMMAND load) or, for a cluster-aware
 *   application, the HOST is set and the application has not said it runs yet;
 * - `up`: it runs on the HOST;
 * - `released`: the HOST unloaded it and gave its address up for `releasedTo` (failback or
 *   switchover, seed 002 FIG. 7B process 870: "deactivates the object");
 * - `unloaded`: an operator unloaded it; HOST is null (seed 002 FIG. 6, step 606);
 * - `failed`: it could not be kept running on HOST (restart policy exhausted) and no other server
 *   could take it (NOT_RESTARTING).
 */
export const APP_STATES = ['loading', 'up', 'released', 'unloaded', 'failed'] as const;
export type AppState = (typeof APP_STATES)[number];

/** The resume marker: opaque to the cluster, at most this many bytes (UTF-8) of the application's own. */
export const MAX_MARKER_BYTES = 64 * 1024;

const absolutePath = z.string().regex(/^\/[^\0]*$/, 'must be an absolute path');

const appShape = z.strictObject({
  tag: name,
  type: z.enum(APP_TYPES),
  /**
   * COMMAND: `load` starts the application on its HOST (the agent runs it in its own process
   * group and watches it); `unload` stops it (optional: without it, SIGTERM to the group, then
   * SIGKILL after `stopGraceMs`). A cluster-aware application may have no COMMAND: it is
   * started by other means and registers itself.
   */
  command: z
    .strictObject({
      load: argv,
      unload: argv.optional(),
      stopGraceMs: ms(0, 3_600_000).default(5000),
    })
    .optional(),
  /**
   * Readiness: when a loaded application counts as `up` (the UP event, the end of a failover).
   * Without it, as soon as COMMAND's process runs. `tcp: PORT`: once a TCP connection to the
   * service address (127.0.0.1 without one) and PORT is accepted; `command`: once the program,
   * run on the HOST, exits 0. Tried every `intervalMs`, each try bounded by the longer of
   * `intervalMs` and 1 s. A process that runs `timeoutMs` without passing is a failed start: it is
   * stopped and `restart` applies (a restart, or NOT_RESTARTING and the next server).
   */
  ready: z
    .strictObject({
      tcp: port.optional(),
      command: argv.optional(),
      timeoutMs: ms(100, 86_400_000).default(60_000),
      intervalMs: ms(10, 60_000).default(250),
    })
    .superRefine((r, ctx) => {
      if ((r.tcp === undefined) === (r.command === undefined)) ctx.addIssue({ code: 'custom', path: [], message: 'names one probe: tcp (a port) or command (a program and its arguments)' });
      else if (r.intervalMs > r.timeoutMs) ctx.addIssue({ code: 'custom', path: ['intervalMs'], message: `must not exceed timeoutMs (${r.timeoutMs})` });
    })
    .optional(),
  /** How often a failing COMMAND is restarted on one server before the next backup is tried. */
  restart: z
    .strictObject({ maxFailures: z.number().int().min(0).max(1000), windowMs: ms(1, 86_400_000), backoffMs: ms(0, 3_600_000) })
    .default({ maxFailures: 2, windowMs: 60_000, backoffMs: 500 }),
  /** HOST SERVER: the node it is loaded on now; null when no server hosts it. */
  host: name.nullable(),
  /** PRIMARY SERVER: where it normally runs. */
  primary: name,
  /** BACKUP SERVER(S), in the order they are tried. */
  backups: z.array(name).max(16).default([]),
  /**
   * RESOURCE LIST: what a server must have before it may host the application. Addresses the
   * server must own (besides the service address, which moves with the application), block
   * devices or other paths that must exist, directories that must be mount points, local TCP
   * ports that must be free.
   */
  resources: z
    .strictObject({
      addresses: z.array(ip).max(16).default([]),
      devices: z.array(absolutePath).max(64).default([]),
      mounts: z.array(absolutePath).max(64).default([]),
      paths: z.array(absolutePath).max(64).default([]),
      freePorts: z.array(port).max(64).default([]),
    })
    .default({ addresses: [], devices: [], mounts: [], paths: [], freePorts: [] }),
  /** AUTO-RECOVER: fail back to PRIMARY as soon as it is alive again (else on `app failback`). */
  autoRecover: z.boolean().default(true),
  /** The service address that moves with the application (seed 000): added on the HOST. */
  address: z
    .strictObject({ address: ip.refine((s) => !s.includes('%'), 'must not carry a zone (%IF)'), prefixLength: z.number().int().min(1).max(128), interface: ifname, port: port.optional() })
    .optional(),
  /** The resume marker (seed 002): where the application got to, for the next HOST to resume from. */
  marker: z
    .string()
    .refine((s) => Buffer.byteLength(s) <= MAX_MARKER_BYTES, `must be at most ${MAX_MARKER_BYTES} bytes`)
    .nullable()
    .default(null),
  state: z.enum(APP_STATES),
  /** When `state` (or HOST) last changed, ms since the epoch. */
  since: z.number().int().min(0),
  /**
   * HOST got it by a failover (its HOST died, or could not keep it running), not by an operator's
   * or a failback's choice: only then does AUTO-RECOVER move it back to PRIMARY.
   */
  failedOver: z.boolean().default(false),
  /**
   * The servers that could not keep it running, or lacked its RESOURCE LIST, since it last ran:
   * a hand-on skips them (so two failing servers do not pass it back and forth). Cleared once
   * it is up, and by an operator's `app load`.
   */
  failedOn: z.array(name).max(17).default([]),
  /** With `released`: the node the HOST released it for. */
  releasedTo: name.optional(),
  /**
   * An operator's request to the HOST's agent, which carries it out and clears it: `move` (a
   * failback or switchover: it stops the application, releases the address, then releases it
   * to `to`), `unload` (it stops it and sets HOST null). Through the store, so it reaches the
   * HOST from any node.
   */
  request: z
    .strictObject({ kind: z.enum(['move', 'unload']), to: name.optional(), by: z.string().min(1).max(256), at: z.number().int().min(0) })
    .optional(),
});

/**
 * An application as an operator writes it (the agent config's `apps`, `takeover app register`):
 * what it is and where it may run, without what the cluster manager keeps (HOST, state, since,
 * marker, requests). `newApp` makes the object.
 */
export const appSpecSchema = appShape.omit({ host: true, state: true, since: true, failedOver: true, failedOn: true, releasedTo: true, request: true, marker: true });
export type AppSpec = z.input<typeof appSpecSchema>;

const appSchema = appShape
  .superRefine((a, ctx) => {
    const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    a.backups.forEach((b, i) => {
      if (b === a.primary) issue(['backups', i], `${b} is the PRIMARY server; a backup must be another node`);
      else if (a.backups.indexOf(b) !== i) issue(['backups', i], `${b} is listed twice`);
    });
    if (a.host !== null && a.host !== a.primary && !a.backups.includes(a.host)) issue(['host'], `${a.host} is neither the PRIMARY nor a BACKUP server`);
    if (a.host === null && a.state !== 'unloaded' && a.state !== 'failed') issue(['state'], `must be unloaded or failed while no server is HOST, got ${a.state}`);
    if (a.host !== null && a.state === 'unloaded') issue(['host'], 'must be null while the application is unloaded');
    if (a.state === 'released') {
      if (a.releasedTo === undefined) issue(['releasedTo'], 'names the node a released application goes to');
      else if (a.releasedTo === a.host || (a.releasedTo !== a.primary && !a.backups.includes(a.releasedTo))) issue(['releasedTo'], `${a.releasedTo} must be the PRIMARY or a BACKUP other than the HOST`);
    } else if (a.releasedTo !== undefined) issue(['releasedTo'], 'is only for a released application');
    if (a.request?.kind === 'move') {
      if (a.request.to === undefined) issue(['request', 'to'], 'names the node to move the application to');
      else if (a.request.to === a.host || (a.request.to !== a.primary && !a.backups.includes(a.request.to))) issue(['request', 'to'], `${a.request.to} must be the PRIMARY or a BACKUP other than the HOST`);
    } else if (a.request?.to !== undefined) issue(['request', 'to'], 'is only for a move');
    if (a.type === 'cluster-capable' && a.command === undefined) issue(['command'], 'a cluster-capable application needs a COMMAND: the cluster loads it');
    if (a.ready !== undefined && a.command === undefined) issue(['ready'], 'is for an application the agent loads with a COMMAND (without one, the application says itself when it is up)');
    if (a.address !== undefined) {
      const v4 = !a.address.address.includes(':');
      if (v4 && a.address.prefixLength > 32) issue(['address', 'prefixLength'], `must be from 1 to 32 for the IPv4 address ${a.address.address}`);
      if (!v4 && a.address.prefixLength < 64) issue(['address', 'prefixLength'], `must be from 64 to 128 for the IPv6 address ${a.address.address}`);
    }
  });

/** A clustered application object, validated (defaults filled in). */
export type AppObject = z.output<typeof appSchema>;
/** What a writer may give: defaults may be left out. */
export type AppObjectInput = z.input<typeof appSchema>;

/** An application object that failed validation; `field` is its path (`backups[1]`, `command.load`). */
export class AppObjectError extends Error {
  override readonly name = 'AppObjectError';
  readonly code = 'EAPPINVALID';
  constructor(
    readonly tag: string,
    readonly field: string,
    /** What is wrong with the field, without the tag and field. */
    readonly detail: string,
  ) {
    super(`application ${tag || '(no tag)'}: ${field ? `${field}: ` : ''}${detail}`);
  }
}

/**
 * Validates an application object (to be written, or read back from a store) and fills in the
 * defaults. `nodes`, when given, are the cluster's nodes: PRIMARY, BACKUP and HOST must be among
 * them. Throws AppObjectError naming the first bad field.
 */
export function validateApp(input: unknown, nodes?: readonly string[]): AppObject {
  const tag = typeof input === 'object' && input !== null && typeof (input as { tag?: unknown }).tag === 'string' ? (input as { tag: string }).tag : '';
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new AppObjectError(tag, '', 'must be an object');
  const r = appSchema.safeParse(input);
  if (!r.success) {
    const first = firstIssue(r.error);
    throw new AppObjectError(tag, first.field, first.message);
  }
  const app = r.data;
  if (nodes !== undefined) {
    const known = new Set(nodes);
    if (!known.has(app.primary)) throw new AppObjectError(app.tag, 'primary', `${app.primary} is not a node of this cluster (${[...known].join(', ')})`);
    app.backups.forEach((b, i) => {
      if (!known.has(b)) throw new AppObjectError(app.tag, `backups[${i}]`, `${b} is not a node of this cluster (${[...known].join(', ')})`);
    });
  }
  return app;
}

/** PRIMARY, then the BACKUP servers in order: the servers that may host the application. */
export function serversOf(app: AppObject): string[] {
  return [app.primary, ...app.backups];
}

/** A newly registered application: loading on its PRIMARY (seed 002 FIG. 6 step 604). Throws AppObjectError. */
export function newApp(spec: AppSpec, nodes: readonly string[] | undefined, now: number): AppObject {
  return validateApp({ ...spec, host: spec.primary, state: 'loading', since: now }, nodes);
}
