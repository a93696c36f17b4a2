// A real nginx (Debian package nginx) inside a lab host, serving a directory of static files,
// started for a test and stopped after it (even on failure: the lab's destroy() kills every
// process left in its namespaces). Two hosts serving the same directory give the same strong
// ETag for a file (nginx makes it from the file's mtime and size), as nodes on a shared disk do.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Lab } from '../../src/lab/lab.js';
import { exited, run } from '../../src/lab/exec.js';

export interface NginxServer {
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Starts nginx in `host`, listening on `listen` (`PORT` or `ADDRESS:PORT`), serving `root`; waits until it accepts. */
export async function startNginx(lab: Lab, host: string, listen: string, root: string): Promise<NginxServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'tko-nginx-'));
  const conf = path.join(dir, 'nginx.conf');
  const temp = (name: string) => `${name}_temp_path ${path.join(dir, name)};`;
  writeFileSync(
    conf,
    `user root; worker_processes 1; daemon off; pid ${path.join(dir, 'nginx.pid')}; error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; keepalive_timeout 300s; keepalive_requests 100000;
  ${temp('client_body')} ${temp('proxy')} ${temp('fastcgi')} ${temp('uwsgi')} ${temp('scgi')}
  server { listen ${listen}; root ${root}; }
}
`,
  );
  const ns = lab.host(host).ns;
  const child = spawn('ip', ['netns', 'exec', ns, 'nginx', '-c', conf, '-p', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const port = Number(listen.slice(listen.lastIndexOf(':') + 1));
  const address = listen.includes(':') ? listen.slice(0, listen.lastIndexOf(':')) : '127.0.0.1';
  const stop = async () => {
    // Its worker first (the master's child: a SIGKILLed master leaves it running), then the master.
    if (child.pid !== undefined) await run('pkill', ['-KILL', '-P', String(child.pid)]).catch(() => undefined);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited(child);
    rmSync(dir, { recursive: true, force: true });
  };
  for (const deadline = Date.now() + 10_000; ; ) {
    const up = await run('ip', ['netns', 'exec', ns, 'bash', '-c', `exec 3<>/dev/tcp/${address}/${port}`]).then(() => true, () => false);
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`nginx did not start in ${host} on ${listen} (Debian package nginx; \`npm test\` installs it): ${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { process: child, stop };
}
