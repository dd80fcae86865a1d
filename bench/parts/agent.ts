// Part 6, "agent": the resident memory of the real agent process, `policyctl agent --kube`, fed
// by the API server double (bench/apiserver-child.ts: a synthetic cluster whose pods carry what
// real pods carry) and run the way the DaemonSet runs it: its NODE_OPTIONS, read from
// deploy/policyctl-canal.yaml, and its compile cache warm (bin/policyctl.js keeps one; the image
// is expected to ship it warmed). Both processes live in a fresh network namespace each run (the
// agent programs it: root needed, skipped otherwise). RSS is read from /proc once the agent's
// status file says ready (sources synced, the node programmed), and again over the next seconds:
// `agent_rss_mb_*` is the largest VmRSS seen then, `agent_peak_rss_mb_*` VmHWM (the start-up
// peak, which the container's memory limit must also hold).

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseAllDocuments } from 'yaml';
import type { BenchOptions, BenchPart, Cell, PartResult, Target } from '../harness.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const SERVER = join(ROOT, 'bench/apiserver-child.ts');
const POLICYCTL = join(ROOT, 'bin/policyctl.js');
const NODE = 'node-001';

interface Size {
  readonly label: '10k' | '50k';
  readonly pods: number;
  readonly policies: number;
  readonly bound: number;
}

const SIZES: readonly Size[] = [
  { label: '10k', pods: 10_000, policies: 2_000, bound: 150 },
  { label: '50k', pods: 50_000, policies: 10_000, bound: 250 },
];

/** The agent container's NODE_OPTIONS in the DaemonSet (what the benchmark runs the agent with). */
export function daemonSetNodeOptions(): string {
  const text = readFileSync(join(ROOT, 'deploy/policyctl-canal.yaml'), 'utf8');
  for (const doc of parseAllDocuments(text)) {
    const o = doc.toJS() as { kind?: string; spec?: { template?: { spec?: { containers?: { name?: string; env?: { name?: string; value?: string }[] }[] } } } } | null;
    if (o?.kind !== 'DaemonSet') continue;
    const agent = o.spec?.template?.spec?.containers?.find((c) => c.name === 'policyctl');
    const v = agent?.env?.find((e) => e.name === 'NODE_OPTIONS')?.value;
    if (v !== undefined) return v;
  }
  throw new Error('deploy/policyctl-canal.yaml: the policyctl container of the DaemonSet sets no NODE_OPTIONS');
}

function memOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

function exited(p: ChildProcess, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      resolve();
    }, ms);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

interface Run {
  readonly readyS: number;
  readonly rss: number;
  readonly hwm: number;
  readonly rssAtReady: number;
  readonly serverS: number;
}

async function measure(o: BenchOptions, size: Size, nodeOptions: string): Promise<Run> {
  const ns = `pctl-ba-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'pctl-bench-agent-'));
  const kubeconfig = join(dir, 'kubeconfig');
  const statusFile = join(dir, 'status.json');
  execFileSync('ip', ['netns', 'add', ns]);
  let server: ChildProcess | undefined;
  let agent: ChildProcess | undefined;
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    o.progress(`agent: API server double with ${size.pods} pods / ${size.policies} policies starting in namespace ${ns}`);
    const t0 = performance.now();
    // A big young generation for the double: it serves 2.5 MB pages out of a heap of a gigabyte.
    server = spawn('ip', ['netns', 'exec', ns, process.execPath, '--max-semi-space-size=64', SERVER, '--pods', String(size.pods), '--policies', String(size.policies), '--seed', String(o.seed), '--port', '6443', '--kubeconfig', kubeconfig], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('exit', (code) => reject(new Error(`bench/apiserver-child.ts exited with code ${code} before it served`)));
      createInterface({ input: server!.stdout! }).once('line', () => resolve());
    });
    const serverS = (performance.now() - t0) / 1000;
    o.progress(`agent: policyctl agent --kube for ${NODE} starting (NODE_OPTIONS=${nodeOptions})`);
    const t1 = performance.now();
    agent = spawn('ip', ['netns', 'exec', ns, process.execPath, POLICYCTL, 'agent', '--node', NODE, '--kube', '--kubeconfig', kubeconfig, '--status-file', statusFile, '--log-level', 'warn'], {
      env: { ...process.env, NODE_OPTIONS: nodeOptions },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    agent.stderr!.setEncoding('utf8');
    agent.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    const pid = agent.pid!;
    const deadline = Date.now() + 600_000;
    let rssAtReady = NaN;
    for (;;) {
      if (agent.exitCode !== null) throw new Error(`the agent exited with code ${agent.exitCode} before it was ready: ${stderr}`);
      if (Date.now() > deadline) throw new Error(`the agent was not ready within 10 minutes: ${stderr}`);
      if (existsSync(statusFile)) {
        try {
          if ((JSON.parse(readFileSync(statusFile, 'utf8')) as { ready?: boolean }).ready) {
            rssAtReady = memOf(pid).rss;
            break;
          }
        } catch {
          /* being rewritten */
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const readyS = (performance.now() - t1) / 1000;
    let rss = rssAtReady;
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      rss = Math.max(rss, memOf(pid).rss);
    }
    return { readyS, rss, hwm: memOf(pid).hwm, rssAtReady, serverS };
  } finally {
    agent?.kill('SIGTERM');
    if (agent) await exited(agent, 10_000);
    server?.stdin?.end();
    if (server) await exited(server, 10_000);
    try {
      execFileSync('ip', ['netns', 'del', ns]);
    } catch {
      /* already gone */
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;

export const agentPart: BenchPart = {
  name: 'agent',
  title: 'Part 6: memory of the real agent, fed by the API server double',
  async run(o: BenchOptions): Promise<PartResult> {
    if (process.getuid?.() !== 0) return { tables: [], metrics: {}, notes: ['skipped: needs root (network namespaces)'] };
    const nodeOptions = daemonSetNodeOptions();
    // Warm the compile cache as the image's build does (every module is loaded by --help).
    execFileSync(process.execPath, [POLICYCTL, '--help'], { stdio: 'ignore' });
    const rows: Cell[][] = [];
    const metrics: Record<string, Cell> = {};
    const targets: Target[] = [];
    const detail: Record<string, Run> = {};
    for (const size of SIZES) {
      const r = await measure(o, size, nodeOptions);
      detail[size.label] = r;
      rows.push([`${size.pods / 1000}k pods / ${size.policies / 1000}k policies`, round1(r.serverS), round1(r.readyS), round1(r.rssAtReady), round1(r.rss), round1(r.hwm), size.bound]);
      metrics[`agent_rss_mb_${size.label}`] = round1(r.rss);
      metrics[`agent_peak_rss_mb_${size.label}`] = round1(r.hwm);
      metrics[`agent_ready_s_${size.label}`] = round1(r.readyS);
      targets.push({ metric: `agent_rss_mb_${size.label}`, value: round1(r.rss), bound: size.bound, unit: 'MB', met: r.rss <= size.bound, relation: '<=' });
    }
    metrics['agent_node_options'] = nodeOptions;
    return {
      tables: [
        {
          title: `policyctl agent --kube for ${NODE} (250 local pods), NODE_OPTIONS="${nodeOptions}" (the DaemonSet's)`,
          columns: ['cluster', 'double ready s', 'agent ready s', 'RSS at ready MB', 'RSS MB', 'peak RSS MB', 'target MB'],
          rows,
          notes: [
            'RSS: the largest VmRSS from ready to 5 s after; peak: VmHWM (start-up included). Pods of about 5 KB of JSON each (managedFields, status, volumes).',
            'agent ready s: from the process start to the status file saying ready (every initial LIST done, the node programmed).',
          ],
        },
      ],
      metrics,
      targets,
      detail,
    };
  },
};
