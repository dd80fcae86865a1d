// policyctl-cni: a chained CNI plugin, listed after the bridge/host-local (flannel) plugins in
// the node's conflist. The container runtime runs it with the pod's IPs in `prevResult`; it asks
// the node's policyctl agent, over a unix socket, to program that pod, and reports success only
// once the agent says the pod is enforced (ADD returns when policy is in force).
//
// Invariants:
// - ADD never succeeds with the pod unenforced: no agent, a timeout, an agent that cannot find
//   the pod, an answer it cannot read: each is a CNI error naming the cause (exit code 1), and
//   the runtime retries.
// - DEL reaches the agent before the address is released (the runtime runs a conflist in reverse
//   on DEL, so this plugin's DEL runs before host-local's): the agent drops the address from
//   every set and deletes its conntrack entries before DEL returns. With no agent reachable, DEL
//   fails (the runtime retries and host-local keeps the address) unless there is nothing to undo:
//   no address known for the sandbox (no prevResult).
// - Startup is on the pod's critical path: this file imports node:net and node:fs only.
//
// Config (one entry of the conflist's "plugins"):
//   { "type": "policyctl-cni", "socket": "/run/policyctl/cni.sock", "timeoutSeconds": 10 }
// Protocol (one request per connection, one JSON line each way; the native front end, which
// forwards a whole call for the agent to run here, has its own: src/cni/shim/policyctl-cni.c):
//   -> {"v":1,"command":"ADD","namespace":"ns","name":"pod","containerId":"…","ips":["10.244.1.5"],"timeoutMs":9500}
//   <- {"ok":true} | {"ok":false,"code":11,"msg":"…"}

import { readFileSync, writeSync } from 'node:fs';
import { connect } from 'node:net';

export const DEFAULT_SOCKET = '/run/policyctl/cni.sock';
export const DEFAULT_TIMEOUT_SECONDS = 10;
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const LATEST = '1.1.0';

/** CNI error codes (spec, "Error codes"); 100 and above are this plugin's own. */
export const CNI_ERROR = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  notAvailable: 50,
  /** The agent refused the pod for good (bound to another node, hostNetwork, finished). */
  refused: 100,
} as const;

export type AgentCommand = 'ADD' | 'DEL' | 'CHECK' | 'STATUS';

export interface AgentRequest {
  readonly v: 1;
  readonly command: AgentCommand;
  readonly namespace?: string;
  readonly name?: string;
  /** K8S_POD_UID when the runtime passes it. */
  readonly uid?: string;
  readonly containerId?: string;
  /** The sandbox's IPv4 addresses (from prevResult), without prefix length. */
  readonly ips?: readonly string[];
  /** The agent must answer within this long. */
  readonly timeoutMs: number;
}

export type AgentReply = { readonly ok: true; readonly detail?: string } | { readonly ok: false; readonly code: number; readonly msg: string; readonly details?: string };

export interface PluginInput {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdin: string;
}

export interface PluginOutput {
  readonly stdout: string;
  /** Diagnostics for the runtime's log (CNI leaves stderr to the plugin). */
  readonly stderr: string;
  readonly exitCode: number;
}

class CniError extends Error {
  readonly code: number;
  readonly details: string | undefined;
  constructor(code: number, msg: string, details?: string) {
    super(msg);
    this.code = code;
    this.details = details;
  }
}

interface PluginConfig {
  readonly cniVersion: string;
  readonly name?: string;
  readonly socket: string;
  readonly timeoutMs: number;
  readonly prevResult?: unknown;
}

/** KEY=VALUE;KEY=VALUE (CNI_ARGS). */
export function parseCniArgs(text: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (text ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  return out;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The IPv4 addresses of a CNI result, without prefix length: `ips[].address` (0.3.0 and later)
 * or `ip4.ip` (0.2.0). IPv6 addresses are left out (policyctl enforces IPv4).
 */
export function ipv4Addresses(result: unknown): string[] {
  const out: string[] = [];
  const add = (cidr: unknown) => {
    if (typeof cidr !== 'string') return;
    const ip = cidr.split('/')[0]!;
    if (IPV4.test(ip) && !out.includes(ip)) out.push(ip);
  };
  if (result && typeof result === 'object') {
    const r = result as { ips?: unknown; ip4?: { ip?: unknown } };
    if (Array.isArray(r.ips)) for (const e of r.ips) add((e as { address?: unknown } | null)?.address);
    add(r.ip4?.ip);
  }
  return out;
}

function parseConfig(stdin: string): PluginConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(CNI_ERROR.decodeFailure, `policyctl-cni: cannot decode the network configuration on stdin: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new CniError(CNI_ERROR.decodeFailure, 'policyctl-cni: the network configuration on stdin is not a JSON object');
  const c = raw as Record<string, unknown>;
  const cniVersion = typeof c['cniVersion'] === 'string' ? c['cniVersion'] : '0.3.0';
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(CNI_ERROR.incompatibleVersion, `policyctl-cni: cniVersion ${JSON.stringify(cniVersion)} is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`);
  }
  const socket = c['socket'] ?? DEFAULT_SOCKET;
  if (typeof socket !== 'string' || !socket.startsWith('/')) throw new CniError(CNI_ERROR.invalidConfig, `policyctl-cni: "socket" must be an absolute path, got ${JSON.stringify(socket)}`);
  const timeout = c['timeoutSeconds'] ?? DEFAULT_TIMEOUT_SECONDS;
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0 || timeout > 600) {
    throw new CniError(CNI_ERROR.invalidConfig, `policyctl-cni: "timeoutSeconds" must be a number of seconds in (0, 600], got ${JSON.stringify(timeout)}`);
  }
  return {
    cniVersion,
    ...(typeof c['name'] === 'string' ? { name: c['name'] } : {}),
    socket,
    timeoutMs: Math.round(timeout * 1000),
    ...(c['prevResult'] !== undefined ? { prevResult: c['prevResult'] } : {}),
  };
}

/** Send one request to the agent and read its one-line answer, within `timeoutMs`. */
export function askAgent(socket: string, req: AgentRequest, timeoutMs: number): Promise<AgentReply> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let done = false;
    const sock = connect({ path: socket });
    const finish = (err: CniError | undefined, reply?: AgentReply) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => finish(new CniError(CNI_ERROR.tryAgainLater, `the policyctl agent at ${socket} did not answer within ${secs(timeoutMs)} (timeoutSeconds in the conflist)`)),
      timeoutMs,
    );
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      try {
        const reply = JSON.parse(buf.slice(0, nl)) as AgentReply;
        if (typeof reply !== 'object' || reply === null || typeof reply.ok !== 'boolean') throw new Error('not a reply object');
        finish(undefined, reply);
      } catch (e) {
        finish(new CniError(CNI_ERROR.ioFailure, `cannot read the policyctl agent's answer on ${socket}: ${(e as Error).message}`));
      }
    });
    sock.on('end', () => finish(new CniError(CNI_ERROR.tryAgainLater, `the policyctl agent at ${socket} closed the connection without an answer (restarting?)`)));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const why =
        e.code === 'ENOENT'
          ? `no policyctl agent on this node: ${socket} does not exist (is the policyctl DaemonSet running here?)`
          : e.code === 'ECONNREFUSED'
            ? `no policyctl agent listening on ${socket} (the agent is not running)`
            : `cannot reach the policyctl agent on ${socket}: ${e.code ?? e.message}`;
      finish(new CniError(CNI_ERROR.tryAgainLater, why));
    });
  });
}

/** Seconds with at most one decimal, for messages. */
const secs = (ms: number) => `${Math.round(ms / 100) / 10} s`;

/** Time the agent gets, leaving the plugin a margin to receive its answer before its own deadline. */
export function agentBudget(timeoutMs: number): number {
  return Math.max(1, timeoutMs - Math.min(500, Math.round(timeoutMs / 10)));
}

/** How a request reaches the agent: over its socket (this process), or in the agent itself. */
export type AskAgent = (socket: string, req: AgentRequest, timeoutMs: number) => Promise<AgentReply>;

/**
 * Run one CNI command. Pure apart from `ask`: tests call it with their own env and stdin, and the
 * agent runs it for the native front end (src/cni/shim), asking itself.
 */
export async function runPlugin(input: PluginInput, ask: AskAgent = askAgent): Promise<PluginOutput> {
  const env = input.env;
  const command = env['CNI_COMMAND'] ?? '';
  let cniVersion = LATEST;
  try {
    if (command === 'VERSION') {
      let requested = LATEST;
      try {
        const v = (JSON.parse(input.stdin || '{}') as { cniVersion?: unknown }).cniVersion;
        if (typeof v === 'string' && (SUPPORTED_VERSIONS as readonly string[]).includes(v)) requested = v;
      } catch {
        /* VERSION needs no config */
      }
      return ok(JSON.stringify({ cniVersion: requested, supportedVersions: SUPPORTED_VERSIONS }) + '\n');
    }
    if (!['ADD', 'DEL', 'CHECK', 'STATUS', 'GC'].includes(command)) {
      throw new CniError(CNI_ERROR.invalidEnvironment, `policyctl-cni: CNI_COMMAND must be ADD, DEL, CHECK, STATUS, GC or VERSION, got ${JSON.stringify(command)}`);
    }
    const conf = parseConfig(input.stdin);
    cniVersion = conf.cniVersion;
    if (command === 'GC') return ok(''); // the agent keeps no per-attachment state a runtime must collect
    if (command === 'STATUS') {
      const reply = await ask(conf.socket, { v: 1, command: 'STATUS', timeoutMs: agentBudget(conf.timeoutMs) }, conf.timeoutMs).catch((e: unknown) => {
        throw new CniError(CNI_ERROR.notAvailable, `policyctl-cni: ${(e as Error).message}`);
      });
      if (!reply.ok) throw new CniError(CNI_ERROR.notAvailable, `policyctl-cni: the policyctl agent is not ready: ${reply.msg}`);
      return ok('');
    }
    const containerId = env['CNI_CONTAINERID'] ?? '';
    if (!containerId) throw new CniError(CNI_ERROR.invalidEnvironment, 'policyctl-cni: CNI_CONTAINERID is not set');
    const args = parseCniArgs(env['CNI_ARGS']);
    const namespace = args.get('K8S_POD_NAMESPACE') ?? '';
    const name = args.get('K8S_POD_NAME') ?? '';
    const uid = args.get('K8S_POD_UID');
    const pod = namespace && name ? `pod ${namespace}/${name}` : `container ${containerId}`;
    const ips = ipv4Addresses(conf.prevResult);
    const base = { v: 1 as const, containerId, ...(namespace ? { namespace } : {}), ...(name ? { name } : {}), ...(uid ? { uid } : {}), ips };

    if (command === 'DEL') {
      let reply: AgentReply;
      try {
        reply = await ask(conf.socket, { ...base, command: 'DEL', timeoutMs: agentBudget(conf.timeoutMs) }, conf.timeoutMs);
      } catch (e) {
        // Nothing known to undo: no address reached this plugin (ADD never got this far, or the
        // runtime keeps no result). Succeed, or a sandbox could never be torn down without an agent.
        if (ips.length === 0) return { stdout: '', stderr: `policyctl-cni: DEL of ${pod}: no address known and ${(e as Error).message}; nothing to undo\n`, exitCode: 0 };
        throw new CniError((e as CniError).code ?? CNI_ERROR.tryAgainLater, `policyctl-cni: DEL of ${pod} (${ips.join(', ')}): ${(e as Error).message}; the address stays allocated until the agent confirms`);
      }
      if (!reply.ok) throw new CniError(reply.code, `policyctl-cni: DEL of ${pod}: ${reply.msg}`, reply.details);
      return ok('');
    }

    // ADD and CHECK need the pod and its addresses.
    if (!namespace || !name) {
      throw new CniError(CNI_ERROR.invalidEnvironment, `policyctl-cni: CNI_ARGS lacks K8S_POD_NAMESPACE or K8S_POD_NAME (got ${JSON.stringify(env['CNI_ARGS'] ?? '')}): policyctl enforces Kubernetes pods, and a container it cannot name stays cut off`);
    }
    if (conf.prevResult === undefined) {
      throw new CniError(CNI_ERROR.invalidConfig, `policyctl-cni: no prevResult for ${pod}: list policyctl-cni after the plugins that give the pod its address (bridge/host-local) in a conflist`);
    }
    if (ips.length === 0) throw new CniError(CNI_ERROR.invalidConfig, `policyctl-cni: prevResult of ${pod} has no IPv4 address (policyctl enforces IPv4): ${JSON.stringify(conf.prevResult)}`);
    const reply = await ask(conf.socket, { ...base, command: command as 'ADD' | 'CHECK', timeoutMs: agentBudget(conf.timeoutMs) }, conf.timeoutMs).catch((e: unknown) => {
      throw new CniError((e as CniError).code ?? CNI_ERROR.tryAgainLater, `policyctl-cni: ${command} of ${pod} (${ips.join(', ')}): ${(e as Error).message}; the pod is not enforced, so it gets no network`);
    });
    if (!reply.ok) throw new CniError(reply.code, `policyctl-cni: ${command} of ${pod} (${ips.join(', ')}): ${reply.msg}`, reply.details);
    if (command === 'CHECK') return ok('');
    const result = conf.prevResult as Record<string, unknown>;
    return ok(JSON.stringify({ ...result, cniVersion: typeof result['cniVersion'] === 'string' ? result['cniVersion'] : conf.cniVersion }) + '\n');
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(CNI_ERROR.ioFailure, `policyctl-cni: ${e instanceof Error ? e.message : String(e)}`);
    return errorOutput(cniVersion, err.code, err.message, err.details);
  }
}

/** A CNI error result: the error object on stdout, the message on stderr, exit code 1. */
export function errorOutput(cniVersion: string, code: number, msg: string, details?: string): PluginOutput {
  return {
    stdout: JSON.stringify({ cniVersion, code, msg, ...(details ? { details } : {}) }) + '\n',
    stderr: `${msg}\n`,
    exitCode: 1,
  };
}

function ok(stdout: string): PluginOutput {
  return { stdout, stderr: '', exitCode: 0 };
}

/** The executable's body: stdin, env and stdout of this process. */
export async function main(): Promise<number> {
  let stdin = '';
  try {
    stdin = readFileSync(0, 'utf8');
  } catch {
    /* VERSION may come without stdin */
  }
  const out = await runPlugin({ env: process.env, stdin });
  if (out.stdout) writeSync(1, out.stdout);
  if (out.stderr) writeSync(2, out.stderr);
  return out.exitCode;
}
