// A lab built from manifests: Nodes, Pods and their ports become namespaces, CNI attachments
// and servers; one agent per node enforces the folder's objects; the folder is re-read to add,
// remove or re-address pods while the lab runs. The lab runs in a cluster's order (kubelet.ts):
// the agents watch what the API would serve (`source`), where a new pod appears before its
// sandbox, gets its IP only a status report after its CNI ADD (bridge, host-local,
// policyctl-cni), and stays until its CNI DEL has run.

import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { buildModel, loadManifests } from '../manifests/load.ts';
import type { Model } from '../model/store.ts';
import { folderRevision } from '../watchers/files.ts';
import { LabError } from './exec.ts';
import { spawn } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { createLab, openLab, startInNode, type AddPodOptions, type LabOptions } from './lab.ts';
import { DEFAULT_STATUS_DELAY_MS, LabKubelet, labPods, type KubeletStatus } from './kubelet.ts';
import { nodeBinary } from './processes.ts';
import type { LabNodeSpec, LabSpec } from './spec.ts';
import type { LabState } from './state.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'policyctl.js');

/** What `lab up` records beside the lab's state: where its manifests are, how its agents run. */
export interface ClusterInfo {
  readonly manifests: string;
  /** What the agents watch: the folder's objects as the API serves them (see kubelet.ts). */
  readonly source: string;
  /** Between a pod's CNI ADD and its IP reaching the source. */
  readonly statusDelayMs: number;
  readonly agents: readonly AgentInfo[];
  /** The `lab watch` process that attaches and detaches pods as the folder changes. */
  readonly watcherPid?: number;
  /** Written by the watcher whenever the source changes (KubeletStatus): the folder revision the pods match, the source revision. */
  readonly watcherStatusFile: string;
}

/** Everything `lab up` adds to the lab's directory lives in this subfolder. */
function clusterDir(lab: LabState): string {
  return join(lab.dir, 'cluster');
}

export interface AgentInfo {
  readonly node: string;
  readonly statusFile: string;
  readonly logFile: string;
  readonly resyncInterval: string;
  /** The folder it watches (the cluster's source). */
  readonly source: string;
  /** The node's CNI socket, which policyctl-cni in the node's conflist asks. */
  readonly cniSocket: string;
  readonly podCIDR: string;
  /** More `policyctl agent` flags (e.g. `--revoke-established`). */
  readonly extraArgs?: readonly string[];
  /** The agent's health server (/readyz, /metrics, /drops) as a unix socket, reachable from outside the node's namespace. */
  readonly healthSocket?: string;
}

/** Start (or restart) the agent of one node: a real `policyctl agent` process in the node's namespace. */
export function startAgent(lab: LabState, a: AgentInfo): Promise<number> {
  return startInNode(
    lab,
    a.node,
    [
      ...[nodeBinary(), '--no-warnings', BIN, 'agent', '--node', a.node, '--manifests', a.source, '--status-file', a.statusFile, '--resync-interval', a.resyncInterval],
      ...['--cni-socket', a.cniSocket, '--pod-cidr', a.podCIDR],
      ...(a.healthSocket ? ['--health-addr', `unix:${a.healthSocket}`, '--drop-log-interval', '2s'] : []),
      ...(a.extraArgs ?? []),
    ],
    { logName: `agent-${a.node}`, readyLine: false },
  );
}

export function clusterInfoFile(lab: LabState): string {
  return join(clusterDir(lab), 'cluster.json');
}

export async function readClusterInfo(lab: LabState): Promise<ClusterInfo> {
  try {
    return JSON.parse(await readFile(clusterInfoFile(lab), 'utf8')) as ClusterInfo;
  } catch (e) {
    throw new LabError(`lab ${lab.name} was not made by \`policyctl lab up\` (no ${clusterInfoFile(lab)}): ${(e as Error).message}`);
  }
}

export async function loadFolder(dir: string): Promise<{ model: Model; errors: string[] }> {
  const r = await loadManifests([dir]);
  return { model: buildModel(r), errors: r.diagnostics.filter((d) => d.severity === 'error').map((d) => `${d.file}: ${d.message}`) };
}

/**
 * Nodes from Node objects (spec.podCIDR), or, without any, one node per spec.nodeName with
 * podCIDRs 10.244.1.0/24, 10.244.2.0/24, ... in name order.
 */
export function labNodes(model: Model): LabNodeSpec[] {
  const nodes = [...model.allNodes()].filter((n) => n.podCIDRs.length > 0).sort((a, b) => (a.name < b.name ? -1 : 1));
  if (nodes.length) return nodes.map((n) => ({ name: n.name, podCIDR: n.podCIDRs[0]!, ...(n.internalIPs[0] ? { ip: n.internalIPs[0] } : {}) }));
  const names = [...new Set([...model.allPods()].flatMap((p) => (p.nodeName ? [p.nodeName] : [])))].sort();
  if (names.length > 254) throw new LabError(`too many nodes for the default podCIDRs: ${names.length}`);
  return names.map((name, i) => ({ name, podCIDR: `10.244.${i + 1}.0/24` }));
}

export interface UpOptions {
  readonly name: string;
  readonly manifests: string;
  readonly stateDir?: string;
  readonly log?: (line: string) => void;
  /** Bound on waiting for the agents' first apply. */
  readonly timeoutMs?: number;
  readonly resyncInterval?: string;
  /** Between a pod's CNI ADD and its IP reaching the agents' source (kubelet's status report). Default 500 ms. */
  readonly statusDelayMs?: number;
  /** policyctl-cni's timeoutSeconds in the conflists. Default 10. */
  readonly cniTimeoutSeconds?: number;
  /**
   * false: no `lab watch` process; `labUp` returns the kubelet, and the caller reconciles the
   * folder itself (`kubelet.reconcile()`), in process (tests, with `addPodOptions`).
   */
  readonly watch?: boolean;
  readonly addPodOptions?: AddPodOptions;
  /** Ports served by the external host (the switch namespace's address). */
  readonly externalPorts?: LabSpec['externalPorts'];
  /** More `policyctl agent` flags, per node name (e.g. `{ n1: ['--revoke-established'] }`). */
  readonly agentArgs?: Readonly<Record<string, readonly string[]>>;
  /** Services on kube-proxy IPVS mode's path (LabSpec.serviceProxy). */
  readonly serviceProxy?: LabSpec['serviceProxy'];
}

/**
 * Build a lab from a folder, in a cluster's order: nodes; the folder's objects in the agents'
 * source (pods pending, without IP); one agent per node (`--cni-socket`, `--pod-cidr`); then the
 * pods, each through CNI ADD (bridge, host-local, policyctl-cni), its IP published a status
 * report later. Returns once the agents have applied it all.
 */
export async function labUp(o: UpOptions): Promise<{ lab: LabState; skipped: string[]; kubelet?: LabKubelet }> {
  const log = o.log ?? (() => {});
  const manifests = resolve(o.manifests);
  const { model, errors } = await loadFolder(manifests);
  for (const e of errors) log(`warning: ${e}`);
  const nodes = labNodes(model);
  if (nodes.length === 0) throw new LabError(`no nodes in ${manifests}: give Node objects with spec.podCIDR, or pods with spec.nodeName`);
  const { skipped } = labPods(model, nodes);
  const opts: LabOptions = { log };
  const lab = await createLab({ name: o.name, nodes, pods: [], policyCni: { timeoutSeconds: o.cniTimeoutSeconds ?? 10 }, ...(o.externalPorts ? { externalPorts: o.externalPorts } : {}), ...(o.stateDir ? { stateDir: o.stateDir } : {}), ...(o.serviceProxy ? { serviceProxy: o.serviceProxy } : {}) }, opts);
  const timeoutMs = o.timeoutMs ?? 30_000;
  await mkdir(clusterDir(lab), { recursive: true });
  const source = join(clusterDir(lab), 'source');
  const watcherStatusFile = join(clusterDir(lab), 'watcher.json');
  const statusDelayMs = o.statusDelayMs ?? DEFAULT_STATUS_DELAY_MS;
  const kubelet = new LabKubelet({ lab, manifests, source, statusFile: watcherStatusFile, statusDelayMs, log, ...(o.addPodOptions ? { addPodOptions: o.addPodOptions } : {}) });
  await kubelet.publishObjects();
  const agents: AgentInfo[] = [];
  for (const n of lab.nodes) {
    const agent: AgentInfo = {
      node: n.name,
      statusFile: join(clusterDir(lab), `agent-${n.name}.json`),
      logFile: join(lab.dir, 'logs', `agent-${n.name}.log`),
      resyncInterval: o.resyncInterval ?? '5s',
      source,
      cniSocket: n.cniSocket!,
      podCIDR: n.podCIDR,
      healthSocket: join(clusterDir(lab), `agent-${n.name}.http`),
      ...(o.agentArgs?.[n.name] ? { extraArgs: o.agentArgs[n.name] } : {}),
    };
    log(`lab ${lab.name}: agent on ${n.name}`);
    await startAgent(lab, agent);
    agents.push(agent);
  }
  let info: ClusterInfo = { manifests, source, statusDelayMs, agents, watcherStatusFile };
  // The agents serve their CNI sockets from the start; ready means they have applied the source.
  await waitAgents(lab, info, timeoutMs);
  if (o.watch === false) {
    await kubelet.reconcile();
  } else {
    const watcherPid = await startWatcher(lab, o.stateDir);
    info = { ...info, watcherPid };
  }
  await writeFile(clusterInfoFile(lab), JSON.stringify(info, null, 2) + '\n');
  await waitApplied(lab, info, timeoutMs);
  const current = await openLab(lab.name, o.stateDir ? { stateDir: o.stateDir } : {});
  return { lab: current, skipped, ...(o.watch === false ? { kubelet } : {}) };
}

/** Wait (bounded) until every agent reports ready. */
async function waitAgents(lab: LabState, info: ClusterInfo, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: AgentReport[] = [];
  while (Date.now() < end) {
    last = await agentReports(info);
    if (last.every((r) => r.ready)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new LabError(`agents of lab ${lab.name} not ready within ${timeoutMs} ms: ${last.filter((r) => !r.ready).map((r) => `${r.node} (${r.reasons.join('; ')})`).join(', ')}; see ${info.agents.map((a) => a.logFile).join(', ')}`);
}

export interface AgentReport {
  readonly node: string;
  readonly revision: string;
  readonly ready: boolean;
  readonly reasons: readonly string[];
}

export async function agentReports(info: ClusterInfo): Promise<AgentReport[]> {
  return Promise.all(
    info.agents.map(async (a) => {
      try {
        const s = JSON.parse(await readFile(a.statusFile, 'utf8')) as AgentReport & { updatedAt?: string; resyncMs?: number };
        // The agent rewrites its status at least every resync interval: a file that stopped
        // changing belongs to an agent that is gone (killed, hung), whatever it last said.
        const age = s.updatedAt ? Date.now() - Date.parse(s.updatedAt) : 0;
        const limit = 3 * (s.resyncMs ?? 10_000) + 5_000;
        if (age > limit) return { node: a.node, revision: s.revision, ready: false, reasons: [`agent status not updated for ${Math.round(age / 1000)} s: the agent is down or stuck`] };
        return { node: a.node, revision: s.revision, ready: s.ready, reasons: s.reasons };
      } catch {
        return { node: a.node, revision: '', ready: false, reasons: ['no status yet'] };
      }
    }),
  );
}

async function watcherStatus(info: ClusterInfo): Promise<KubeletStatus | undefined> {
  try {
    return JSON.parse(await readFile(info.watcherStatusFile, 'utf8')) as KubeletStatus;
  } catch {
    return undefined;
  }
}

/**
 * Wait (bounded) until the pods match the folder (every pod started or stopped, its IP
 * reported) and every agent has applied the source that results.
 */
export async function waitApplied(lab: LabState, info: ClusterInfo, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: AgentReport[] = [];
  let w: KubeletStatus | undefined;
  let rev = '';
  while (Date.now() < end) {
    rev = await folderRevision(info.manifests);
    last = await agentReports(info);
    w = await watcherStatus(info);
    if (w && w.revision === rev && w.settled && last.every((r) => r.revision === w!.source && r.ready)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  const lagging = last.filter((r) => r.revision !== w?.source || !r.ready).map((r) => `${r.node} (applied ${r.revision || 'nothing'}; ${r.reasons.join('; ') || 'no reason given'})`);
  if (!w || w.revision !== rev || !w.settled) {
    const gone = info.watcherPid !== undefined && !processAlive(info.watcherPid) ? `, its process ${info.watcherPid} is not running` : '';
    lagging.push(`the pod watcher (reconciled ${w?.revision || 'nothing'}${w && !w.settled ? ', not settled' : ''}${gone}${w?.error ? `: ${w.error}` : ''}; see ${join(lab.dir, 'logs', 'watcher.log')})`);
  }
  throw new LabError(`agents of lab ${lab.name} did not apply ${info.manifests} (revision ${rev}) within ${timeoutMs} ms: ${lagging.join(', ')}; see ${info.agents.map((a) => a.logFile).join(', ')}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Start `policyctl lab watch` in the background (root namespace); returns its pid. */
async function startWatcher(lab: LabState, stateDir?: string): Promise<number> {
  await mkdir(join(lab.dir, 'logs'), { recursive: true });
  const log = await open(join(lab.dir, 'logs', 'watcher.log'), 'a');
  const child = spawn(nodeBinary(), ['--no-warnings', BIN, 'lab', 'watch', '--name', lab.name, ...(stateDir ? ['--state-dir', stateDir] : [])], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd],
  });
  child.unref();
  await log.close();
  if (!child.pid) throw new LabError(`cannot start the pod watcher of lab ${lab.name}`);
  return child.pid;
}

/**
 * The watcher loop (the lab's kubelet, kubelet.ts): whenever the folder's content changes,
 * publish it to the agents' source, attach new pods, detach removed ones, re-attach moved or
 * re-addressed ones; retry a second after a failure (a kubelet retries a failed ADD or DEL).
 * Runs until the lab is gone or the process is signalled.
 */
export async function watchLab(name: string, stateDir: string | undefined, log: (l: string) => void, signal?: AbortSignal): Promise<void> {
  let kubelet: LabKubelet | undefined;
  let retryAt = 0;
  while (!signal?.aborted) {
    let lab: LabState;
    try {
      lab = await openLab(name, stateDir ? { stateDir } : {});
    } catch {
      log(`lab ${name} is gone; the watcher stops`);
      kubelet?.stop();
      return;
    }
    const info = await readClusterInfo(lab).catch(() => undefined);
    if (info) {
      kubelet ??= new LabKubelet({ lab, manifests: info.manifests, source: info.source, statusFile: info.watcherStatusFile, statusDelayMs: info.statusDelayMs, log });
      const rev = await folderRevision(info.manifests);
      if (rev !== kubelet.reconciled && Date.now() >= retryAt) {
        try {
          await kubelet.reconcile();
          retryAt = 0;
        } catch (e) {
          retryAt = Date.now() + 1_000;
          log(`reconciling the pods of lab ${name} failed (retrying in 1 s): ${(e as Error).message}`);
        }
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  kubelet?.stop();
}

/** Stop the watcher of a lab, if it runs. */
export function stopWatcher(info: ClusterInfo): void {
  if (!info.watcherPid) return;
  try {
    process.kill(info.watcherPid, 'SIGTERM');
  } catch {
    /* already gone */
  }
}
