// Long-lived processes inside lab namespaces (the pod servers), started so that they outlive the
// process that created the lab: `policyctl lab up` exits, the servers stay until `lab down`,
// which finds them with `ip netns pids` (so it needs no pid file either).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatCommand, LabError } from './exec.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
export const SERVER_SCRIPT = join(HERE, 'server.ts');
export const PROBER_SCRIPT = join(HERE, 'prober.ts');
/** IPVS-path mode's transparent proxy (Python: IP_TRANSPARENT needs setsockopt, which Node lacks). */
export const IPVS_PROXY_SCRIPT = join(HERE, 'ipvs-proxy.py');

function runsTypeScript(version: string): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 6) || (major === 22 && minor >= 18);
}

/**
 * A Node binary that runs .ts files directly: $POLICYCTL_LAB_NODE, else this process's own when
 * it strips types by default (22.18+, 23.6+), else the project's node_modules/node (Node 24).
 */
export function nodeBinary(): string {
  const fromEnv = process.env['POLICYCTL_LAB_NODE'];
  if (fromEnv) return fromEnv;
  if (runsTypeScript(process.versions.node)) return process.execPath;
  const local = join(HERE, '..', '..', 'node_modules', 'node', 'bin', 'node');
  if (existsSync(local)) return local;
  throw new LabError(
    `Node ${process.versions.node} cannot run the lab's TypeScript scripts and ${local} is missing; set POLICYCTL_LAB_NODE to a Node 24 binary`,
  );
}

/** argv running one of the lab's scripts (server.ts, prober.ts). */
export function scriptCommand(script: string, args: readonly string[] = []): string[] {
  return [nodeBinary(), '--no-warnings', script, ...args];
}

/** argv running a lab script inside a namespace. */
export function scriptArgv(netns: string, script: string, args: readonly string[] = []): string[] {
  return ['ip', 'netns', 'exec', netns, ...scriptCommand(script, args)];
}

/**
 * Environment for the lab's scripts: Node's compile cache in the lab directory, so the many
 * short prober runs skip parsing and type stripping (about 80 ms to 30 ms a start here).
 */
export function scriptEnv(labDir: string): Record<string, string> {
  return { NODE_COMPILE_CACHE: join(labDir, NODE_CACHE_DIR) };
}

export const NODE_CACHE_DIR = 'node-cache';

export interface DaemonOptions {
  argv: string[];
  env?: Record<string, string>;
  logFile: string;
  /** How long to wait for the ready line. */
  readyTimeoutMs?: number;
  /** The stdout line that says the process is ready (default "ready"); false: started is enough, stdout goes to the log. */
  readyLine?: string | false;
  context: string;
}

/**
 * Starts argv detached (own process group, no tie to this process), with stderr appended to
 * `logFile`, and waits until it prints the ready line ("ready") on stdout. Returns its pid. On failure the process
 * is killed and the error carries the command and the log's tail.
 */
export async function startDaemon(opts: DaemonOptions): Promise<number> {
  await mkdir(dirname(opts.logFile), { recursive: true });
  const log = await open(opts.logFile, 'a');
  const [file, ...args] = opts.argv;
  const command = formatCommand(opts.argv);
  try {
    const child = spawn(file!, args, {
      detached: true,
      stdio: ['ignore', opts.readyLine === false ? log.fd : 'pipe', log.fd],
      env: { ...process.env, ...opts.env },
    });
    const readyLine = opts.readyLine === false ? undefined : `${opts.readyLine ?? 'ready'}\n`;
    const pid = await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => fail(`no ready line within ${opts.readyTimeoutMs ?? 30_000} ms`), opts.readyTimeoutMs ?? 30_000);
      const fail = (why: string) => {
        clearTimeout(timer);
        child.stdout?.removeAllListeners('data');
        child.removeAllListeners('exit');
        if (child.exitCode === null && child.pid) {
          try {
            process.kill(child.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        void readFile(opts.logFile, 'utf8')
          .catch(() => '')
          .then((text) => {
            const tail = text.trim().split('\n').slice(-10).join('\n');
            reject(new LabError(`${opts.context}: \`${command}\` ${why}${tail ? `; ${opts.logFile}:\n${tail}` : ''}`));
          });
      };
      child.once('error', (e) => fail(`could not start: ${e.message}`));
      child.once('exit', (code, signal) => fail(`exited before it was ready (${signal ?? `exit code ${code}`})`));
      const ready = () => {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        child.removeAllListeners('error');
        resolve(child.pid!);
      };
      if (readyLine === undefined) {
        child.once('spawn', ready);
        return;
      }
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (chunk: string) => {
        out += chunk;
        if (out.includes(readyLine)) ready();
      });
    });
    child.stdout?.destroy();
    child.on('error', () => {});
    child.unref();
    return pid;
  } finally {
    await log.close();
  }
}
