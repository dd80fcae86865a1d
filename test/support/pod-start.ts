// Pod start under default deny, on the real kernel, in the lab's real order (src/lab/kubelet.ts):
// pods are started one after another in namespaces whose policies deny ingress, egress or both,
// and each is probed from its first instant, in both directions, by a same-node and an
// other-node pod (one a "friend" the policies allow, one not) and by the external host, with
// continuous probers (src/lab/sentinel.ts). Every connection that succeeds is judged by the
// semantics (src/semantics) against the final objects: one that they deny is a leak. Every flow
// they allow must have worked within 1 s of the pod's network coming up (the bridge plugin's
// ADD returning; the pod's own processes start earlier here: its server and its prober run
// before the network exists): no attempt begun later than that may fail before the flow's first
// success, and it must succeed.
//
// Used by test/e2e/pod-start.test.ts and by the benchmark (bench/parts/cni.ts: pod_start_leaks).

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { agentReports, labUp, loadFolder, readClusterInfo, type ClusterInfo } from '../../src/lab/cluster.ts';
import { destroyLab, openLab } from '../../src/lab/lab.ts';
import type { LabKubelet } from '../../src/lab/kubelet.ts';
import { scriptCommand, scriptEnv } from '../../src/lab/processes.ts';
import type { LabPod, LabState } from '../../src/lab/state.ts';
import type { Model } from '../../src/model/store.ts';
import type { Protocol } from '../../src/model/types.ts';
import type { SentinelLine } from '../../src/lab/sentinel.ts';
import { allowed, type Endpoint } from '../../src/semantics/evaluate.ts';

export const SENTINEL = join(import.meta.dirname, '..', '..', 'src', 'lab', 'sentinel.ts');

export const BASE = `
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1}, spec: {podCIDR: 10.244.1.0/24}, status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}, spec: {podCIDR: 10.244.2.0/24}, status: {addresses: [{type: InternalIP, address: 192.168.50.12}]}}
- {apiVersion: v1, kind: Namespace, metadata: {name: peers}}
- {apiVersion: v1, kind: Namespace, metadata: {name: din}}
- {apiVersion: v1, kind: Namespace, metadata: {name: deg}}
- {apiVersion: v1, kind: Namespace, metadata: {name: dboth}}
${[
  ['s1', 'n1', '10.244.1.10', 'friend'],
  ['x1', 'n1', '10.244.1.11', 'other'],
  ['s2', 'n2', '10.244.2.10', 'friend'],
  ['x2', 'n2', '10.244.2.11', 'other'],
]
  .map(([n, node, ip, role]) => `- {apiVersion: v1, kind: Pod, metadata: {name: ${n}, namespace: peers, labels: {role: ${role}}}, spec: {nodeName: ${node}, containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]}, status: {phase: Running, podIP: ${ip}}}`)
  .join('\n')}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-in, namespace: din}
  spec: {podSelector: {}, policyTypes: [Ingress]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: friends-in, namespace: din}
  spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {role: friend}}}]}]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-out, namespace: deg}
  spec: {podSelector: {}, policyTypes: [Egress]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: friends-out, namespace: deg}
  spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {role: friend}}}]}]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: deny-all, namespace: dboth}
  spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
`;

export const PEERS = ['peers/s1', 'peers/x1', 'peers/s2', 'peers/x2'];
export const EXTERNAL_PORT = 8080;
const NAMESPACES = ['din', 'deg', 'dboth'];

export interface NewPod {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  readonly ip: string;
}

/** The i-th new pod: namespaces and nodes in turn, addresses from .100 up. */
export function newPod(i: number, prefix = 'p'): NewPod {
  const namespace = NAMESPACES[i % 3]!;
  const node = i % 2 === 0 ? 'n1' : 'n2';
  const name = `${prefix}${i}`;
  return { key: `${namespace}/${name}`, namespace, name, node, ip: `10.244.${node === 'n1' ? 1 : 2}.${100 + Math.floor(i / 2)}` };
}

/** A new pod declares no ports: its workload is its prober, which serves port 80 too (one process, started before its network). */
export function podYaml(p: NewPod): string {
  return `---\n{apiVersion: v1, kind: Pod, metadata: {name: ${p.name}, namespace: ${p.namespace}}, spec: {nodeName: ${p.node}, containers: [{name: c}]}, status: {phase: Running, podIP: ${p.ip}}}\n`;
}

/** One success seen by a sentinel. */
export interface Hit {
  readonly from: string; // pod key or 'external'
  readonly to: string; // pod key or 'external'
  readonly port: number;
  readonly protocol: Protocol;
  readonly t: number;
  /** When the successful attempt began (epoch ms). */
  readonly start: number;
  /** When the latest failed attempt of the same prober and target, before this success, began. */
  readonly lastFail?: number;
}

/** A sentinel process in a namespace; `lines` fill as it reports. */
class Sentinel {
  readonly lines: SentinelLine[] = [];
  private readonly child: ChildProcess;
  readonly ready: Promise<void>;
  /** Its last line (done) came, or it exited. */
  readonly finished: Promise<void>;
  readonly owner: string;
  constructor(netns: string, labDir: string, args: string[], owner: string) {
    this.owner = owner;
    this.child = spawn('ip', ['netns', 'exec', netns, ...scriptCommand(SENTINEL, ['--interval', '40', '--timeout', '250', ...args])], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, ...scriptEnv(labDir) },
    });
    let resolveReady!: () => void;
    let resolveFinished!: () => void;
    this.ready = new Promise((r) => (resolveReady = r));
    this.finished = new Promise((r) => (resolveFinished = r));
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      if (l === 'ready') return resolveReady();
      try {
        const line = JSON.parse(l) as SentinelLine;
        this.lines.push(line);
        if (line.done) resolveFinished();
      } catch {
        /* not ours */
      }
    });
    this.child.once('exit', () => {
      resolveReady();
      resolveFinished();
    });
  }
  add(id: string, ip: string, port: number, protocol: Protocol, forMs: number): void {
    this.child.stdin!.write(JSON.stringify({ add: { id, ip, port, protocol, forMs } }) + '\n');
  }
  async end(): Promise<void> {
    this.child.stdin!.end(JSON.stringify({ end: true }) + '\n');
    await this.finished;
  }
  hits(): Hit[] {
    return this.lines.filter((l) => l.id && l.t !== undefined).map((l) => ({ from: this.owner, to: l.id!, port: l.port!, protocol: l.protocol!, t: l.t!, start: l.start ?? l.t!, ...(l.lastFail !== undefined ? { lastFail: l.lastFail } : {}) }));
  }
  /** Attempts begun before their target's first success that failed after it. */
  lateFails(): { from: string; to: string; protocol: Protocol; start: number }[] {
    return this.lines.filter((l) => l.id && l.failStart !== undefined).map((l) => ({ from: this.owner, to: l.id!, protocol: l.protocol!, start: l.failStart! }));
  }
  attempts(): number {
    return this.lines.find((l) => l.done)?.attempts ?? 0;
  }
}

export interface ScenarioOptions {
  readonly name: string;
  readonly log?: (line: string) => void;
  /** How long each new pod is probed after its namespace is created. */
  readonly probeMs?: number;
  readonly resyncInterval?: string;
}

export interface PodStartReport {
  readonly pods: readonly { key: string; ip: string; node: string; created: number; networkUp: number; added: number }[];
  /** Connections the policies deny that succeeded. */
  readonly leaks: readonly (Hit & { afterNetworkUpMs: number })[];
  /**
   * Allowed flows of a new pod still broken more than 1 s after its network came up: an attempt
   * begun later than that failed before the first success (brokenMs), or none ever succeeded
   * (firstMs null). The time of the first success alone (firstMs) is not the measure: it also
   * counts how long the prober waited to be scheduled, and on a loaded machine a prober that is not
   * run tries nothing, so a late first success may follow no failure at all.
   */
  readonly slow: readonly { from: string; to: string; port: number; protocol: Protocol; firstMs: number | null; brokenMs: number | null; networkUpMs: number; addedMs: number }[];
  /** Per allowed flow of a new pod: ms from its network coming up to the first success. */
  readonly allowedFirstMs: readonly number[];
  /** Per allowed flow seen failing before its first success: ms from the network coming up to the start of the last failed attempt (negative: before it). */
  readonly allowedBrokenMs: readonly number[];
  readonly allowedFlows: number;
  readonly deniedFlows: number;
  readonly attempts: number;
  /** Every success seen. */
  readonly hits: readonly Hit[];
}

/** The lab, its in-process kubelet, and the probers. */
export class PodStartScenario {
  readonly stateDir = mkdtempSync(join(tmpdir(), 'pctl-ps-state-'));
  readonly dir = mkdtempSync(join(tmpdir(), 'pctl-ps-'));
  lab!: LabState;
  info!: ClusterInfo;
  kubelet!: LabKubelet;
  private inbound = new Map<string, Sentinel>();
  private outbound: Sentinel[] = [];
  /** New pods started through `startPod`, with the time their probing began. */
  readonly started: NewPod[] = [];
  private readonly o: ScenarioOptions;

  constructor(o: ScenarioOptions) {
    this.o = o;
  }

  /** Long enough to see the 1 s after the network came up, whatever the pod's start took before that. */
  get probeMs(): number {
    return this.o.probeMs ?? 3_000;
  }

  async up(): Promise<void> {
    writeFileSync(join(this.dir, 'base.yaml'), BASE);
    const r = await labUp({
      name: this.o.name,
      manifests: this.dir,
      stateDir: this.stateDir,
      // The agents' default: a kernel re-read every 10 s (and 1 s after each write).
      resyncInterval: this.o.resyncInterval ?? '10s',
      watch: false,
      externalPorts: [{ port: EXTERNAL_PORT }, { port: EXTERNAL_PORT, protocol: 'UDP' }],
      addPodOptions: { beforeNetwork: (pod) => this.beforeNetwork(pod) },
      ...(this.o.log ? { log: this.o.log } : {}),
    });
    this.lab = r.lab;
    this.kubelet = r.kubelet!;
    this.info = await readClusterInfo(this.lab);
    // Neighbour discovery, not policy: the probers try a new pod's address from before it exists,
    // so a peer's (or a node's, for routed traffic) ARP entry for it is still being resolved when
    // the pod comes up, and the kernel asks again only once per retrans_time (1 s by default): a
    // flow could wait up to 1 s after the pod came up for ARP alone (reproduced without any
    // policy). Here the kernel asks every 100 ms, so what is measured is the enforcement's time.
    for (const ns of [this.lab.switch.netns, ...this.lab.nodes.map((n) => n.netns), ...PEERS.map((k) => this.pod(k).netns)]) {
      execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', 'for f in /proc/sys/net/ipv4/neigh/*/retrans_time_ms; do echo 100 > "$f"; done']);
    }
    for (const key of PEERS) this.inbound.set(key, new Sentinel(this.pod(key).netns, this.lab.dir, [], key));
    this.inbound.set('external', new Sentinel(this.lab.switch.netns, this.lab.dir, [], 'external'));
    await Promise.all([...this.inbound.values()].map((s) => s.ready));
  }

  async refresh(): Promise<LabState> {
    this.lab = await openLab(this.o.name, { stateDir: this.stateDir });
    return this.lab;
  }

  pod(key: string): LabPod {
    const p = this.lab.pods.find((x) => x.key === key);
    if (!p) throw new Error(`no pod ${key} in lab ${this.lab.name}`);
    return p;
  }

  /** Called by addPod once a new pod's namespace exists, before any CNI plugin: probing starts. */
  private async beforeNetwork(pod: LabPod): Promise<void> {
    if (pod.namespace === 'peers' || pod.unmanaged) return;
    for (const s of this.inbound.values()) for (const protocol of ['TCP', 'UDP'] as const) s.add(pod.key, pod.ip, 80, protocol, this.probeMs);
    const targets = [...PEERS.map((k) => ({ id: k, ip: this.pod(k).ip, port: 80 })), { id: 'external', ip: this.lab.external.ip, port: EXTERNAL_PORT }];
    const args = targets.flatMap((t) => ['TCP', 'UDP'].flatMap((protocol) => ['--target', `${t.id},${t.ip},${t.port},${protocol},${this.probeMs}`]));
    const s = new Sentinel(pod.netns, this.lab.dir, ['--serve', `${pod.key},80`, ...args], pod.key);
    this.outbound.push(s);
    await s.ready;
  }

  /**
   * Write new pods to the folder and let the kubelet start them (rejects when an ADD fails). The
   * kubelet starts one pod at a time per node, nodes side by side.
   */
  async startPod(...pods: NewPod[]): Promise<void> {
    appendFileSync(join(this.dir, 'new-pods.yaml'), pods.map(podYaml).join(''));
    this.started.push(...pods);
    await this.kubelet.reconcile();
  }

  /**
   * Put objects other than pods into the folder (`file` in it) and wait until every agent has
   * applied the source that results.
   */
  async apply(file: string, yaml: string, timeoutMs = 30_000): Promise<void> {
    writeFileSync(join(this.dir, file), yaml);
    await this.kubelet.reconcile();
    const end = Date.now() + timeoutMs;
    for (;;) {
      const { source } = await this.kubelet.status();
      const reports = await agentReports(this.info);
      if (reports.every((r) => r.revision === source && r.ready)) return;
      if (Date.now() > end) throw new Error(`agents did not apply ${file} (source revision ${source}) within ${timeoutMs} ms: ${reports.map((r) => `${r.node} applied ${r.revision || 'nothing'}${r.ready ? '' : `, not ready: ${r.reasons.join('; ')}`}`).join(', ')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stop probing; judge every success and every allowed flow of the new pods. */
  async report(pods: readonly NewPod[] = this.started): Promise<PodStartReport> {
    await new Promise((r) => setTimeout(r, this.probeMs + 300));
    await Promise.all([...this.inbound.values()].map((s) => s.end()));
    await Promise.all(this.outbound.map((s) => s.finished));
    const hits = [...this.inbound.values(), ...this.outbound].flatMap((s) => s.hits());
    const lateFails = [...this.inbound.values(), ...this.outbound].flatMap((s) => s.lateFails());
    const attempts = [...this.inbound.values(), ...this.outbound].reduce((n, s) => n + s.attempts(), 0);
    this.inbound.clear();
    this.outbound = [];
    const lab = await this.refresh();
    const { model } = await loadFolder(this.dir);
    const verdicts = new Map<string, boolean>();
    const verdict = (from: string, to: string, port: number, protocol: Protocol) => {
      const k = `${from}|${to}|${port}/${protocol}`;
      let v = verdicts.get(k);
      if (v === undefined) verdicts.set(k, (v = allowed(model, { src: endpoint(model, lab, from), dst: endpoint(model, lab, to), port, protocol }).allowed));
      return v;
    };
    const timeline = new Map(lab.pods.map((p) => [p.key, p.timeline]));
    const upOf = (from: string, to: string) => timeline.get(pods.some((p) => p.key === from) ? from : to)?.networkUp ?? 0;
    const leaks = hits.filter((h) => !verdict(h.from, h.to, h.port, h.protocol)).map((h) => ({ ...h, afterNetworkUpMs: h.t - upOf(h.from, h.to) }));
    const slow: PodStartReport['slow'][number][] = [];
    const allowedFirstMs: number[] = [];
    const allowedBrokenMs: number[] = [];
    let allowedFlows = 0;
    let deniedFlows = 0;
    for (const p of pods) {
      const up = timeline.get(p.key)?.networkUp;
      if (!up) throw new Error(`pod ${p.key} has no network-up time: it was not started`);
      const flows: [string, string, number][] = [];
      for (const peer of PEERS) flows.push([peer, p.key, 80], [p.key, peer, 80]);
      flows.push(['external', p.key, 80], [p.key, 'external', EXTERNAL_PORT]);
      for (const [from, to, port] of flows) {
        for (const protocol of ['TCP', 'UDP'] as const) {
          if (!verdict(from, to, port, protocol)) {
            deniedFlows++;
            continue;
          }
          allowedFlows++;
          const first = hits.filter((h) => h.from === from && h.to === to && h.protocol === protocol).reduce<Hit | undefined>((m, h) => (!m || h.t < m.t ? h : m), undefined);
          const firstMs = first ? first.t - up : null;
          // The flow was broken at the start of every attempt that failed before its first success.
          const failStarts = [...(first?.lastFail !== undefined ? [first.lastFail] : []), ...lateFails.filter((f) => first && f.from === from && f.to === to && f.protocol === protocol && f.start < first.start).map((f) => f.start)];
          const brokenMs = failStarts.length > 0 ? Math.max(...failStarts) - up : null;
          if (firstMs !== null) allowedFirstMs.push(firstMs);
          if (brokenMs !== null) allowedBrokenMs.push(brokenMs);
          const t = timeline.get(p.key)!;
          if (firstMs === null || (brokenMs !== null && brokenMs > 1000)) slow.push({ from, to, port, protocol, firstMs, brokenMs, networkUpMs: up - t.created, addedMs: (t.added ?? 0) - t.created });
        }
      }
    }
    const pods2 = pods.map((p) => {
      const t = timeline.get(p.key)!;
      return { key: p.key, ip: p.ip, node: p.node, created: t.created, networkUp: t.networkUp ?? 0, added: t.added ?? 0 };
    });
    return { pods: pods2, leaks, slow, allowedFirstMs, allowedBrokenMs, allowedFlows, deniedFlows, attempts, hits };
  }

  /** Start probing again (after a report). */
  async restartProbers(): Promise<void> {
    const lab = await this.refresh();
    for (const key of PEERS) this.inbound.set(key, new Sentinel(this.pod(key).netns, lab.dir, [], key));
    this.inbound.set('external', new Sentinel(lab.switch.netns, lab.dir, [], 'external'));
    await Promise.all([...this.inbound.values()].map((s) => s.ready));
  }

  async down(): Promise<void> {
    this.kubelet?.stop();
    await Promise.all([...this.inbound.values()].map((s) => s.end().catch(() => {})));
    await destroyLab(this.o.name, { stateDir: this.stateDir }).catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}

function endpoint(model: Model, lab: LabState, who: string): Endpoint {
  if (who === 'external') return { kind: 'ip', ip: lab.external.ip };
  const [ns, name] = who.split('/') as [string, string];
  const pod = model.findPod(ns, name);
  if (!pod) throw new Error(`pod ${who} is not in the folder`);
  return { kind: 'pod', pod };
}
