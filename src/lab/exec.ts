// Running commands for the lab: every process the lab starts goes through here (execa), and every
// failure becomes a LabCommandError that names the command line, its exit code and its stderr.
//
// Nothing here touches the machine's own network namespace: kernel changes are made with
// `ip -n <netns> ...` or `ip netns exec <netns> ...` against namespaces the lab created.

import { readdir } from 'node:fs/promises';
import { execa } from 'execa';

export const NETNS_DIR = '/run/netns';

export class LabError extends Error {
  override name = 'LabError';
}

export class LabCommandError extends LabError {
  override name = 'LabCommandError';
  readonly command: string;
  readonly exitCode: number | undefined;
  readonly stderr: string;
  readonly stdout: string;
  constructor(context: string, command: string, exitCode: number | undefined, stderr: string, stdout: string, detail?: string) {
    const why = exitCode === undefined ? (detail ?? 'failed to run') : `exit code ${exitCode}`;
    const err = stderr.trim() || stdout.trim();
    super(`${context}: \`${command}\` failed (${why})${err ? `: ${err}` : ''}`);
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
    this.stdout = stdout;
  }
}

export interface RunOptions {
  /** Text written to the command's stdin. */
  input?: string;
  /** Extra environment variables (the current environment is kept). */
  env?: Record<string, string>;
  /** What the command was for, put in front of the error message. */
  context?: string;
  /** Do not throw on a non-zero exit; return it instead. */
  reject?: boolean;
  timeoutMs?: number;
}

export interface RunResult {
  command: string;
  exitCode: number;
  stdout: string;
  stderr: string;
}

function quote(arg: string): string {
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

export function formatCommand(argv: readonly string[]): string {
  return argv.map(quote).join(' ');
}

/** Runs argv[0] with the rest as arguments. Throws LabCommandError unless `reject: false`. */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (!file) throw new LabError('run: empty command');
  const command = formatCommand(argv);
  const result = await execa(file, args, {
    input: opts.input ?? '',
    env: opts.env,
    reject: false,
    stripFinalNewline: false,
    timeout: opts.timeoutMs,
    forceKillAfterDelay: 1000,
  });
  const stdout = String(result.stdout ?? '');
  const stderr = String(result.stderr ?? '');
  const failed = result.failed || result.exitCode !== 0;
  if (failed && opts.reject !== false) {
    const detail = result.timedOut
      ? `timed out after ${opts.timeoutMs} ms`
      : result.signal
        ? `killed by ${result.signal}`
        : (result.originalMessage ?? undefined);
    throw new LabCommandError(
      opts.context ?? 'lab command',
      command,
      result.timedOut || result.signal ? undefined : result.exitCode,
      stderr,
      stdout,
      detail,
    );
  }
  return { command, exitCode: result.exitCode ?? -1, stdout, stderr };
}

/** `ip netns exec <netns> argv...`: runs a command with the namespace as its network namespace. */
export function runInNetns(netns: string, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(['ip', 'netns', 'exec', netns, ...argv], opts);
}

/** Runs several `ip` commands against one namespace in a single process (`ip -n <netns> -batch -`). */
export async function ipBatch(netns: string | undefined, lines: readonly string[], context: string): Promise<void> {
  if (lines.length === 0) return;
  const argv = netns === undefined ? ['ip', '-batch', '-'] : ['ip', '-n', netns, '-batch', '-'];
  await run(argv, { input: lines.join('\n') + '\n', context: `${context} (ip batch:\n  ${lines.join('\n  ')}\n)` });
}

/** Sets sysctls inside a namespace (one process). */
export async function setSysctls(netns: string, values: Record<string, string>, context: string): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
  if (args.length === 0) return;
  await runInNetns(netns, ['sysctl', '-q', '-w', ...args], { context });
}

/** Names of all named network namespaces (the files under /run/netns). */
export async function listNetns(): Promise<string[]> {
  try {
    return (await readdir(NETNS_DIR)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Pids of the processes whose network namespace is `netns`. */
export async function netnsPids(netns: string): Promise<number[]> {
  const r = await run(['ip', 'netns', 'pids', netns], { reject: false });
  if (r.exitCode !== 0) return [];
  return r.stdout
    .split(/\s+/)
    .filter((s) => /^[0-9]+$/.test(s))
    .map(Number);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Ends the given processes: SIGTERM, then SIGKILL after `graceMs`. Only ever called with pids read
 * from a lab namespace (`ip netns pids`), i.e. processes running inside the lab.
 */
/**
 * Sends `signal` to each pid, skipping those already gone (an agent's children, its ipset
 * session and its NFLOG reader, end with it, between a listing and the signal).
 */
export function signalPids(pids: readonly number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }
}

export async function killPids(pids: readonly number[], graceMs = 1500): Promise<number[]> {
  const own = new Set([process.pid]);
  const targets = pids.filter((p) => !own.has(p) && p > 1);
  for (const pid of targets) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && targets.some(alive)) await sleep(20);
  for (const pid of targets.filter(alive)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  const killDeadline = Date.now() + 1000;
  while (Date.now() < killDeadline && targets.some(alive)) await sleep(20);
  return targets;
}
