// The files that an etcd store's TLS and auth name (`store.etcd.tls.ca`, `.cert`, `.key`,
// `store.etcd.auth.passwordFile`), read and checked for what their field says they are: what
// the agent (at its start, and `agent --check`) and the CLI's store commands hand to the etcd
// engine. A config that validates names files; this says whether they work, naming the field.
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';

/** The part of the config's `store.etcd` read here (paths are absolute: the schema says so). */
export interface EtcdSecurityConfig {
  tls?: { ca: string; cert?: string | undefined; key?: string | undefined } | undefined;
  auth?: { user: string; passwordFile: string } | undefined;
}

/** A file that cannot be read or is not what its field says; `field` is its path in the config (`store.etcd.tls.ca`). */
export class CredentialFileError extends Error {
  override readonly name = 'CredentialFileError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
  }
}

export interface EtcdCredentials {
  /** PEM bytes for EtcdBackendOptions.tls. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  auth?: { user: string; password: string };
  /** What holds of each file, for `agent --check`. */
  found: Array<{ field: string; found: string }>;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

async function read(field: string, file: string): Promise<{ bytes: Buffer; mode: string }> {
  try {
    const [bytes, s] = await Promise.all([readFile(file), stat(file)]);
    return { bytes, mode: (s.mode & 0o7777).toString(8).padStart(4, '0') };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CredentialFileError(field, code === 'ENOENT' ? `${file} does not exist` : code === 'EISDIR' ? `${file} is a directory` : `cannot read ${file}: ${code ?? (err as Error).message}`);
  }
}

const day = (t: string) => new Date(t).toISOString().slice(0, 10);

/** The PEM certificates in `bytes`, each parsed; throws naming the field when there is none or one does not parse. */
function certificates(field: string, file: string, bytes: Buffer): X509Certificate[] {
  const blocks = bytes.toString('latin1').match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new CredentialFileError(field, `${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new CredentialFileError(field, `${file}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

/** Why `cert` cannot be used at `now`, or undefined. */
function outOfDate(cert: X509Certificate, now: number): string | undefined {
  if (Date.parse(cert.validTo) < now) return `expired on ${day(cert.validTo)}`;
  if (Date.parse(cert.validFrom) > now) return `is not valid before ${day(cert.validFrom)}`;
  return undefined;
}

const subject = (cert: X509Certificate) => cert.subject.replace(/\n/g, ', ');

/**
 * Reads and checks the TLS files (the CA's certificates, this client's certificate and its key:
 * PEM, in date, the key the certificate's and unencrypted) and the password file (its bytes
 * without one final line ending, as the heartbeat's keyFile; not empty; UTF-8). Resolves with
 * their contents and what was found; rejects with CredentialFileError naming the first field
 * that does not hold. Nothing is checked against etcd here (the store's first call does that).
 */
export async function readEtcdCredentials(etcd: EtcdSecurityConfig, now = Date.now()): Promise<EtcdCredentials> {
  const out: EtcdCredentials = { found: [] };
  if (etcd.tls) {
    const t = etcd.tls;
    const ca = await read('store.etcd.tls.ca', t.ca);
    const authorities = certificates('store.etcd.tls.ca', t.ca, ca.bytes);
    // A bundle may keep an old CA beside the new one (a rotation): one in date is enough.
    const current = authorities.filter((c) => outOfDate(c, now) === undefined);
    if (current.length === 0) throw new CredentialFileError('store.etcd.tls.ca', `${t.ca}: ${authorities.length === 1 ? `the certificate (${subject(authorities[0]!)}) ${outOfDate(authorities[0]!, now)}` : `every certificate is out of date (${authorities.map((c) => outOfDate(c, now)).join('; ')})`}`);
    out.found.push({ field: 'store.etcd.tls.ca', found: `${t.ca}: ${authorities.length} certificate${authorities.length > 1 ? 's' : ''} (${subject(current[0]!)}, valid until ${day(current[0]!.validTo)})` });
    out.tls = { ca: ca.bytes };
    if (t.cert !== undefined && t.key !== undefined) {
      const cert = await read('store.etcd.tls.cert', t.cert);
      const leaf = certificates('store.etcd.tls.cert', t.cert, cert.bytes)[0]!; // the client's own comes first; the rest is its chain
      const late = outOfDate(leaf, now);
      if (late) throw new CredentialFileError('store.etcd.tls.cert', `${t.cert}: the certificate (${subject(leaf)}) ${late}`);
      const key = await read('store.etcd.tls.key', t.key);
      // (PKCS#8's and OpenSSL's traditional headers of an encrypted key.)
      if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(key.bytes.toString('latin1'))) {
        throw new CredentialFileError('store.etcd.tls.key', `${t.key} is encrypted: give the key unencrypted (no passphrase can be given; the file's mode keeps it secret)`);
      }
      let privateKey: KeyObject;
      try {
        privateKey = createPrivateKey(key.bytes);
      } catch (err) {
        throw new CredentialFileError('store.etcd.tls.key', `${t.key} is not a PEM private key: ${(err as Error).message}`);
      }
      if (!leaf.checkPrivateKey(privateKey)) throw new CredentialFileError('store.etcd.tls.key', `${t.key} is not the key of the certificate in ${t.cert} (${subject(leaf)})`);
      out.found.push({ field: 'store.etcd.tls.cert', found: `${t.cert}: ${subject(leaf)}, valid until ${day(leaf.validTo)}, with its key ${t.key} (mode ${key.mode})` });
      out.tls.cert = cert.bytes;
      out.tls.key = key.bytes;
    }
  }
  if (etcd.auth) {
    const field = 'store.etcd.auth.passwordFile';
    const { bytes: raw, mode } = await read(field, etcd.auth.passwordFile);
    const end = raw.length - (raw.at(-1) === 0x0a ? (raw.at(-2) === 0x0d ? 2 : 1) : 0);
    if (end === 0) throw new CredentialFileError(field, `${etcd.auth.passwordFile} is empty`);
    let password: string;
    try {
      password = new TextDecoder('utf-8', { fatal: true }).decode(raw.subarray(0, end));
    } catch {
      throw new CredentialFileError(field, `${etcd.auth.passwordFile} is not UTF-8 text (etcd's passwords are strings)`);
    }
    out.auth = { user: etcd.auth.user, password };
    out.found.push({ field, found: `${etcd.auth.passwordFile} is readable (${Buffer.byteLength(password)} bytes, mode ${mode}) for user ${etcd.auth.user}` });
  }
  return out;
}
