// The etcd engine over client TLS and etcd's RBAC auth, against a real 3-member etcd whose
// members require a client certificate (mutual TLS) and have auth enabled (certificates made
// with openssl at start; a user whose role reaches /takeover/ only): the store contract, the
// refusals an operator meets (a wrong password, no client certificate, a CA that does not
// trust the members, a user without rights, auth against an etcd without it, TLS against a
// member without it), each a clear ESTOREACCESS within the call's bound; handshakes and token
// requests that never end; a watch outliving its token; the CLI as a process. Prints the
// latency of a HOST compare-and-swap over TLS + auth beside plain http on the same machine.
import { createSocket, type Socket as Socket4 } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { createServer as createTlsServer } from 'node:tls';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ClusterStore } from '../../src/cluster/cluster-store.js';
import { EtcdBackend, type EtcdBackendOptions } from '../../src/cluster/etcd-backend.js';
import { readEtcdCredentials } from '../../src/cluster/etcd-credentials.js';
import type { StoreBackend } from '../../src/cluster/store-backend.js';
import { run } from '../../src/lab/exec.js';
import { runCli, startCli } from '../cli-process.js';
import { app, storeContract } from '../store-contract.js';
import { type EtcdCluster, startEtcdCluster } from './etcd-cluster.js';
import { eventually } from './eventually.js';
import { issueCert, makeCa } from './test-certs.js';

const NODES = ['n1', 'n2', 'n3'];
const by = { by: 'test', why: 'etcd over TLS' };
/** EtcdBackend's default bound on one call. */
const CALL_MS = 2000;
/** What a failing call may take beyond it on a loaded 2-core machine (timers firing late). */
const SLACK_MS = 700;
const USER = 'takeover';
// Spaces, a colon, quotes: the password file's bytes are the password, nothing is parsed.
const PASSWORD = 'c0rrect horse: "battery" staple';
/** etcd forgets a simple token unused this long (s): short, so that tests see tokens run out. */
const TOKEN_TTL_S = 2;

const dir = mkdtempSync(path.join(tmpdir(), 'tko-etcd-tls-'));
const passwordFile = path.join(dir, 'etcd.password');
writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });

// Started once for the file; if one cannot start, every test fails with the reason.
let secure: EtcdCluster | undefined;
let plain: EtcdCluster | undefined;
let startError: unknown;
// The two start at once (each on its own free ports and directory): the plain one's start hides
// behind the secure one's certificates and auth setup.
beforeAll(async () => {
  const [s, p] = await Promise.allSettled([
    startEtcdCluster({ tls: true, auth: { user: USER, password: PASSWORD, prefix: '/takeover/' }, authTokenTtlSeconds: TOKEN_TTL_S }),
    startEtcdCluster(),
  ]);
  if (s.status === 'fulfilled') secure = s.value;
  if (p.status === 'fulfilled') plain = p.value;
  const failed = [s, p].find((r) => r.status === 'rejected');
  if (failed) startError = (failed as PromiseRejectedResult).reason;
}, 90_000);
afterAll(async () => {
  await Promise.allSettled([secure?.destroy(), plain?.destroy()]);
  rmSync(dir, { recursive: true, force: true });
});
const started = (c: EtcdCluster | undefined): EtcdCluster => {
  if (c) return c;
  throw startError instanceof Error ? startError : new Error(`the etcd clusters did not start: ${String(startError)}`);
};
const etcd = () => started(secure);

/** The config's `store.etcd` for the secure cluster, as an operator writes it. */
const storeConfig = (over: Record<string, unknown> = {}) => {
  const t = etcd().tls!;
  return { endpoints: etcd().endpoints, tls: { ca: t.ca, cert: t.clientCert, key: t.clientKey }, auth: { user: USER, passwordFile }, ...over };
};

let names = 0;
const freshName = () => `tls${process.pid}x${names++}`;

/** A backend on the secure cluster with the credentials read from the files (as the agent and CLI read them). */
async function secureBackend(options: Partial<EtcdBackendOptions> = {}): Promise<EtcdBackend> {
  const { tls, auth } = await readEtcdCredentials(storeConfig());
  return new EtcdBackend({ endpoints: etcd().endpoints, cluster: freshName(), tls: tls!, auth: auth!, ...options });
}

storeContract('etcd over mutual TLS with auth', () => secureBackend());

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value?: T; error?: Error & { code?: string; reason?: string; maybeWritten?: boolean } }> {
  const t = Date.now();
  try {
    const value = await fn();
    return { ms: Date.now() - t, value };
  } catch (error) {
    return { ms: Date.now() - t, error: error as Error };
  }
}

const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

describe('etcd store engine over TLS with auth', () => {
  const open: StoreBackend[] = [];
  const servers: Server[] = [];
  const track = <B extends StoreBackend>(b: B): B => (open.push(b), b);
  afterEach(async () => {
    for (const b of open.splice(0)) await b.close();
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
    for (const m of etcd().members) m.thaw();
    const down = etcd().members.filter((m) => !m.running);
    await Promise.all(down.map((m) => m.start()));
    if (down.length) await etcd().waitHealthy();
  });

  /** Every call of the backend, each timed: each must fail as `code` (and `reason`) within the bound, its message matching `says`. */
  async function everyCallRefused(b: StoreBackend, code: string, reason: string | undefined, says: RegExp, within = CALL_MS + SLACK_MS) {
    const calls: Record<string, () => Promise<unknown>> = {
      readAll: () => b.readAll(),
      read: () => b.read('db'),
      create: () => b.compareAndSwap('db', 0, { n: 1 }),
      keepAlive: () => b.keepAlive('n1', 1000),
      liveNodes: () => b.liveNodes(),
      watch: () => b.watch(() => {}),
    };
    const results = await Promise.all(Object.entries(calls).map(async ([call, fn]) => ({ call, ...(await timed(fn)) })));
    for (const r of results) {
      expect(r.error, `${r.call} must fail`).toMatchObject({ code, ...(reason ? { reason } : {}) });
      expect(r.error!.message, r.call).toMatch(says);
      expect(r.ms, `${r.call} failed after ${r.ms} ms`).toBeLessThan(within);
    }
    return results;
  }

  it('a wrong password: every call fails at once as ESTOREACCESS (authentication), naming the user', async () => {
    const { tls } = await readEtcdCredentials(storeConfig());
    const b = track(new EtcdBackend({ endpoints: etcd().endpoints, cluster: freshName(), tls: tls!, auth: { user: USER, password: 'not the password' } }));
    const r = await everyCallRefused(b, 'ESTOREACCESS', 'authentication', /refused the password of user takeover: a wrong password, or no such user/);
    console.log(`etcd over TLS, a wrong password: refused after ${r.map((x) => `${x.call} ${x.ms} ms`).join(', ')}: ${r[0]!.error!.message}`);
  });

  it('a client without a certificate, where the members require one: ESTOREACCESS (tls) saying so, within the bound', async () => {
    const { tls, auth } = await readEtcdCredentials(storeConfig());
    const b = track(new EtcdBackend({ endpoints: etcd().endpoints, cluster: freshName(), tls: { ca: tls!.ca }, auth: auth! }));
    const r = await everyCallRefused(b, 'ESTOREACCESS', 'tls', /requires a client certificate signed by a CA it trusts .*none is given/);
    console.log(`etcd over TLS, no client certificate: refused after ${r.map((x) => `${x.call} ${x.ms} ms`).join(', ')}: ${r[0]!.error!.message}`);
  });

  it('a CA that did not sign the members\' certificates: ESTOREACCESS (tls) saying so, within the bound', async () => {
    const other = await makeCa(dir, 'other-ca');
    const { tls, auth } = await readEtcdCredentials(storeConfig({ tls: { ...storeConfig().tls, ca: other.cert } }));
    const b = track(new EtcdBackend({ endpoints: etcd().endpoints, cluster: freshName(), tls: tls!, auth: auth! }));
    const r = await everyCallRefused(b, 'ESTOREACCESS', 'tls', /certificate is not signed by the CA given/);
    console.log(`etcd over TLS, an untrusting CA: refused after ${r.map((x) => `${x.call} ${x.ms} ms`).join(', ')}: ${r[0]!.error!.message}`);
  });

  it('a user without rights on the prefix, and no user at all: ESTOREACCESS (permission) saying what to grant', async () => {
    const outside = track(await secureBackend({ prefix: '/elsewhere/x/' }));
    await everyCallRefused(outside, 'ESTOREACCESS', 'permission', /user takeover may not read and write the keys under \/elsewhere\/x\/: grant its role readwrite/);
    const { tls } = await readEtcdCredentials(storeConfig());
    const anonymous = track(new EtcdBackend({ endpoints: etcd().endpoints, cluster: freshName(), tls: tls! }));
    await everyCallRefused(anonymous, 'ESTOREACCESS', 'permission', /etcd has authentication enabled; this client gives no user and password, and user takeover-test-client \(its certificate's CN\) may not read and write the keys under \/takeover\/.*: grant its role readwrite/);
  });

  it('without a password, the client certificate\'s CN is the user (etcd\'s --client-cert-auth): a certificate for user takeover serves the store', async () => {
    const t = etcd().tls!;
    const cert = await issueCert(t.authority, 'cn-takeover', { cn: USER, usage: 'client' });
    const { tls } = await readEtcdCredentials({ tls: { ca: t.ca, cert: cert.cert, key: cert.key } });
    const name = freshName();
    const b = track(new EtcdBackend({ endpoints: etcd().endpoints, cluster: name, tls: tls! }));
    const s = new ClusterStore(b, NODES);
    const changed: string[] = [];
    await s.watch((tag) => changed.push(tag));
    const lease = await s.keepAlive('n1', 2000);
    await s.create(app(), by);
    await eventually(async () => (changed.includes('db') ? true : undefined), 3000, 'the watch to report db');
    expect(await s.liveNodes()).toEqual(new Set(['n1']));
    await lease.close();
  });

  it('auth given to an etcd without auth, and TLS against members that serve plain http: ESTOREACCESS, within the bound', async () => {
    const p = started(plain);
    const { tls } = await readEtcdCredentials(storeConfig());
    // Three clients of their own, checked at the same time (each of the last two waits out most
    // of its call's bound).
    await Promise.all([
      (async () => {
        const authless = track(new EtcdBackend({ endpoints: p.endpoints, cluster: freshName(), auth: { user: USER, password: PASSWORD } }));
        await everyCallRefused(authless, 'ESTOREACCESS', 'authentication', /this etcd has authentication disabled/);
      })(),
      (async () => {
        const tlsToPlain = track(new EtcdBackend({ endpoints: p.endpoints.map((e) => e.replace('http:', 'https:')), cluster: freshName(), tls: tls! }));
        await everyCallRefused(tlsToPlain, 'ESTOREACCESS', 'tls', /closed the connection in the TLS handshake: does it serve TLS at this URL/);
      })(),
      (async () => {
        // And the other way round: a plain client against TLS members says where to look.
        const plainToTls = track(new EtcdBackend({ endpoints: etcd().endpoints.map((e) => e.replace('https:', 'http:')), cluster: freshName() }));
        const r = await timed(() => plainToTls.readAll());
        expect(r.error).toMatchObject({ code: 'ESTOREUNAVAILABLE', message: expect.stringContaining('if the members serve TLS: https:// endpoints and tls') });
        expect(r.ms).toBeLessThan(CALL_MS + SLACK_MS);
      })(),
    ]);
  });

  it('a member whose certificate does not name the address it is reached at: ESTOREACCESS (tls) saying so', async () => {
    // A TLS listener with a certificate of the cluster's CA for another address stands for it.
    const t = etcd().tls!;
    const elsewhere = await issueCert(t.authority, 'elsewhere', { ips: ['192.0.2.1'], usage: 'server' });
    const server = createTlsServer({ cert: readFileSync(elsewhere.cert), key: readFileSync(elsewhere.key), ALPNProtocols: ['h2'] }, (s) => s.destroy());
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const { tls } = await readEtcdCredentials(storeConfig());
    const b = track(new EtcdBackend({ endpoints: [`https://127.0.0.1:${(server.address() as { port: number }).port}`], cluster: freshName(), tls: tls! }));
    await everyCallRefused(b, 'ESTOREACCESS', 'tls', /certificate does not name the address it was reached at .*IP: 127\.0\.0\.1 is not in the cert's list: 192\.0\.2\.1/);
  });

  it('TLS handshakes that never end (a listener that accepts and says nothing), with and without auth: every call fails within the bound', async () => {
    const sockets: Socket[] = [];
    const mute = createServer((s) => sockets.push(s));
    servers.push(mute);
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    const url = `https://127.0.0.1:${(mute.address() as { port: number }).port}`;
    try {
      const { tls, auth } = await readEtcdCredentials(storeConfig());
      // The two clients at the same time: each call of each waits out its whole bound.
      await Promise.all([false, true].map(async (withAuth) => {
        const b = track(new EtcdBackend({ endpoints: [url], cluster: freshName(), tls: tls!, ...(withAuth ? { auth: auth! } : {}) }));
        const r = await everyCallRefused(b, 'ESTOREUNAVAILABLE', undefined, /no answer within 2000 ms|establish a watch/);
        console.log(`etcd over TLS, a handshake never answered${withAuth ? ' (auth: the token request first)' : ''}: calls failed after ${r.map((x) => `${x.call} ${x.ms} ms`).join(', ')}`);
      }));
    } finally {
      for (const s of sockets) s.destroy();
    }
  });

  it('a member hung (SIGSTOP) while a new client takes its token: the token comes from another member and the call succeeds within the bound', async () => {
    // The token is asked of the members in the order of the endpoints: the first one hung.
    const m1 = etcd().members[0]!;
    const name = freshName();
    const writer = track(await secureBackend({ cluster: name }));
    await writer.compareAndSwap('db', 0, { n: 1 });
    m1.freeze();
    const b = track(await secureBackend({ cluster: name, callTimeoutMs: 3000 }));
    const r = await timed(() => b.read('db'));
    expect(r.error).toBeUndefined();
    expect(r.value).toMatchObject({ record: { n: 1 } });
    console.log(`etcd over TLS with auth, first member hung: a new client's first read (token included) took ${r.ms} ms`);
    expect(r.ms).toBeLessThan(3000);
  });

  it('a token that ran out: calls take a new one, and a watch whose stream broke meanwhile is set up again and keeps reporting', async () => {
    const m1 = etcd().members[0]!;
    const name = freshName();
    // The watching client knows only m1, so its watch stream is there.
    const watching = track(await secureBackend({ cluster: name, endpoints: [m1.clientUrl] }));
    const writer = track(await secureBackend({ cluster: name }));
    const changed: string[] = [];
    await watching.watch((tag) => changed.push(tag));
    await writer.compareAndSwap('a', 0, { n: 1 });
    await eventually(async () => (changed.includes('a') ? true : undefined), 3000, 'the watch to report a');
    // Unused past etcd's token TTL: etcd forgets the token (every member).
    await sleep(TOKEN_TTL_S * 1000 + 1500);
    const again = await timed(() => watching.read('a'));
    expect(again.error).toBeUndefined();
    console.log(`etcd with auth: a read after the token ran out took ${again.ms} ms (a new token included)`);
    await sleep(TOKEN_TTL_S * 1000 + 1500);
    // The connections to m1 are cut (SOCK_DESTROY): the client sets the watch stream up again
    // with the token it has, which etcd no longer knows; etcd cancels that watch, and the
    // backend takes a new token and watches again.
    const port = new URL(m1.clientUrl).port;
    await run('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', `:${port}`]);
    changed.length = 0;
    await writer.compareAndSwap('b', 0, { n: 1 });
    await eventually(async () => (changed.includes('b') ? true : undefined), 8000, `the watch to report b after its stream was cut (got ${changed.join(', ') || 'nothing'})`);
  });

  it('measures a HOST compare-and-swap over mutual TLS with auth beside plain http: median and p99 of 200 sequential updates', async () => {
    const measure = async (s: ClusterStore) => {
      let cur = await s.create(app(), by);
      const times: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t = performance.now();
        cur = await s.update(cur, { ...cur.app, host: i % 2 ? 'n1' : 'n2', state: 'up' }, { by: i % 2 ? 'n1' : 'n2', why: 'bench' });
        times.push(performance.now() - t);
      }
      times.sort((x, y) => x - y);
      return { median: times[100]!, p99: times[197]! };
    };
    const first = await timed(async () => {
      const b = track(await secureBackend());
      await b.read('db');
      return b;
    });
    const secured = await measure(new ClusterStore(first.value!, NODES));
    const clear = await measure(new ClusterStore(track(new EtcdBackend({ endpoints: started(plain).endpoints, cluster: freshName() })), NODES));
    const f = (x: number) => x.toFixed(2);
    console.log(
      `HOST compare-and-swap, 200 sequential, etcd 3.4, 3 members on loopback: mutual TLS + auth median ${f(secured.median)} ms, p99 ${f(secured.p99)} ms; ` +
        `plain http median ${f(clear.median)} ms, p99 ${f(clear.p99)} ms; a new TLS + auth client's first read (handshake, token) ${first.ms} ms`,
    );
    expect(secured.median).toBeLessThan(100);
  });
});

describe('the agent and the CLI over TLS with auth, as processes', () => {
  /** An agent config naming the secure cluster; `etcdOver` overrides fields of store.etcd. */
  const config = (file: string, etcdOver: Record<string, unknown> = {}, ports = [7400, 7401]) => {
    writeFileSync(file, JSON.stringify({
      cluster: 'cli', node: 'a', database: 'db', key: 'the cluster apps key', control: path.join(dir, 'a.sock'), incarnationFile: path.join(dir, 'a.incarnation'),
      heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: ports[0] }] }, notify: { host: '127.0.0.1', port: 0 }, quorum: { twoNode: true },
      peers: [{ node: 'b', links: [{ id: 0, address: '127.0.0.1', port: ports[1] }] }],
      store: { etcd: storeConfig(etcdOver), leaseMs: 2000 },
    }));
    return file;
  };

  it('takeover app register, apps and history work as written; an agent holds its lease there; agent --check reads the files; a wrong password, a missing CA and a wrong key are named', async () => {
    const file = config(path.join(dir, 'a.json'), {}, await freeUdpPorts(2));
    const spec = path.join(dir, 'web.json');
    writeFileSync(spec, JSON.stringify({ tag: 'web', type: 'cluster-aware', primary: 'a', backups: ['b'] }));
    const reg = await runCli(['app', 'register', spec, '--config', file]);
    expect(reg, reg.stderr).toMatchObject({ code: 0 });
    // Two reads: one process each, at once.
    const t = Date.now();
    const [apps, history] = await Promise.all([
      runCli(['apps', '--json', '--config', file]).then((r) => ({ ...r, ms: Date.now() - t })),
      runCli(['history', 'web', '--config', file]),
    ]);
    const ms = apps.ms;
    expect(apps, apps.stderr).toMatchObject({ code: 0, stderr: '' }); // no warning either (Node's DEP0123 on an IP as TLS server name)
    expect(JSON.parse(apps.stdout)).toMatchObject({ store: `etcd ${etcd().endpoints.join(',')}`, live: [], apps: [{ tag: 'web', host: 'a', state: 'loading' }] });
    expect(history, history.stderr).toMatchObject({ code: 0 });
    expect(history.stdout).toMatch(/registered by an operator/);
    console.log(`takeover apps over mutual TLS + auth (a process from dist/): ${ms} ms`);

    // The agent with the same file: its lease is in the store.
    const agent = startCli(['agent', '--config', file]);
    try {
      await eventually(async () => (agent.stdout().includes('"agent started"') ? true : undefined), 20_000, `the agent to start (stdout: ${agent.stdout()})`);
      await eventually(async () => {
        const r = await runCli(['apps', '--json', '--config', file]);
        return r.code === 0 && (JSON.parse(r.stdout) as { live: string[] }).live.includes('a') ? true : undefined;
      }, 10_000, 'node a live in the store');
      expect(agent.stdout()).not.toMatch(/store is not usable|lease in the store was lost|cannot be used at start/);
    } finally {
      agent.child.kill('SIGTERM');
      const end = await agent.done;
      expect(end.stderr).toBe('');
    }

    // agent --check of the good file, and the refusals: six independent processes, run at once.
    const wrong = path.join(dir, 'wrong.password');
    writeFileSync(wrong, 'nope\n', { mode: 0o600 });
    const badKey = config(path.join(dir, 'badkey.json'), { tls: { ...storeConfig().tls, key: etcd().tls!.serverKey } });
    const badKeyArgs = [['apps'], ['agent', '--check'], ['agent']];
    const [check, refused, noCa, ...badKeyRuns] = await Promise.all([
      runCli(['agent', '--check', '--config', file]),
      runCli(['apps', '--config', config(path.join(dir, 'wrong.json'), { auth: { user: USER, passwordFile: wrong } })]),
      runCli(['apps', '--config', config(path.join(dir, 'noca.json'), { tls: { ...storeConfig().tls, ca: path.join(dir, 'missing-ca.pem') } })]),
      ...badKeyArgs.map((args) => runCli([...args, '--config', badKey])),
    ]);
    expect(check!, check!.stderr).toMatchObject({ code: 0 });
    expect(check!.stdout).toMatch(/store\.etcd\.tls\.ca: .*etcd-test-ca\.crt: 1 certificate \(CN=etcd-test-ca, valid until/);
    expect(check!.stdout).toMatch(/store\.etcd\.tls\.cert: .*client\.crt: CN=takeover-test-client, valid until .* with its key .*client\.key \(mode 0600\)/);
    expect(check!.stdout).toMatch(/store\.etcd\.auth\.passwordFile: .*etcd\.password is readable \(31 bytes, mode 0600\) for user takeover/);

    expect(refused!.code).toBe(1);
    expect(refused!.stderr).toMatch(/^takeover: store https:.*refused the password of user takeover/);

    expect(noCa!.code).toBe(2);
    expect(noCa!.stderr).toMatch(/noca\.json: store\.etcd\.tls\.ca: .*missing-ca\.pem does not exist/);

    for (const [i, args] of badKeyArgs.entries()) {
      const r = badKeyRuns[i]!;
      expect(r.code, args.join(' ')).toBe(args.length === 1 && args[0] === 'agent' ? 1 : 2);
      expect(r.stderr).toMatch(/store\.etcd\.tls\.key: .*server\.key is not the key of the certificate in .*client\.crt/);
    }
  });
});

/** UDP ports free on 127.0.0.1 now (bound and released): the agent's heartbeat links. */
async function freeUdpPorts(n: number): Promise<number[]> {
  const sockets = await Promise.all(Array.from({ length: n }, () => new Promise<Socket4>((resolve) => {
    const s = createSocket('udp4');
    s.bind(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = sockets.map((s) => s.address().port);
  await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}
