// The lab's kubelet and API server, in the order a cluster has them. The user's folder is what
// was applied (`kubectl apply`); the agents watch another folder, the source: what the API
// server holds and serves them.
//
// - A pod written to the folder appears in the source at once, scheduled (spec.nodeName) but
//   without status.podIP, phase Pending: the API has the object before kubelet runs its sandbox.
// - The kubelet then creates the pod's namespace and runs the node's conflist (bridge with
//   host-local, then policyctl-cni, which returns once the node's agent enforces the pod), starts
//   its processes, and only `statusDelayMs` later (kubelet's status report) the source gets the
//   pod's IP, which is how the other nodes' agents learn it.
// - A pod removed from the folder stays in the source until its processes are stopped and CNI
//   DEL has run (the agent drops the address before host-local releases it); then it leaves.
// - A pod whose ADD fails is torn down and retried by the next reconcile, as a kubelet retries.
//
// Everything else in the folder goes to the source as it is, file by file; a file that stops
// parsing keeps its last good content there (what the API would still hold). Lab pods live in
// the source's `_lab-pods/pods.yaml`.

import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { buildModel, listManifestFiles, parseManifests, type LoadedObject } from '../manifests/load.ts';
import type { Model } from '../model/store.ts';
import { isEnforceable, type PodRecord } from '../model/types.ts';
import { folderRevision } from '../watchers/files.ts';
import { addPod, openLab, removePod, type AddPodOptions } from './lab.ts';
import type { LabNodeSpec, LabPodSpec } from './spec.ts';
import type { LabPod, LabState } from './state.ts';

/** Where the lab's pods go in the source folder. */
export const LAB_PODS_DIR = '_lab-pods';
/** Default delay between a pod's CNI ADD and its IP reaching the source (kubelet's status report). */
export const DEFAULT_STATUS_DELAY_MS = 500;

export interface KubeletOptions {
  readonly lab: LabState;
  /** The user's folder. */
  readonly manifests: string;
  /** The folder the agents watch. */
  readonly source: string;
  /** Rewritten whenever the source changes: `{revision, source, settled}` (see `KubeletStatus`). */
  readonly statusFile: string;
  readonly statusDelayMs?: number;
  readonly log?: (line: string) => void;
  /** Passed to `addPod` (tests: probers from the first instant). */
  readonly addPodOptions?: AddPodOptions;
  /** How pods are started and stopped (tests substitute their own); default the lab's addPod and removePod. */
  readonly ops?: { readonly addPod: typeof addPod; readonly removePod: typeof removePod };
}

/** What `waitApplied` reads: the folder revision reconciled, the source revision written, and whether anything is still on its way. */
export interface KubeletStatus {
  readonly revision: string;
  readonly source: string;
  /** No pod waiting for its status report, no reconcile running or failed. */
  readonly settled: boolean;
  readonly changes?: readonly string[];
  readonly error?: string;
}

interface UserFile {
  readonly hash: string;
  /** Each document's value (null for an empty or unreadable one). */
  readonly values: readonly unknown[];
  readonly objects: readonly LoadedObject[];
}

const sha256 = (t: string) => createHash('sha256').update(t).digest('hex');
const keyOf = (p: { namespace: string; name: string }) => `${p.namespace}/${p.name}`;

export class LabKubelet {
  private lab: LabState;
  private readonly o: KubeletOptions;
  private readonly files = new Map<string, UserFile>();
  /** The last document seen for each lab pod (it stays in the source while the pod is torn down). */
  private readonly podDocs = new Map<string, unknown>();
  /** Pod key -> the IP the source reports for it (after its status report). */
  private readonly published = new Map<string, string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** What this kubelet wrote to the source, by path (files found there at first are included: they go when the folder no longer has them). */
  private readonly written = new Map<string, string>();
  private scanned = false;
  private writing: Promise<void> = Promise.resolve();
  /** Status writes, serialized: two at once would share the temporary file (and the loser's rename fail). */
  private statusWriting: Promise<void> = Promise.resolve();
  /** Status reports whose source write has not finished (their timers have already fired). */
  private publishing = 0;
  private reconciling = false;
  private lastError: string | undefined;
  /** The last failure to publish a pod's IP (retried by its timer). */
  private publishError: string | undefined;
  private changes: string[] = [];
  /** The folder revision last reconciled without error. */
  reconciled = '';

  constructor(o: KubeletOptions) {
    this.o = o;
    this.lab = o.lab;
  }

  get delayMs(): number {
    return this.o.statusDelayMs ?? DEFAULT_STATUS_DELAY_MS;
  }

  /** Read the folder and write the source (no pod started or stopped). */
  async publishObjects(): Promise<void> {
    await this.read();
    await this.writeSource();
  }

  /**
   * Bring the lab's pods and the source in line with the folder, in a cluster's order. Returns
   * what changed; throws (after doing everything it could) when a pod could not be started or
   * stopped: the next call retries.
   */
  async reconcile(): Promise<string[]> {
    const log = this.o.log ?? (() => {});
    this.reconciling = true;
    const revision = await folderRevision(this.o.manifests);
    const changes: string[] = [];
    const errors: string[] = [];
    try {
      this.lab = await openLab(this.lab.name, { stateDir: dirname(this.lab.dir) });
      const wanted = await this.read();
      // Pods running since before this kubelet (a restarted watcher) were reported long ago.
      for (const p of this.lab.pods) if (!p.unmanaged && p.ip && !this.published.has(p.key) && !this.timers.has(p.key)) this.published.set(p.key, p.ip);
      // The API has every pod now: new ones pending, departing ones still there.
      await this.writeSource();
      for (const have of this.lab.pods.filter((p) => !p.unmanaged)) {
        const w = wanted.get(have.key);
        const same =
          w && w.node === have.node && w.ip === have.ip && JSON.stringify((w.ports ?? []).map((p) => `${p.port}/${p.protocol}`).sort()) === JSON.stringify(have.ports.map((p) => `${p.port}/${p.protocol}`).sort());
        if (same) continue;
        try {
          await (this.o.ops ?? { removePod }).removePod(this.lab, have.key); // processes, CNI DEL, namespace
        } catch (e) {
          errors.push(`removing pod ${have.key}: ${(e as Error).message}`);
          continue;
        }
        clearTimeout(this.timers.get(have.key));
        this.timers.delete(have.key);
        this.published.delete(have.key);
        if (!w) this.podDocs.delete(have.key);
        await this.writeSource(); // only now does the pod leave the source (or lose its IP)
        changes.push(`removed ${have.key}`);
        log(`lab ${this.lab.name}: removed pod ${have.key}`);
      }
      // One pod at a time per node, nodes side by side.
      const todo = [...wanted.values()].filter((p) => !this.lab.pods.some((q) => q.key === keyOf(p)));
      await Promise.all(
        this.lab.nodes.map(async (n) => {
          for (const spec of todo.filter((p) => p.node === n.name)) {
            const key = keyOf(spec);
            let pod: LabPod;
            try {
              pod = await (this.o.ops ?? { addPod }).addPod(this.lab, spec, this.o.addPodOptions);
            } catch (e) {
              errors.push(`adding pod ${key}: ${(e as Error).message}`);
              continue;
            }
            changes.push(`added ${key}`);
            log(`lab ${this.lab.name}: added pod ${key} (${pod.ip} on ${pod.node}; CNI ADD ${pod.timeline?.added && pod.timeline.created ? pod.timeline.added - pod.timeline.created : '?'} ms)`);
            this.scheduleStatus(key, pod.ip);
          }
        }),
      );
      this.lastError = errors.length ? errors.join('\n') : undefined;
      if (!errors.length) this.reconciled = revision;
      this.changes = changes;
    } catch (e) {
      this.lastError = (e as Error).message;
      throw e;
    } finally {
      this.reconciling = false;
      await this.writeStatus();
    }
    if (errors.length) throw new Error(errors.join('\n'));
    return changes;
  }

  /** Stop the pending status reports (the kubelet goes away). */
  stop(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  status(): Promise<KubeletStatus> {
    return this.statusNow();
  }

  private scheduleStatus(key: string, ip: string): void {
    clearTimeout(this.timers.get(key));
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.published.set(key, ip);
      // Until its source write is done the report is in flight: a status written meanwhile (by
      // another pod's report) must not say settled before this IP is in the source.
      this.publishing++;
      // A timer has no caller to reject to: a failure is logged, shown in the status and retried
      // (the timer stays, so the status is not settled), never an unhandled rejection, which
      // would end the watcher process.
      this.writeSource()
        .finally(() => this.publishing--)
        .then(() => {
          this.publishError = undefined;
          return this.writeStatus();
        })
        .catch((e: unknown) => {
          this.publishError = `publishing the IP of pod ${key}: ${(e as Error).message}`;
          (this.o.log ?? (() => {}))(`${this.publishError} (retrying)`);
          this.scheduleStatus(key, ip);
          return this.writeStatus().catch(() => {});
        });
    }, this.delayMs);
    this.timers.set(key, t);
  }

  /** Read the folder (last good content of files that do not parse); returns the lab pods it wants. */
  private async read(): Promise<Map<string, LabPodSpec>> {
    const names = await listManifestFiles(this.o.manifests, []);
    const seen = new Set<string>();
    for (const file of names) {
      if (relative(this.o.manifests, file).startsWith(`${LAB_PODS_DIR}/`)) continue;
      seen.add(file);
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue; // unreadable: keep what we had
      const hash = sha256(text);
      const prev = this.files.get(file);
      if (prev?.hash === hash) continue;
      const parsed = parseManifests(text, file);
      const broken = parsed.diagnostics.some((d) => d.severity === 'error' && !d.ref);
      if (broken && prev) continue; // keeps its last good objects, as the API would
      if (prev && prev.objects.length > 0 && text.trim() === '') continue; // mid-write
      const values = parseAllDocuments(text, { version: '1.2', schema: 'core' });
      this.files.set(file, { hash, values: (Array.isArray(values) ? values : []).map((d) => (d.errors.length ? null : d.toJS())), objects: parsed.objects });
    }
    for (const f of [...this.files.keys()]) if (!seen.has(f)) this.files.delete(f);
    const model = buildModel({ objects: [...this.files.values()].flatMap((f) => f.objects) });
    const nodes = this.lab.nodes.map((n) => ({ name: n.name, podCIDR: n.podCIDR }));
    const { pods } = labPods(model, nodes);
    const wanted = new Map(pods.map((p) => [keyOf(p), p]));
    for (const f of this.files.values()) {
      for (const o of f.objects) {
        if (o.record.kind === 'Pod' && wanted.has(keyOf(o.record))) this.podDocs.set(keyOf(o.record), valueAt(f, o));
      }
    }
    return wanted;
  }

  /** Pods the lab starts or stops: their documents are the kubelet's to publish. */
  private managed(): Set<string> {
    const out = new Set<string>();
    for (const f of this.files.values()) for (const o of f.objects) if (o.record.kind === 'Pod' && this.podDocs.has(keyOf(o.record))) out.add(keyOf(o.record));
    for (const p of this.lab.pods) if (!p.unmanaged) out.add(p.key);
    return out;
  }

  /** Write the source: every file without the lab's pods, and the lab's pods as they stand. Serialized. */
  private writeSource(): Promise<void> {
    const next = this.writing.then(() => this.writeSourceNow());
    this.writing = next.catch(() => {});
    return next;
  }

  private async writeSourceNow(): Promise<void> {
    if (!this.scanned) {
      for (const f of await listManifestFiles(this.o.source, [])) this.written.set(f, '\0(found on disk)');
      this.scanned = true;
    }
    const managed = this.managed();
    const out = new Map<string, string>();
    for (const [file, f] of this.files) {
      const values: unknown[] = [];
      const dropped = new Map<number, Set<number | undefined>>();
      for (const o of f.objects) {
        if (o.record.kind !== 'Pod' || !managed.has(keyOf(o.record))) continue;
        let s = dropped.get(o.index);
        if (!s) dropped.set(o.index, (s = new Set()));
        s.add(o.item);
      }
      f.values.forEach((v, i) => {
        const drop = dropped.get(i);
        if (v === null || v === undefined) return;
        if (!drop) values.push(v);
        else if (!drop.has(undefined)) values.push({ ...(v as object), items: ((v as { items: unknown[] }).items ?? []).filter((_x, j) => !drop.has(j)) });
      });
      out.set(join(this.o.source, relative(this.o.manifests, file)), values.map((v) => stringify(v)).join('---\n'));
    }
    const pods: unknown[] = [];
    for (const key of [...managed].sort()) {
      const doc = this.podDocs.get(key);
      if (doc !== undefined) pods.push(withStatus(doc, this.published.get(key)));
    }
    out.set(join(this.o.source, LAB_PODS_DIR, 'pods.yaml'), pods.map((v) => stringify(v)).join('---\n'));
    for (const [path, text] of out) {
      if (this.written.get(path) === text) continue;
      await mkdir(dirname(path), { recursive: true });
      const tmp = join(dirname(path), `.${Date.now()}.${Math.random().toString(36).slice(2)}.tmp`);
      await writeFile(tmp, text);
      await rename(tmp, path);
      this.written.set(path, text);
    }
    for (const path of [...this.written.keys()]) {
      if (out.has(path)) continue;
      await rm(path, { force: true });
      this.written.delete(path);
    }
  }

  private async statusNow(): Promise<KubeletStatus> {
    await this.writing;
    return {
      revision: this.reconciled,
      source: await folderRevision(this.o.source),
      settled: !this.reconciling && this.timers.size === 0 && this.publishing === 0 && this.lastError === undefined,
      ...(this.changes.length ? { changes: this.changes } : {}),
      ...(this.lastError || this.publishError ? { error: [this.lastError, this.publishError].filter(Boolean).join('\n') } : {}),
    };
  }

  private writeStatus(): Promise<void> {
    const next = this.statusWriting.then(async () => {
      const s = await this.statusNow();
      const tmp = `${this.o.statusFile}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(s) + '\n');
      await rename(tmp, this.o.statusFile);
    });
    this.statusWriting = next.catch(() => {});
    return next;
  }
}

function valueAt(f: UserFile, o: LoadedObject): unknown {
  const v = f.values[o.index];
  return o.item === undefined ? v : (v as { items: unknown[] }).items[o.item];
}

/** A pod document as the API serves it: with its IP once kubelet reported it, else Pending without one. */
function withStatus(doc: unknown, ip: string | undefined): unknown {
  const d = structuredClone(doc) as { status?: Record<string, unknown> };
  const status = { ...(d.status ?? {}) };
  if (ip) {
    status['podIP'] = ip;
    status['podIPs'] = [{ ip }];
    status['phase'] ??= 'Running';
  } else {
    delete status['podIP'];
    delete status['podIPs'];
    status['phase'] = 'Pending';
  }
  return { ...d, status };
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
