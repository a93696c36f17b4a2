// The etcd store's TLS and auth files as the agent and the CLI read them (certificates made with
// openssl at test time): what holds is listed for `agent --check`, and a file that is missing or
// not what its field says is named by the field, before any connection. And the etcd engine's
// own checks of what it is given (no etcd needed: it refuses before connecting).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/agent/config.js';
import { checkHost, HostCheckError } from '../../src/agent/host-checks.js';
import { EtcdBackend } from '../../src/cluster/etcd-backend.js';
import { CredentialFileError, readEtcdCredentials } from '../../src/cluster/etcd-credentials.js';
import { openClusterStore } from '../../src/cluster/open-store.js';
import { run } from '../../src/lab/exec.js';
import { issueCert, makeCa, type TestCa, type TestCert } from '../lab/test-certs.js';

const dir = mkdtempSync(path.join(tmpdir(), 'tko-etcd-cred-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let ca: TestCa;
let client: TestCert;
let other: TestCert;
const file = (name: string, content: string | Buffer, mode = 0o600) => {
  const f = path.join(dir, name);
  writeFileSync(f, content, { mode });
  chmodSync(f, mode);
  return f;
};
beforeAll(async () => {
  ca = await makeCa(dir, 'ca');
  client = await issueCert(ca, 'client', { cn: 'node-a', usage: 'client' });
  other = await issueCert(ca, 'other', { usage: 'client' });
});

const tls = () => ({ ca: ca.cert, cert: client.cert, key: client.key });

/** The field and message of the CredentialFileError that `etcd` gives. */
async function refused(etcd: Parameters<typeof readEtcdCredentials>[0], now?: number): Promise<string> {
  const err = await readEtcdCredentials(etcd, now).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(CredentialFileError);
  return `${(err as CredentialFileError).field}: ${(err as Error).message}`;
}

describe('the etcd store\'s credential files', () => {
  it('reads the CA, the client certificate and its key, and the password without its final line ending; says what it found', async () => {
    const pw = file('pw', 'p4ss: w0rd\r\n');
    const c = await readEtcdCredentials({ tls: tls(), auth: { user: 'takeover', passwordFile: pw } });
    expect(c.auth).toEqual({ user: 'takeover', password: 'p4ss: w0rd' });
    expect(c.tls!.ca.toString()).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(c.tls!.cert!.toString()).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(c.tls!.key!.toString()).toMatch(/-----BEGIN PRIVATE KEY-----/);
    expect(c.found).toEqual([
      { field: 'store.etcd.tls.ca', found: expect.stringMatching(/ca\.crt: 1 certificate \(CN=ca, valid until \d{4}-\d\d-\d\d\)$/) },
      { field: 'store.etcd.tls.cert', found: expect.stringMatching(/client\.crt: CN=node-a, valid until .*, with its key .*client\.key \(mode 0600\)$/) },
      { field: 'store.etcd.auth.passwordFile', found: `${pw} is readable (10 bytes, mode 0600) for user takeover` },
    ]);
    // Only a CA (members that need no client certificate), only auth: each alone.
    expect((await readEtcdCredentials({ tls: { ca: ca.cert } })).tls).toEqual({ ca: expect.any(Buffer) });
    expect((await readEtcdCredentials({ auth: { user: 'u', passwordFile: file('pw2', 'x') } })).auth).toEqual({ user: 'u', password: 'x' });
  });

  it('a CA bundle with an out-of-date certificate beside a current one is accepted; only out-of-date ones are not', async () => {
    const old = await makeCa(dir, 'old-ca');
    const bundle = file('bundle.pem', Buffer.concat([readFileSync(old.cert), readFileSync(ca.cert)]));
    expect((await readEtcdCredentials({ tls: { ca: bundle } })).found[0]!.found).toMatch(/2 certificates/);
    const in3Days = Date.now() + 3 * 86_400_000;
    expect(await refused({ tls: { ca: bundle } }, in3Days)).toMatch(/^store\.etcd\.tls\.ca: .*bundle\.pem: every certificate is out of date \(expired on .*; expired on /);
    expect(await refused({ tls: { ca: ca.cert } }, in3Days)).toMatch(/^store\.etcd\.tls\.ca: .*ca\.crt: the certificate \(CN=ca\) expired on \d{4}/);
    expect(await refused({ tls: { ca: ca.cert } }, Date.now() - 3 * 86_400_000)).toMatch(/is not valid before/);
  });

  it.each<[string, () => Parameters<typeof readEtcdCredentials>[0], RegExp]>([
    ['a missing CA', () => ({ tls: { ca: path.join(dir, 'nope.pem') } }), /^store\.etcd\.tls\.ca: .*nope\.pem does not exist$/],
    ['a directory as the CA', () => ({ tls: { ca: dir } }), /^store\.etcd\.tls\.ca: .* is a directory$/],
    ['a CA file that is no certificate', () => ({ tls: { ca: file('junk.pem', 'hello\n') } }), /^store\.etcd\.tls\.ca: .*junk\.pem holds no PEM certificate/],
    ['a CA whose PEM does not parse', () => ({ tls: { ca: file('bad.pem', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n') } }), /^store\.etcd\.tls\.ca: .*bad\.pem: certificate 1 does not parse/],
    ['a key given as the certificate', () => ({ tls: { ...tls(), cert: client.key } }), /^store\.etcd\.tls\.cert: .*client\.key holds no PEM certificate/],
    ['a certificate given as the key', () => ({ tls: { ...tls(), key: client.cert } }), /^store\.etcd\.tls\.key: .*client\.crt is not a PEM private key/],
    ['the key of another certificate', () => ({ tls: { ...tls(), key: other.key } }), /^store\.etcd\.tls\.key: .*other\.key is not the key of the certificate in .*client\.crt \(CN=node-a\)$/],
    ['a missing key', () => ({ tls: { ...tls(), key: path.join(dir, 'missing.key') } }), /^store\.etcd\.tls\.key: .*missing\.key does not exist$/],
    ['a missing password file', () => ({ auth: { user: 'u', passwordFile: path.join(dir, 'missing.pw') } }), /^store\.etcd\.auth\.passwordFile: .*missing\.pw does not exist$/],
    ['an empty password file', () => ({ auth: { user: 'u', passwordFile: file('empty.pw', '\n') } }), /^store\.etcd\.auth\.passwordFile: .*empty\.pw is empty$/],
    ['a password that is not UTF-8', () => ({ auth: { user: 'u', passwordFile: file('latin1.pw', Buffer.from([0x70, 0xe9, 0x0a])) } }), /^store\.etcd\.auth\.passwordFile: .*latin1\.pw is not UTF-8 text/],
  ])('%s is named by its field', async (_what, etcd, message) => {
    expect(await refused(etcd())).toMatch(message);
  });

  it('an encrypted key is named: no passphrase can be given', async () => {
    const encrypted = path.join(dir, 'encrypted.key');
    await run('openssl', ['pkey', '-in', client.key, '-out', encrypted, '-aes256', '-passout', 'pass:secret']);
    expect(await refused({ tls: { ...tls(), key: encrypted } })).toMatch(/^store\.etcd\.tls\.key: .*encrypted\.key is encrypted: give the key unencrypted/);
  });
});

describe('the files at the agent\'s start and in agent --check (host checks), and for the CLI', () => {
  const config = (etcd: Record<string, unknown>) => validateConfig({
    cluster: 'c', node: 'a', database: 'd', key: '0123456789abcdef', control: path.join(dir, 'run', 'a.sock'),
    heartbeat: { links: [{ id: 0, address: '127.0.0.1', port: 7400 }] }, notify: { host: '127.0.0.1', port: 0 },
    store: { etcd: { endpoints: ['https://127.0.0.1:2379'], ...etcd } },
  }, 'x.yaml');

  it('each file is listed with what holds; the first that does not is a HostCheckError naming its field', async () => {
    const pw = file('agent.pw', 'secret\n');
    const checked = await checkHost(config({ tls: tls(), auth: { user: 'takeover', passwordFile: pw } }), 'x.yaml');
    expect(checked.slice(-3).map((h) => h.field)).toEqual(['store.etcd.tls.ca', 'store.etcd.tls.cert', 'store.etcd.auth.passwordFile']);
    const err = await checkHost(config({ tls: { ...tls(), key: other.key } }), 'x.yaml').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(HostCheckError);
    expect((err as Error).message).toMatch(/^x\.yaml: store\.etcd\.tls\.key: .*other\.key is not the key of the certificate .*\(a host-specific check, made on this host only\)$/);
  });

  it('openClusterStore (the CLI\'s and the agent\'s) names the config file and the field before it connects', async () => {
    await expect(openClusterStore(config({ tls: { ca: path.join(dir, 'gone.pem') } }), '/etc/takeover/a.yaml')).rejects.toThrow(/^\/etc\/takeover\/a\.yaml: store\.etcd\.tls\.ca: .*gone\.pem does not exist$/);
    const store = await openClusterStore(config({ tls: tls(), auth: { user: 'takeover', passwordFile: file('cli.pw', 'secret') } }));
    expect(store.location).toBe('etcd https://127.0.0.1:2379');
    await store.close();
  });
});

describe('the etcd engine refuses what cannot work before connecting', () => {
  const ok = () => ({ cluster: 'c', endpoints: ['https://127.0.0.1:2379'], tls: { ca: Buffer.from('') } });
  it.each<[string, Record<string, unknown>, RegExp]>([
    ['https without tls', { tls: undefined }, /endpoint https:\/\/127\.0\.0\.1:2379 is not http:\/\/ADDRESS:PORT \(https:\/\/ needs tls: at least the CA/],
    ['http with tls', { endpoints: ['http://127.0.0.1:2379'] }, /endpoint http:\/\/127\.0\.0\.1:2379 is not https:\/\/ADDRESS:PORT \(with tls every endpoint is https:\/\/\)/],
    ['a certificate without its key', { tls: { ca: Buffer.from(''), cert: Buffer.from('') } }, /tls\.cert and tls\.key go together/],
    ['an empty password', { auth: { user: 'u', password: '' } }, /auth needs a user and a password/],
  ])('%s', (_what, over, message) => {
    const base = { ...ok(), tls: { ca: readFileSync(ca.cert) } };
    expect(() => new EtcdBackend({ ...base, ...over } as never)).toThrow(message);
  });

  it('a key that is not the certificate\'s is refused when the client is made', () => {
    const pem = (f: string) => readFileSync(f);
    expect(() => new EtcdBackend({ ...ok(), tls: { ca: pem(ca.cert), cert: pem(client.cert), key: pem(other.key) } })).toThrow(/the TLS certificates or key cannot be used: .*key values mismatch/);
  });
});
