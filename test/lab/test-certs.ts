// Certificates for tests, made at test time with the openssl command (no key or certificate is
// kept in the repository): a CA, and leaf certificates it signs, for a server (with the
// addresses it answers on as subjectAltNames) or a client (mutual TLS). EC P-256 keys, valid
// for one day, PEM files in a directory the caller owns and removes.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../../src/lab/exec.js';

export interface TestCa {
  /** The CA's certificate (PEM): what a peer trusts. */
  cert: string;
  key: string;
  dir: string;
  name: string;
}

export interface TestCert {
  cert: string;
  key: string;
}

const openssl = async (args: string[]) => {
  try {
    await run('openssl', args);
  } catch (err) {
    throw new Error(`openssl ${args[0]} failed (is the openssl command installed?): ${(err as Error).message}`);
  }
};

/** A self-signed CA `name` in `dir` (`name.crt`, `name.key`). */
export async function makeCa(dir: string, name: string): Promise<TestCa> {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
    '-days', '1', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert, key, dir, name };
}

/**
 * A certificate `name` signed by `ca`, in the CA's directory (`name.crt`, `name.key`). `ips`
 * (and `dns`) become subjectAltNames: a server's addresses, which a client checks. `cn`: the
 * subject's common name (default `name`; etcd takes a client certificate's CN as its user when
 * a request carries no token).
 */
export async function issueCert(ca: TestCa, name: string, options: { ips?: string[]; dns?: string[]; cn?: string; usage?: 'server' | 'client' | 'both' } = {}): Promise<TestCert> {
  const cert = path.join(ca.dir, `${name}.crt`);
  const key = path.join(ca.dir, `${name}.key`);
  const csr = path.join(ca.dir, `${name}.csr`);
  const ext = path.join(ca.dir, `${name}.ext`);
  const sans = [...(options.ips ?? []).map((a) => `IP:${a}`), ...(options.dns ?? []).map((d) => `DNS:${d}`)];
  const usage = { server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth' }[options.usage ?? 'both'];
  writeFileSync(ext, [`basicConstraints=critical,CA:FALSE`, `keyUsage=critical,digitalSignature,keyEncipherment`, `extendedKeyUsage=${usage}`, ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : [])].join('\n') + '\n');
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${options.cn ?? name}`]);
  await openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '1', '-extfile', ext]);
  return { cert, key };
}
