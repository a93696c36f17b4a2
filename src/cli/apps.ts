// `takeover apps`, `takeover app register|load|unload|failback|switchover`, `takeover history`:
// the clustered applications, read and changed in the store that the agent config names, from
// any node (the agents need not run for a read). Changes that need the HOST's agent (unload, a
// move) are written as a request in the object; the HOST's agent carries it out and the command
// waits until the store shows it done (--wait-ms). Exit 0 done, 1 not done within the wait,
// 2 refused (an unknown application, a request that cannot be, a bad file: nothing changed).
import os from 'node:os';
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { ConfigError, loadConfig } from '../agent/config.js';
import { type AppObject, AppObjectError, newApp, serversOf } from '../cluster/app-object.js';
import { AppRegistrationError, type ClusterStore, type HostChange, type StoredApp } from '../cluster/cluster-store.js';
import { clusterNodes, openClusterStore } from '../cluster/open-store.js';
import { EXIT_INCOMPLETE, EXIT_OK, UsageError } from './errors.js';
import { printJson, table } from './output.js';
import { intOption } from './parse-args.js';

export interface AppsOptions {
  config: string;
  json?: boolean;
  waitMs?: string;
  to?: string;
  on?: string;
}

const operator = () => ({ by: `${os.userInfo().username}@${os.hostname()}`, why: '' });

async function withStore<T>(opts: AppsOptions, fn: (store: ClusterStore, nodes: string[]) => Promise<T>): Promise<T> {
  const usage = (err: Error) => {
    throw err instanceof ConfigError ? new UsageError(err.message) : err;
  };
  const config = await loadConfig(opts.config).catch(usage);
  const store = await openClusterStore(config, opts.config).catch(usage);
  try {
    return await fn(store, clusterNodes(config));
  } finally {
    await store.close();
  }
}

/** `takeover apps`: one line per application (TAG, TYPE, HOST, PRIMARY, BACKUP, STATE, SINCE) and the nodes live in the store. */
export async function appsCommand(opts: AppsOptions): Promise<number> {
  return withStore(opts, async (store) => {
    const [apps, live] = await Promise.all([store.list(), store.liveNodes()]);
    if (opts.json) {
      printJson({ store: store.location, live: [...live].sort(), apps: apps.map((a) => ({ ...a.app, revision: a.revision })) });
      return EXIT_OK;
    }
    const rows = [['TAG', 'TYPE', 'HOST', 'PRIMARY', 'BACKUP', 'STATE', 'SINCE']];
    for (const { app } of apps) {
      rows.push([app.tag, app.type, app.host ?? '-', app.primary, app.backups.join(',') || '-', stateText(app), new Date(app.since).toISOString()]);
    }
    process.stdout.write(`${table(rows)}\n`);
    process.stdout.write(`store: ${store.location}; live nodes: ${[...live].sort().join(', ') || 'none'}\n`);
    return EXIT_OK;
  });
}

function stateText(app: AppObject): string {
  const request = app.request ? ` (${app.request.kind}${app.request.to ? ` to ${app.request.to}` : ''} asked)` : '';
  return `${app.state}${app.releasedTo ? ` to ${app.releasedTo}` : ''}${request}`;
}

/** `takeover history APP`: each change of HOST or state, who made it and why. */
export async function historyCommand(tag: string, opts: AppsOptions): Promise<number> {
  return withStore(opts, async (store) => {
    const s = await known(store, tag);
    if (opts.json) {
      printJson(s.history);
      return EXIT_OK;
    }
    process.stdout.write(`${historyTable(s.history)}\n`);
    return EXIT_OK;
  });
}

/** An application's history as a table: AT, FROM, TO (HOST and state), BY, WHY. */
export function historyTable(history: HostChange[]): string {
  const where = (x: { host: string | null; state: string } | null) => (x ? `${x.host ?? '-'} ${x.state}` : '-');
  const rows = [['AT', 'FROM', 'TO', 'BY', 'WHY']];
  for (const h of history) rows.push([new Date(h.at).toISOString(), where(h.from), where(h.to), h.by, h.why]);
  return table(rows);
}

/** `takeover app ACTION APP`. */
export async function appCommand(action: string, arg: string, opts: AppsOptions): Promise<number> {
  const waitMs = opts.waitMs === undefined ? 60_000 : intOption('--wait-ms', opts.waitMs, 0, 86_400_000);
  if (opts.to !== undefined && action !== 'switchover') throw new UsageError('--to: only for app switchover');
  if (opts.on !== undefined && action !== 'load') throw new UsageError('--on: only for app load');
  switch (action) {
    case 'register':
      return withStore(opts, (store, nodes) => register(store, nodes, arg));
    case 'load':
      return withStore(opts, (store) => load(store, arg, opts.on, waitMs));
    case 'unload':
      return withStore(opts, (store) => request(store, arg, { kind: 'unload' }, waitMs, (a) => a.host === null && a.state === 'unloaded'));
    case 'failback':
      return withStore(opts, async (store) => {
        const s = await known(store, arg);
        return request(store, arg, { kind: 'move', to: s.app.primary }, waitMs, (a) => a.host === s.app.primary && a.state === 'up');
      });
    case 'switchover': {
      if (opts.to === undefined) throw new UsageError('app switchover: --to NODE names where it goes');
      const to = opts.to;
      return withStore(opts, (store) => request(store, arg, { kind: 'move', to }, waitMs, (a) => a.host === to && a.state === 'up'));
    }
    default:
      throw new UsageError(`app: the action must be register, load, unload, failback or switchover, got "${action}"`);
  }
}

async function known(store: ClusterStore, tag: string): Promise<StoredApp> {
  const s = await store.get(tag);
  if (s === undefined) throw new UsageError(`application ${tag} is not registered in ${store.location} (see \`takeover apps\`)`);
  return s;
}

/** Registers the application described in FILE (YAML or JSON, the fields of the config's `apps` entries). */
async function register(store: ClusterStore, nodes: string[], file: string): Promise<number> {
  let spec: unknown;
  try {
    const doc = parseDocument(await readFile(file, 'utf8'));
    if (doc.errors.length > 0) throw new Error(doc.errors[0]!.message.split('\n')[0]);
    spec = doc.toJS();
  } catch (err) {
    throw new UsageError(`${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    const app = newApp(spec as never, nodes, Date.now());
    const s = await store.create(app, { ...operator(), why: 'registered by an operator' });
    process.stdout.write(`registered ${s.app.tag}: HOST ${s.app.host}, loading there once its agent sees it\n`);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof AppObjectError || err instanceof AppRegistrationError) throw new UsageError(`${file}: ${err.message}`);
    throw err;
  }
}

/** `app load APP [--on NODE]`: an application no server hosts (unloaded, failed) is given a HOST (seed 002 FIG. 6 step 610). */
async function load(store: ClusterStore, tag: string, on: string | undefined, waitMs: number): Promise<number> {
  const s = await known(store, tag);
  const to = on ?? s.app.primary;
  if (s.app.host !== null) throw new UsageError(`application ${tag} is hosted by ${s.app.host} (${s.app.state}): nothing to load (app switchover moves it)`);
  if (!serversOf(s.app).includes(to)) throw new UsageError(`--on ${to}: not a server of ${tag} (${serversOf(s.app).join(', ')})`);
  await store.update(s, { ...s.app, host: to, state: 'loading', failedOver: false, failedOn: [] }, { ...operator(), why: 'loaded by an operator' });
  return waitUntil(store, tag, waitMs, (a) => a.host === to && a.state === 'up', `loaded on ${to}`);
}

/** Writes an operator's request for the HOST's agent, then waits until `done`. */
async function request(store: ClusterStore, tag: string, req: { kind: 'move' | 'unload'; to?: string }, waitMs: number, done: (a: AppObject) => boolean): Promise<number> {
  const s = await known(store, tag);
  if (done(s.app)) {
    process.stdout.write(`${tag}: nothing to do (${s.app.host ?? 'no HOST'}, ${s.app.state})\n`);
    return EXIT_OK;
  }
  if (s.app.host === null) throw new UsageError(`application ${tag} has no HOST (${s.app.state}): \`takeover app load ${tag}\` first`);
  if (s.app.state === 'released') throw new UsageError(`application ${tag} is being moved to ${s.app.releasedTo}: wait for it`);
  const { by } = operator();
  try {
    await store.update(s, { ...s.app, request: { ...req, by, at: Date.now() } }, { by, why: `${req.kind} asked` });
  } catch (err) {
    if (err instanceof AppObjectError) throw new UsageError(err.message);
    throw err;
  }
  return waitUntil(store, tag, waitMs, done, req.kind === 'unload' ? 'unloaded' : `moved to ${req.to}`);
}

async function waitUntil(store: ClusterStore, tag: string, waitMs: number, done: (a: AppObject) => boolean, what: string): Promise<number> {
  const end = Date.now() + waitMs;
  for (;;) {
    const s = await known(store, tag);
    if (done(s.app)) {
      process.stdout.write(`${tag}: ${what} (${s.app.host ?? 'no HOST'}, ${s.app.state})\n`);
      return EXIT_OK;
    }
    if (Date.now() >= end) {
      process.stderr.write(`${tag}: not ${what} within ${waitMs} ms: HOST ${s.app.host ?? '-'}, ${stateText(s.app)} (the agents go on; \`takeover apps\` shows it)\n`);
      return EXIT_INCOMPLETE;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
