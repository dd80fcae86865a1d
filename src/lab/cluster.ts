// A lab built from manifests: Nodes, Pods and their ports become namespaces, CNI attachments
// and servers; one agent per node enforces the same folder; the folder is re-read to add,
// remove or re-address pods while the lab runs.

import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { buildModel, loadManifests } from '../manifests/load.ts';
import type { Model } from '../model/store.ts';
import { isEnforceable, type PodRecord } from '../model/types.ts';
import { folderRevision } from '../watchers/files.ts';
import { LabError } from './exec.ts';
import { spawn } from 'node:child_process';
import { mkdir, open } from 'node:fs/promises';
import { addPod, createLab, findNode, openLab, removePod, startInNode, type LabOptions } from './lab.ts';
import { nodeBinary } from './processes.ts';
import type { LabNodeSpec, LabPodSpec } from './spec.ts';
import type { LabState } from './state.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'policyctl.js');

/** What `lab up` records beside the lab's state: where its manifests are, how its agents run. */
export interface ClusterInfo {
  readonly manifests: string;
  readonly agents: readonly AgentInfo[];
  /** The `lab watch` process that attaches and detaches pods as the folder changes. */
  readonly watcherPid?: number;
  /** Written by the watcher after each reconcile: the folder revision the pods match. */
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
}

/** Start (or restart) the agent of one node: a real `policyctl agent` process in the node's namespace. */
export function startAgent(lab: LabState, manifests: string, a: AgentInfo): Promise<number> {
  return startInNode(
    lab,
    a.node,
    [nodeBinary(), '--no-warnings', BIN, 'agent', '--node', a.node, '--manifests', manifests, '--status-file', a.statusFile, '--resync-interval', a.resyncInterval],
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

/** Pods the lab can run: enforceable, scheduled on a lab node, with status.podIP. */
export function labPods(model: Model, nodes: readonly LabNodeSpec[]): { pods: LabPodSpec[]; skipped: string[] } {
  const known = new Set(nodes.map((n) => n.name));
  const pods: LabPodSpec[] = [];
  const skipped: string[] = [];
  const all = [...model.allPods()].sort((a, b) => (`${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1));
  for (const p of all) {
    const key = `${p.namespace}/${p.name}`;
    if (!isEnforceable(p)) skipped.push(`${key}: not enforceable (hostNetwork, no IP, or finished)`);
    else if (!p.nodeName || !known.has(p.nodeName)) skipped.push(`${key}: spec.nodeName ${JSON.stringify(p.nodeName ?? null)} is not a lab node`);
    else pods.push(podSpec(p));
  }
  return { pods, skipped };
}

function podSpec(p: PodRecord): LabPodSpec {
  return { namespace: p.namespace, name: p.name, node: p.nodeName!, ip: p.ips[0]!, ports: p.ports.map((c) => ({ port: c.containerPort, protocol: c.protocol })) };
}

export interface UpOptions {
  readonly name: string;
  readonly manifests: string;
  readonly stateDir?: string;
  readonly log?: (line: string) => void;
  /** Bound on waiting for the agents' first apply. */
  readonly timeoutMs?: number;
  readonly resyncInterval?: string;
}

export async function labUp(o: UpOptions): Promise<{ lab: LabState; skipped: string[] }> {
  const log = o.log ?? (() => {});
  const manifests = resolve(o.manifests);
  const { model, errors } = await loadFolder(manifests);
  for (const e of errors) log(`warning: ${e}`);
  const nodes = labNodes(model);
  if (nodes.length === 0) throw new LabError(`no nodes in ${manifests}: give Node objects with spec.podCIDR, or pods with spec.nodeName`);
  const { pods, skipped } = labPods(model, nodes);
  const opts: LabOptions = { log };
  const lab = await createLab({ name: o.name, nodes, pods, ...(o.stateDir ? { stateDir: o.stateDir } : {}) }, opts);
  const agents: AgentInfo[] = [];
  await mkdir(clusterDir(lab), { recursive: true });
  for (const n of lab.nodes) {
    const agent = { node: n.name, statusFile: join(clusterDir(lab), `agent-${n.name}.json`), logFile: join(lab.dir, 'logs', `agent-${n.name}.log`), resyncInterval: o.resyncInterval ?? '5s' };
    log(`lab ${lab.name}: agent on ${n.name}`);
    await startAgent(lab, manifests, agent);
    agents.push(agent);
  }
  const watcherStatusFile = join(clusterDir(lab), 'watcher.json');
  await writeFile(watcherStatusFile, JSON.stringify({ revision: await folderRevision(manifests) }) + '\n');
  const watcherPid = await startWatcher(lab, o.stateDir);
  const info: ClusterInfo = { manifests, agents, watcherPid, watcherStatusFile };
  await writeFile(clusterInfoFile(lab), JSON.stringify(info, null, 2) + '\n');
  await waitApplied(lab, info, o.timeoutMs ?? 30_000);
  return { lab, skipped };
}

/** Add, remove or re-address lab pods so they match the folder. Returns what changed. */
export async function reconcilePods(lab: LabState, info: ClusterInfo, log: (l: string) => void = () => {}): Promise<string[]> {
  const { model } = await loadFolder(info.manifests);
  const nodes = lab.nodes.map((n) => ({ name: n.name, podCIDR: n.podCIDR }));
  const { pods } = labPods(model, nodes);
  const want = new Map(pods.map((p) => [`${p.namespace}/${p.name}`, p]));
  const changes: string[] = [];
  for (const have of [...lab.pods]) {
    const w = want.get(have.key);
    const same =
      w && w.node === have.node && w.ip === have.ip && JSON.stringify((w.ports ?? []).map((p) => `${p.port}/${p.protocol}`).sort()) === JSON.stringify(have.ports.map((p) => `${p.port}/${p.protocol}`).sort());
    if (!same) {
      await removePod(lab, have.key);
      changes.push(`removed ${have.key}`);
      log(`lab ${lab.name}: removed pod ${have.key}`);
    }
  }
  for (const [key, p] of want) {
    if (lab.pods.some((q) => q.key === key)) continue;
    findNode(lab, p.node);
    await addPod(lab, p);
    changes.push(`added ${key}`);
    log(`lab ${lab.name}: added pod ${key} (${p.ip} on ${p.node})`);
  }
  return changes;
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

async function watcherRevision(info: ClusterInfo): Promise<string> {
  try {
    return (JSON.parse(await readFile(info.watcherStatusFile, 'utf8')) as { revision: string }).revision;
  } catch {
    return '';
  }
}

/** Wait (bounded) until the pods match the folder and every agent has applied its content. */
export async function waitApplied(lab: LabState, info: ClusterInfo, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last: AgentReport[] = [];
  let pods = '';
  while (Date.now() < end) {
    const rev = await folderRevision(info.manifests);
    last = await agentReports(info);
    pods = await watcherRevision(info);
    if (pods === rev && last.every((r) => r.revision === rev && r.ready)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  const rev = await folderRevision(info.manifests);
  const lagging = last.filter((r) => r.revision !== rev || !r.ready).map((r) => `${r.node} (applied ${r.revision || 'nothing'}; ${r.reasons.join('; ') || 'no reason given'})`);
  if (pods !== rev) lagging.push(`the pod watcher (reconciled ${pods || 'nothing'}; see ${join(lab.dir, 'logs', 'watcher.log')})`);
  throw new LabError(`agents of lab ${lab.name} did not apply ${info.manifests} (revision ${rev}) within ${timeoutMs} ms: ${lagging.join(', ')}; see ${info.agents.map((a) => a.logFile).join(', ')}`);
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
 * The watcher loop: whenever the folder's content changes, attach new pods, detach removed
 * ones, re-attach moved or re-addressed ones, then record the revision the pods now match.
 * Runs until the lab is gone or the process is signalled.
 */
export async function watchLab(name: string, stateDir: string | undefined, log: (l: string) => void, signal?: AbortSignal): Promise<void> {
  let done = '';
  while (!signal?.aborted) {
    let lab: LabState;
    try {
      lab = await openLab(name, stateDir ? { stateDir } : {});
    } catch {
      log(`lab ${name} is gone; the watcher stops`);
      return;
    }
    const info = await readClusterInfo(lab).catch(() => undefined);
    if (info) {
      const rev = await folderRevision(info.manifests);
      if (rev !== done) {
        try {
          const changes = await reconcilePods(lab, info, log);
          await writeFile(info.watcherStatusFile, JSON.stringify({ revision: rev, changes }) + '\n');
          done = rev;
        } catch (e) {
          log(`reconciling the pods of lab ${name} failed (retrying): ${(e as Error).message}`);
        }
      }
    }
    await new Promise((r) => setTimeout(r, 300));
  }
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
