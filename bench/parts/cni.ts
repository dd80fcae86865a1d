// Part 5, "cni": pod start with policyctl-cni, on the real kernel (root; skipped otherwise).
//
// (a) ADD with the agent running: a child process in a fresh namespace runs the node agent for
//     node-001 (250 local pods) of the 10k-pod / 2k-policy cluster and its CNI server
//     (bench/cni-child.ts). The plugin, installed as `policyctl install-cni` installs it (its
//     native front end; a new process per call, as the container runtime runs it) is timed from
//     spawn to exit: ADD for a pending
//     pod of the node (the agent gives it the address, syncs, answers once applied), then DEL
//     of the same sandbox (the address leaves every set, its conntrack entries are deleted);
//     one pod at a time, node-001's free addresses reused. `cni_add_ms_p99` is the target.
//     VERSION, with no agent on the default socket, gives the start-up cost of the slow path (the
//     front end falling back to the Node plugin).
// (b) Pod start in the lab (test/support/pod-start.ts): pods started one after another (on the
//     two nodes in turn) under default deny in the lab's real order, each probed from its first
//     instant both ways by same-node and other-node pods and the external host;
//     `pod_start_leaks` counts the connections that succeeded although the policies deny them
//     (must be 0).

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { newPod, PodStartScenario } from '../../test/support/pod-start.ts';
import { installPlugin } from '../../src/cni/install.ts';
import type { CniChildReady } from '../cni-child.ts';
import { max, median, percentile, type BenchOptions, type BenchPart, type PartResult, type Target } from '../harness.ts';

const CHILD = new URL('../cni-child.ts', import.meta.url).pathname;

function runPlugin(plugin: string, env: Record<string, string>, input: string): Promise<{ ms: number; code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(plugin, [], { env, stdio: ['pipe', 'pipe', 'ignore'] });
    let stdout = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => (stdout += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ ms: performance.now() - t0, code: code ?? -1, stdout }));
    p.stdin.end(input);
  });
}

const round = (x: number) => Math.round(x * 1000) / 1000;
const p99 = (s: readonly number[]) => percentile(s, 99);

async function cniAdd(o: BenchOptions, n: number): Promise<{ add: number[]; del: number[]; version: number[]; agentAdd: number[]; agentDel: number[]; startMs: number; native: boolean }> {
  const netns = `pctl-bc-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'pctl-bench-cni-'));
  execFileSync('ip', ['netns', 'add', netns]);
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, CHILD, '--socket', join(dir, 'run', 'cni.sock'), '--pods', String(n + 3), '--seed', String(o.seed)], { stdio: ['pipe', 'pipe', 'pipe'] });
  // The agent's own share of each call, from its log line ("CNI ADD: ...", "ms").
  const agentMs: { ADD: number[]; DEL: number[] } = { ADD: [], DEL: [] };
  createInterface({ input: child.stderr! }).on('line', (l) => {
    try {
      const e = JSON.parse(l) as { command?: 'ADD' | 'DEL'; ms?: number; level?: number; msg?: string };
      if (e.command && typeof e.ms === 'number' && e.msg?.startsWith(`CNI ${e.command}:`)) agentMs[e.command].push(e.ms);
      else if ((e.level ?? 0) >= 40) process.stderr.write(`cni child: ${l}\n`);
    } catch {
      process.stderr.write(`cni child: ${l}\n`);
    }
  });
  try {
    execFileSync('ip', ['netns', 'exec', netns, 'ip', 'link', 'set', 'lo', 'up']);
    o.progress('cni: agent for node-001 of the 10k-pod cluster starting in a fresh namespace');
    const ready = await new Promise<CniChildReady>((resolve, reject) => {
      child.on('exit', (code) => reject(new Error(`bench/cni-child.ts exited with code ${code} before it was ready`)));
      createInterface({ input: child.stdout! }).once('line', (l) => resolve(JSON.parse(l) as CniChildReady));
    });
    const { wrapper, frontEnd } = await installPlugin({ binDir: join(dir, 'bin'), version: 'bench', linkNode: true });
    if (!frontEnd.native) o.progress(`cni: no native front end (${frontEnd.reason}): timing the Node plugin alone`);
    const base = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', CNI_NETNS: '/var/run/netns/bench', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin' };
    const version: number[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await runPlugin(wrapper, { ...base, CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
      if (i >= 3) version.push(r.ms); // as the other calls: after 3 untimed
    }
    const add: number[] = [];
    const del: number[] = [];
    for (let i = 0; i < ready.pods.length; i++) {
      const pod = ready.pods[i]!;
      const ip = ready.freeIps[i % ready.freeIps.length]!;
      const env = { ...base, CNI_CONTAINERID: `bench-${i}`, CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=bench-${i}` };
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'policyctl-cni', socket: ready.socket, timeoutSeconds: 10, prevResult: { cniVersion: '1.0.0', ips: [{ address: `${ip}/24` }] } });
      const a = await runPlugin(wrapper, { ...env, CNI_COMMAND: 'ADD' }, conf);
      if (a.code !== 0) throw new Error(`ADD of ${pod.namespace}/${pod.name} failed: ${a.stdout}`);
      const d = await runPlugin(wrapper, { ...env, CNI_COMMAND: 'DEL' }, conf);
      if (d.code !== 0) throw new Error(`DEL of ${pod.namespace}/${pod.name} failed: ${d.stdout}`);
      if (i >= 3) {
        add.push(a.ms);
        del.push(d.ms);
      }
    }
    return { add, del, version, agentAdd: agentMs.ADD.slice(3), agentDel: agentMs.DEL.slice(3), startMs: ready.startMs, native: frontEnd.native };
  } finally {
    child.stdin!.end();
    await new Promise((r) => {
      const t = setTimeout(r, 5_000);
      child.once('exit', () => {
        clearTimeout(t);
        r(undefined);
      });
    });
    try {
      execFileSync('ip', ['netns', 'del', netns]);
    } catch {
      /* already gone */
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

export const cniPart: BenchPart = {
  name: 'cni',
  title: 'Part 5: pod start with policyctl-cni, on the real kernel',
  async run(o: BenchOptions): Promise<PartResult> {
    if (process.getuid?.() !== 0) return { tables: [], metrics: {}, notes: ['skipped: needs root (network namespaces)'] };
    const n = o.quick ? 20 : 60;
    const podCount = o.quick ? 15 : 51;
    const notes: string[] = [];
    if (o.quick) notes.push(`quick mode: ${n} ADD/DEL pairs (60 in a full run), ${podCount} pods in the pod-start run (51).`);

    const c = await cniAdd(o, n);

    o.progress(`cni: pod start in the lab, ${podCount} pods under default deny`);
    const s = new PodStartScenario({ name: `bc${process.pid % 100000}` });
    let report;
    try {
      await s.up();
      for (let i = 0; i < podCount; i++) await s.startPod(newPod(i));
      report = await s.report();
    } finally {
      await s.down();
    }
    const addInLab = report.pods.map((p) => p.added - p.networkUp);
    const first = report.allowedFirstMs;

    const metrics = {
      cni_add_ms_p50: round(median(c.add)),
      cni_add_ms_p99: round(p99(c.add)),
      cni_add_ms_max: round(max(c.add)),
      cni_del_ms_p50: round(median(c.del)),
      cni_del_ms_p99: round(p99(c.del)),
      cni_version_ms_p50: round(median(c.version)),
      cni_native_front_end: c.native ? 1 : 0,
      cni_add_agent_ms_p50: round(median(c.agentAdd)),
      cni_add_agent_ms_p99: round(p99(c.agentAdd)),
      cni_adds: c.add.length,
      pod_start_pods: report.pods.length,
      pod_start_leaks: report.leaks.length,
      pod_start_slow_flows: report.slow.length,
      pod_start_allowed_flows: report.allowedFlows,
      pod_start_denied_flows: report.deniedFlows,
      pod_start_probe_attempts: report.attempts,
      pod_start_allowed_first_ms_p50: round(median(first)),
      pod_start_allowed_first_ms_p99: round(p99(first)),
      pod_start_policy_cni_ms_p50: round(median(addInLab)),
      pod_start_policy_cni_ms_p99: round(p99(addInLab)),
    };
    const targets: Target[] = [
      { metric: 'cni_add_ms_p99', bound: 100, unit: 'ms (at most)', value: metrics.cni_add_ms_p99, met: metrics.cni_add_ms_p99 <= 100, relation: '<=' },
      { metric: 'pod_start_leaks', bound: 0, unit: '(at most)', value: report.leaks.length, met: report.leaks.length === 0, relation: '<=' },
    ];
    return {
      tables: [
        {
          title: `(a) policyctl-cni with the agent running: node-001 (250 local pods) of the 10k-pod / 2k-policy cluster, ${c.add.length} ADD and DEL pairs one pod at a time (after 3 untimed)`,
          columns: ['call', 'n', 'p50 ms', 'p99 ms', 'max ms'],
          rows: [
            ['ADD (until the agent applied the pod)', c.add.length, median(c.add), p99(c.add), max(c.add)],
            ['DEL (address out of every set, conntrack flushed)', c.del.length, median(c.del), p99(c.del), max(c.del)],
            [c.native ? 'VERSION, no agent (the fallback: the Node plugin)' : 'VERSION (no agent: the plugin process alone)', c.version.length, median(c.version), p99(c.version), max(c.version)],
            ["  the agent's share of ADD (request to answer)", c.agentAdd.length, median(c.agentAdd), p99(c.agentAdd), max(c.agentAdd)],
            ["  the agent's share of DEL", c.agentDel.length, median(c.agentDel), p99(c.agentDel), max(c.agentDel)],
          ],
          notes: [
            c.native
              ? 'Each call is a new process (the policyctl-cni that install-cni installs: its static front end, which forwards the call to the agent), timed from spawn to exit, as the container runtime runs it. With no agent it runs the Node plugin beside it (the VERSION row).'
              : 'Each call is a new process (no native front end could be built here: the shell wrapper, Node, the plugin as JavaScript, a warmed compile cache), timed from spawn to exit, as the container runtime runs it.',
            `The agent (bench/cni-child.ts) runs in a fresh namespace with its default timings (a kernel re-read 1 s after each write); it started in ${round(c.startMs)} ms.`,
          ],
        },
        {
          title: `(b) pod start in the lab: ${report.pods.length} pods one after another (two nodes in turn) under default deny (ingress, egress, both), probed from their first instant`,
          columns: ['pods', 'probe attempts', 'leaks', 'allowed flows', 'slow (> 1 s)', 'denied flows', 'first success p50 ms', 'p99 ms', 'policyctl-cni p50 ms', 'p99 ms'],
          rows: [[report.pods.length, report.attempts, report.leaks.length, report.allowedFlows, report.slow.length, report.deniedFlows, median(first), p99(first), median(addInLab), p99(addInLab)]],
          notes: [
            'leaks: connections (TCP handshakes, UDP echoes) that succeeded although the policies deny them, at any time; must be 0.',
            'first success: per allowed flow of a new pod, from its network coming up (the bridge plugin returning) to the first success; slow: allowed flows seen failing by an attempt begun more than 1 s after that, or never working.',
            'policyctl-cni: from the network coming up to the whole CNI ADD returning (the plugin process, the agent seeing the pod, its sync).',
          ],
        },
      ],
      metrics,
      targets,
      notes,
      detail: { add: c.add, del: c.del, version: c.version, podStart: { pods: report.pods, leaks: report.leaks, slow: report.slow, allowedFirstMs: first } },
    };
  },
};
