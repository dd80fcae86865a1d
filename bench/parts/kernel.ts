// Part 3, "kernel": the sync layer on the real kernel, inside fresh network namespaces (created
// with `ip netns add`, deleted afterwards; nothing runs in the machine's own namespace).
//
// (a) Cold apply of the 10k-pod / 2k-policy cluster's node Ruleset (node-001, 250 local pods)
//     into an empty namespace: our Syncer (read the kernel, diff, render, `ipset restore`,
//     `iptables-nft-restore --noflush`) against the bare restore of the same rendered payload
//     (renderIpsetRestore + renderIptablesRestore, rendered beforehand) into another empty
//     namespace. Both sides run their commands through `ip netns exec`. Several runs, the order
//     alternating; medians. `cold_apply_ratio` = ours / raw.
// (b) Event to kernel: a child process started inside a fresh namespace (where an agent runs;
//     bench/kernel-child.ts) applies the Ruleset cold, then times single events of every kind
//     from the model change until the Syncer returns (incremental compile, plan from the delta,
//     kernel write). The same is done in another namespace with a full rewrite of the Ruleset
//     per event (every set flushed and refilled, every chain rewritten), for comparison; and in a
//     third namespace with 100 ClusterNetworkPolicies added to the cluster (bench/cnps.ts), their
//     own changes among the events. Each child ends by diffing a fresh kernel read against a full
//     compile: it must be empty.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { compile } from '../../src/compiler/compile.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import { NFT } from '../../src/sync/backend.ts';
import { isEmpty } from '../../src/sync/plan.ts';
import { mustRun, processRunner, type Runner } from '../../src/sync/runner.ts';
import { Syncer } from '../../src/sync/syncer.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { CNP_EVENT_KINDS, EVENT_KINDS, QUIET_BEFORE_EVENT_MS, type EventKind } from '../events.ts';
import { max, mean, median, percentile, target, type BenchOptions, type BenchPart, type Cell, type PartResult } from '../harness.ts';
import type { KernelChildResult, KernelSample } from '../kernel-child.ts';
import { generateCluster } from '../synthetic.ts';

const NODE = 'node-001';
/** ClusterNetworkPolicies added for the third run of (b). */
const CNPS = 100;

/** Fresh namespaces, all deleted by `removeAll` (called in a finally). */
class Namespaces {
  private readonly live = new Set<string>();
  create(): string {
    const name = `pctl-bk-${randomBytes(4).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.live.add(name);
    execFileSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
    return name;
  }
  remove(name: string): void {
    try {
      execFileSync('ip', ['netns', 'del', name]); // its iptables tables and ipsets go with it
    } catch {
      /* already gone */
    }
    this.live.delete(name);
  }
  removeAll(): void {
    for (const n of [...this.live]) this.remove(n);
  }
}

/** Wraps a runner and sums the time spent per command. */
function timedRunner(inner: Runner): Runner & { byCmd: Map<string, number> } {
  const byCmd = new Map<string, number>();
  return {
    byCmd,
    async run(cmd, args, opts) {
      const t0 = performance.now();
      try {
        return await inner.run(cmd, args, opts);
      } finally {
        const key = cmd.endsWith('-save') || args[0] === 'save' ? 'read' : cmd.endsWith('-restore') ? 'iptables' : 'ipset';
        byCmd.set(key, (byCmd.get(key) ?? 0) + performance.now() - t0);
      }
    },
  };
}

function runChild(netns: string, mode: 'delta' | 'rewrite', perKind: number, seed: number, cnps = 0, shared = false): Promise<KernelChildResult> {
  const child = new URL('../kernel-child.ts', import.meta.url).pathname;
  return new Promise((resolve, reject) => {
    const args = [...(shared ? ['--shared-admin-chains'] : []), '--mode', mode, '--per-kind', String(perKind), '--seed', String(seed), '--cnps', String(cnps)];
    const p = spawn('ip', ['netns', 'exec', netns, process.execPath, '--expose-gc', child, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`bench/kernel-child.ts --mode ${mode} exited with code ${code}`));
      try {
        resolve(JSON.parse(out) as KernelChildResult);
      } catch (e) {
        reject(new Error(`bench/kernel-child.ts --mode ${mode} printed no JSON: ${String(e)}\n${out.slice(0, 500)}`));
      }
    });
  });
}

export const kernelPart: BenchPart = {
  name: 'kernel',
  title: 'Part 3: sync on the real kernel, inside a namespace',
  async run(o: BenchOptions): Promise<PartResult> {
    if (process.getuid?.() !== 0) return { tables: [], metrics: {}, notes: ['skipped: needs root (network namespaces)'] };
    const runs = o.quick ? 3 : 5;
    const perKind = o.quick ? 12 : 40;
    const rewritePerKind = o.quick ? 3 : 8;
    const notes: string[] = [];
    if (o.quick) notes.push(`quick mode: ${runs} cold-apply runs (5 in a full run), ${perKind} events per kind (40), ${rewritePerKind} per kind for the full rewrite (8).`);
    const spaces = new Namespaces();
    try {
      // ---- (a) cold apply ----------------------------------------------------------------
      o.progress('kernel: generating the 10k-pod / 2k-policy cluster');
      const c = generateCluster({ pods: 10_000, policies: 2_000, seed: o.seed });
      const rs = compile(c.model, NODE);
      const ipsetText = renderIpsetRestore(rs.sets);
      const iptText = renderIptablesRestore(rs);
      const entries = rs.sets.reduce((n, s) => n + s.members.length, 0);
      const rules = rs.chains.reduce((n, ch) => n + ch.rules.length, 0);
      const ours: number[] = [];
      const raw: number[] = [];
      const parts: { read: number; ipset: number; iptables: number; cpu: number }[] = [];
      const rawParts: { ipset: number; iptables: number }[] = [];
      let verified = true;
      const runOurs = async () => {
        const ns = spaces.create();
        try {
          const runner = timedRunner(processRunner(ns));
          const syncer = new Syncer({ runner, backend: { ...NFT, reason: 'bench' } });
          const t0 = performance.now();
          await syncer.sync(rs);
          const ms = performance.now() - t0;
          ours.push(ms);
          const [read, ipset, iptables] = [runner.byCmd.get('read') ?? 0, runner.byCmd.get('ipset') ?? 0, runner.byCmd.get('iptables') ?? 0];
          parts.push({ read, ipset, iptables, cpu: ms - read - ipset - iptables });
          if (ours.length === 1) verified = isEmpty((await syncer.verify(rs)).plan);
        } finally {
          spaces.remove(ns);
        }
      };
      const runRaw = async () => {
        const ns = spaces.create();
        try {
          const runner = processRunner(ns);
          const t0 = performance.now();
          await mustRun(runner, 'ipset', ['restore'], { input: ipsetText });
          const t1 = performance.now();
          await mustRun(runner, NFT.restore, ['--noflush'], { input: iptText });
          const t2 = performance.now();
          raw.push(t2 - t0);
          rawParts.push({ ipset: t1 - t0, iptables: t2 - t1 });
        } finally {
          spaces.remove(ns);
        }
      };
      for (let i = 0; i < runs; i++) {
        o.progress(`kernel: cold apply, run ${i + 1}/${runs}`);
        if (i % 2 === 0) {
          await runOurs();
          await runRaw();
        } else {
          await runRaw();
          await runOurs();
        }
      }
      if (!verified) throw new Error('after the cold apply by the Syncer, a fresh read of the kernel still differs from the Ruleset');
      const ratio = median(ours) / median(raw);

      // ---- (b) event to kernel ------------------------------------------------------------
      const child = async (mode: 'delta' | 'rewrite', n: number, cnps = 0, shared = false) => {
        const ns = spaces.create();
        try {
          execFileSync('ip', ['netns', 'exec', ns, NFT.restore], { input: FOREIGN_FILTER });
          o.progress(`kernel: ${mode === 'delta' ? 'event to kernel through syncDelta' : 'full rewrite per event'}, ${n} events per kind${cnps ? `, ${cnps} ClusterNetworkPolicies${shared ? ', shared Admin chains' : ''}` : ''}, in namespace ${ns}`);
          const r = await runChild(ns, mode, n, o.seed, cnps, shared);
          if (!r.verifiedEqual) throw new Error(`kernel (${mode}): after the events, a fresh read differs from a full compile: ${r.verifyDetail}`);
          return r;
        } finally {
          spaces.remove(ns);
        }
      };
      const delta = await child('delta', perKind);
      const full = await child('rewrite', rewritePerKind);
      const withCnps = await child('delta', perKind, CNPS);
      const withCnpsShared = await child('delta', perKind, CNPS, true);

      const p99 = (xs: readonly number[]) => percentile(xs, 99);
      const rows: Cell[][] = [];
      const metrics: Record<string, Cell> = {};
      const row = (label: string, s: readonly KernelSample[], f: readonly KernelSample[]) => {
        const tot = s.map((x) => x.totalMs);
        rows.push([
          label,
          s.length,
          median(tot),
          p99(tot),
          max(tot),
          p99(s.map((x) => x.compileMs)),
          p99(s.map((x) => x.processMs)),
          mean(s.map((x) => x.processes)),
          mean(s.map((x) => x.iptablesMs)),
          mean(s.map((x) => x.rules)),
          mean(s.map((x) => x.setEntries)),
          f.length ? median(f.map((x) => x.totalMs)) : null,
          f.length ? p99(f.map((x) => x.totalMs)) : null,
          p99(s.map((x) => x.gcMs ?? 0)),
        ]);
      };
      for (const kind of EVENT_KINDS) {
        const s = delta.samples.filter((x) => x.kind === kind);
        row(kind, s, full.samples.filter((x) => x.kind === kind));
        metrics[`event_to_kernel_ms_p99_${kind.replaceAll('-', '_')}`] = round(p99(s.map((x) => x.totalMs)));
      }
      row('all kinds', delta.samples, full.samples);

      // The same with 100 ClusterNetworkPolicies in the cluster, their own changes included.
      const cnpRows: Cell[][] = [];
      const cnpKinds: readonly EventKind[] = [...EVENT_KINDS, ...CNP_EVENT_KINDS];
      const cnpRow = (label: string, s: readonly KernelSample[], sh: readonly KernelSample[]) => {
        const tot = s.map((x) => x.totalMs);
        const shTot = sh.map((x) => x.totalMs);
        cnpRows.push([label, s.length, median(tot), p99(tot), max(tot), p99(s.map((x) => x.compileMs)), mean(s.map((x) => x.iptablesMs)), mean(s.map((x) => x.rules)), mean(s.map((x) => x.setEntries)), median(shTot), p99(shTot), mean(sh.map((x) => x.rules))]);
      };
      for (const kind of cnpKinds) {
        const s = withCnps.samples.filter((x) => x.kind === kind);
        cnpRow(kind, s, withCnpsShared.samples.filter((x) => x.kind === kind));
        metrics[`event_to_kernel_ms_p99_cnp${CNPS}_${kind.replaceAll('-', '_')}`] = round(p99(s.map((x) => x.totalMs)));
      }
      cnpRow('all kinds', withCnps.samples, withCnpsShared.samples);
      const cnpAll = withCnps.samples.map((x) => x.totalMs);
      const cnpSharedAll = withCnpsShared.samples.map((x) => x.totalMs);

      const all = delta.samples.map((x) => x.totalMs);
      const fullAll = full.samples.map((x) => x.totalMs);
      Object.assign(metrics, {
        cold_apply_ratio: round(ratio),
        cold_apply_ms: round(median(ours)),
        cold_apply_raw_ms: round(median(raw)),
        event_to_kernel_ms_p50: round(median(all)),
        event_to_kernel_ms_p99: round(p99(all)),
        event_to_kernel_compile_ms_p99: round(p99(delta.samples.map((x) => x.compileMs))),
        event_to_kernel_process_ms_p99: round(p99(delta.samples.map((x) => x.processMs))),
        event_to_kernel_rewrite_ms_p50: round(median(fullAll)),
        event_to_kernel_rewrite_ms_p99: round(p99(fullAll)),
        event_to_kernel_spawn_ms: round(delta.spawnMs),
        event_to_kernel_events: all.length,
        [`event_to_kernel_ms_p50_cnp${CNPS}`]: round(median(cnpAll)),
        [`event_to_kernel_ms_p99_cnp${CNPS}`]: round(p99(cnpAll)),
        [`event_to_kernel_compile_ms_p99_cnp${CNPS}`]: round(p99(withCnps.samples.map((x) => x.compileMs))),
        [`event_to_kernel_ms_p50_cnp${CNPS}_shared`]: round(median(cnpSharedAll)),
        [`event_to_kernel_ms_p99_cnp${CNPS}_shared`]: round(p99(cnpSharedAll)),
      });

      const med = (f: (x: (typeof parts)[number]) => number) => median(parts.map(f));
      return {
        tables: [
          {
            title: `Cold apply: 10k pods / 2k policies, node with 250 pods (${rs.sets.length} sets, ${entries} set entries, ${rs.chains.length} chains, ${rules} rules), ${runs} runs each, fresh namespace per run`,
            columns: ['', 'median ms', 'min ms', 'max ms', 'read ms', 'ipset ms', 'iptables ms', 'in-process ms'],
            rows: [
              ['Syncer.sync (read, diff, render, apply)', median(ours), Math.min(...ours), max(ours), med((x) => x.read), med((x) => x.ipset), med((x) => x.iptables), med((x) => x.cpu)],
              ['raw ipset restore + iptables-nft-restore', median(raw), Math.min(...raw), max(raw), null, median(rawParts.map((x) => x.ipset)), median(rawParts.map((x) => x.iptables)), null],
              ['ratio (ours / raw)', round(ratio), null, null, null, null, null, null],
            ],
            notes: [
              'Both sides run their commands with `ip netns exec` from the benchmark process; the raw payload is rendered beforehand (not timed).',
              'read ms: iptables-save and ipset save of the empty namespace; in-process ms: the rest of the Syncer (diff, payload rendering, bookkeeping).',
              `after the first run, a fresh read of the kernel diffed against the Ruleset was empty: ${verified ? 'yes' : 'NO'}.`,
            ],
          },
          {
            title: `Event to kernel: ${delta.samples.length} single events (${perKind} per kind, shuffled) after a cold apply, agent in the node's namespace`,
            columns: ['event', 'n', 'p50 ms', 'p99 ms', 'max ms', 'compile p99', 'processes p99', 'processes', 'iptables ms', 'rules', 'set entries', 'rewrite p50', 'rewrite p99', 'gc p99'],
            rows,
            notes: [
              'p50/p99/max: model change + IncrementalCompiler.ruleset()/delta() + Syncer.syncDelta() (plan from the delta, restore calls, known state patched), until it returns.',
              `single events: each after ${QUIET_BEFORE_EVENT_MS} ms of quiet (not timed), so the agent is done with the one before, as with events spaced apart; bursts are part 2's and the agent's coalescing.`,
              'compile p99: model change + ruleset() + delta(); processes p99: time in the ipset / iptables-restore calls (small set payloads go to the agent\'s long-lived ipset session, rule changes to a spare iptables-nft-restore started ahead); processes: mean number of processes used per event;',
              '  iptables ms: mean time in iptables-nft-restore per event (0 when no rule changes); rules / set entries: mean rules written and set entries added, deleted or created per event.',
              `rewrite p50/p99: the same events (${rewritePerKind} per kind) with the whole Ruleset written again per event (every set flushed and refilled, every chain rewritten; the incremental compile included, a full compile would add part 2's full-compile time).`,
              'gc p99: the garbage collection after the event (stale rules of dispatch chains, chains and sets no longer wanted deleted), run right after the sync as the agent does; not in p50/p99/max.',
              `a process spawn (\`true\`) costs ${round(delta.spawnMs)} ms (median) here; cold apply inside the child: ${round(delta.coldMs)} ms.`,
              `both runs end with a fresh kernel read diffed against a full compile: nothing to do (delta: ${delta.verifyDetail}).`,
            ],
          },
          {
            title: `Event to kernel with ${CNPS} ClusterNetworkPolicies added (bench/cnps.ts): ${withCnps.samples.length} single events (${perKind} per kind, shuffled), agent in the node's namespace`,
            columns: ['event', 'n', 'p50 ms', 'p99 ms', 'max ms', 'compile p99', 'iptables ms', 'rules', 'set entries', 'shared p50', 'shared p99', 'shared rules'],
            rows: cnpRows,
            notes: [
              'The same cluster and events as above plus the ClusterNetworkPolicies, and their own changes: cnp-add (one deleted earlier comes back, or a copy under a new name), cnp-delete, cnp-priority.',
              'shared p50 / p99 / rules: the same in another namespace, compiled with shared Admin chains (policyctl agent --shared-admin-chains: one Admin chain per set of Admin policies, a second dispatch to the next tier).',
              `ends with a fresh kernel read diffed against a full compile: nothing to do (${withCnps.verifyDetail}).`,
            ],
          },
        ],
        metrics,
        targets: [
          { metric: 'cold_apply_ratio', bound: 1.5, unit: 'x (at most)', value: round(ratio), met: ratio <= 1.5 },
          target('event_to_kernel_ms_p99', p99(all), 30, 'ms'),
          target(`event_to_kernel_ms_p99_cnp${CNPS}`, p99(cnpAll), 30, 'ms'),
        ],
        notes,
        detail: { cold: { ours, raw, parts, rawParts }, delta: delta.samples, rewrite: full.samples, withCnps: withCnps.samples, withCnpsShared: withCnpsShared.samples },
      };
    } finally {
      spaces.removeAll();
    }
  },
};

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
