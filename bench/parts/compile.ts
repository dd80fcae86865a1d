// Part 1, "compile": a full compile of synthetic clusters for a node holding 110 and 250 pods.
//
// Per cluster (pods/policies) and local pod count: median and p90 of `compile(model, node)`
// after warm-up, the size of what it produces (ipsets, set entries, chains, rules across all
// chains), the time to render it to restore text, and the incremental compiler's first build
// for comparison. Memory: heap and RSS of this process after GC while it holds the cluster,
// and (the figure that counts) RSS of a fresh child process holding only the 10k/2k model and
// its Ruleset.

import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { compile } from '../../src/compiler/compile.ts';
import { IncrementalCompiler } from '../../src/compiler/incremental.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import { isEnforceable } from '../../src/model/types.ts';
import { collect, gcAvailable, median, memoryMb, percentile, target, timeRuns, type BenchOptions, type BenchPart, type Cell, type PartResult } from '../harness.ts';
import { addClusterPolicies } from '../cnps.ts';
import { generateCluster } from '../synthetic.ts';

interface Size {
  readonly pods: number;
  readonly policies: number;
  /** ClusterNetworkPolicies added (bench/cnps.ts). */
  readonly cnps?: number;
  readonly label: string;
  readonly runs: number;
  readonly warmup: number;
}

function sizes(quick: boolean): Size[] {
  return quick
    ? [
        { pods: 1000, policies: 200, label: '1k_200', runs: 15, warmup: 5 },
        { pods: 10000, policies: 2000, label: '10k_2k', runs: 9, warmup: 3 },
        { pods: 10000, policies: 2000, cnps: 100, label: '10k_2k_cnp100', runs: 9, warmup: 3 },
      ]
    : [
        { pods: 1000, policies: 200, label: '1k_200', runs: 50, warmup: 10 },
        { pods: 10000, policies: 2000, label: '10k_2k', runs: 25, warmup: 5 },
        { pods: 10000, policies: 2000, cnps: 100, label: '10k_2k_cnp100', runs: 25, warmup: 5 },
        { pods: 50000, policies: 10000, label: '50k_10k', runs: 9, warmup: 2 },
      ];
}

const LOCAL_NODES = [
  { node: 'node-000', local: 110 },
  { node: 'node-001', local: 250 },
] as const;

export function rulesetCounts(rs: Ruleset): { sets: number; entries: number; chains: number; rules: number } {
  return {
    sets: rs.sets.length,
    entries: rs.sets.reduce((n, s) => n + s.members.length, 0),
    chains: rs.chains.length,
    rules: rs.chains.reduce((n, c) => n + c.rules.length, 0),
  };
}

const here = fileURLToPath(new URL('..', import.meta.url));

async function childRss(o: BenchOptions): Promise<{ rss: number; baseline: number; modelOnly: number; withIncremental: number; heapUsed: number; gc: boolean }> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', `${here}rss-child.ts`, '--pods', '10000', '--policies', '2000', '--node', 'node-001', '--seed', String(o.seed)], {
    maxBuffer: 1 << 20,
  });
  const r = JSON.parse(stdout.trim().split('\n').pop()!) as {
    gc: boolean;
    baseline: { rss: number };
    modelOnly: { rss: number };
    withRuleset: { rss: number; heapUsed: number };
    withIncremental: { rss: number };
  };
  return { rss: r.withRuleset.rss, baseline: r.baseline.rss, modelOnly: r.modelOnly.rss, withIncremental: r.withIncremental.rss, heapUsed: r.withRuleset.heapUsed, gc: r.gc };
}

export const compilePart: BenchPart = {
  name: 'compile',
  title: 'Part 1: full compile',
  async run(o: BenchOptions): Promise<PartResult> {
    const rows: Cell[][] = [];
    const memRows: Cell[][] = [];
    const metrics: Record<string, Cell> = {};
    const notes: string[] = [];
    const detail: Record<string, unknown> = {};
    if (o.quick) notes.push('quick mode: the 50k pods / 10k policies cluster is skipped; fewer runs per figure.');
    if (!gcAvailable) notes.push('no --expose-gc: memory figures are taken without a forced GC (run node --expose-gc bench/run.ts).');

    for (const size of sizes(o.quick)) {
      o.progress(`compile: generating ${size.pods} pods / ${size.policies} policies`);
      const t0 = performance.now();
      let c: ReturnType<typeof generateCluster> | undefined = generateCluster({ pods: size.pods, policies: size.policies, seed: o.seed });
      if (size.cnps) addClusterPolicies(c, size.cnps);
      const genMs = performance.now() - t0;
      const policiesCell = size.cnps ? `${size.policies} + ${size.cnps} CNP` : size.policies;
      let held: Ruleset | undefined;
      for (const { node, local } of LOCAL_NODES) {
        const model = c.model;
        const localPods = model.podsOnNode(node);
        o.progress(`compile: ${size.label} on ${node} (${local} pods): ${size.warmup} warm-up + ${size.runs} runs`);
        const { ms, last: rs } = timeRuns(() => compile(model, node), size.runs, size.warmup);
        const render = timeRuns(() => renderIpsetRestore(rs.sets).length + renderIptablesRestore(rs).length, Math.max(3, size.runs >> 1), 2);
        const buildMs: number[] = [];
        for (let i = 0; i < Math.max(3, size.runs >> 2); i++) {
          const t = performance.now();
          const ic = new IncrementalCompiler(model, node);
          ic.ruleset();
          buildMs.push(performance.now() - t);
          ic.dispose();
        }
        const n = rulesetCounts(rs);
        const key = `${size.label}_${local}`;
        const med = median(ms);
        const p90 = percentile(ms, 90);
        rows.push([
          size.pods,
          policiesCell,
          local,
          localPods.filter(isEnforceable).length,
          med,
          p90,
          Math.min(...ms),
          median(render.ms),
          median(buildMs),
          n.sets,
          n.entries,
          n.chains,
          n.rules,
          render.last,
        ]);
        metrics[`compile_ms_${key}`] = round(med);
        metrics[`compile_p90_ms_${key}`] = round(p90);
        metrics[`render_ms_${key}`] = round(median(render.ms));
        metrics[`incremental_build_ms_${key}`] = round(median(buildMs));
        metrics[`ipsets_${key}`] = n.sets;
        metrics[`set_entries_${key}`] = n.entries;
        metrics[`chains_${key}`] = n.chains;
        metrics[`rules_${key}`] = n.rules;
        detail[`compile_runs_ms_${key}`] = ms.map(round);
        held = rs;
      }
      collect();
      const mem = memoryMb();
      memRows.push([size.pods, policiesCell, round(genMs), mem.heapUsed, mem.rss, held ? held.sets.length : null]);
      metrics[`heap_used_mb_${size.label}_inprocess`] = round(mem.heapUsed);
      held = undefined;
      c = undefined;
      collect();
    }

    o.progress('compile: RSS of a fresh process holding the 10k/2k model and its Ruleset');
    const child = await childRss(o);
    metrics.rss_mb = round(child.rss);
    metrics.rss_baseline_mb = round(child.baseline);
    metrics.rss_model_only_mb = round(child.modelOnly);
    metrics.rss_with_incremental_mb = round(child.withIncremental);
    metrics.heap_used_mb = round(child.heapUsed);

    const compile10k = metrics.compile_ms_10k_2k_250;
    return {
      tables: [
        {
          title: 'compile(model, node): full compile',
          columns: ['pods', 'policies', 'local', 'enforced', 'median ms', 'p90 ms', 'min ms', 'render ms', 'incr. build ms', 'ipsets', 'set entries', 'chains', 'rules', 'restore bytes'],
          rows,
          notes: [
            'local: pods bound to the node (one is a hostNetwork node-exporter); enforced: of those, with an IP of their own and running.',
            'N CNP: the same cluster with N ClusterNetworkPolicies added (bench/cnps.ts: 60% Admin, 40% Baseline, per team and cluster-wide).',
            'rules: rules across all our chains; render: ipset + iptables-restore text of the whole Ruleset; incr. build: IncrementalCompiler first ruleset().',
          ],
        },
        {
          title: 'memory',
          columns: ['pods', 'policies', 'generate ms', 'heap used MB', 'RSS MB', 'sets held'],
          rows: memRows,
          notes: ['this process, after GC, holding one cluster and its last Ruleset (earlier clusters dropped; RSS does not shrink back).'],
        },
        {
          title: 'RSS of a fresh process (10k pods / 2k policies, node with 250 pods)',
          columns: ['node runtime MB', 'model MB', 'model + Ruleset MB', '+ IncrementalCompiler MB', 'heap used MB'],
          rows: [[child.baseline, child.modelOnly, child.rss, child.withIncremental, child.heapUsed]],
          notes: ['bench/rss-child.ts run with --expose-gc; each figure is RSS after GC at that step; rss_mb = model + Ruleset.'],
        },
      ],
      metrics,
      targets: [
        target('compile_ms_10k_2k_250', typeof compile10k === 'number' ? compile10k : null, 200, 'ms'),
        target('rss_mb', child.rss, 300, 'MB'),
      ],
      notes,
      detail,
    };
  },
};

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
