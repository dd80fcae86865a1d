// Event to kernel, measured from inside a node's network namespace, where the agent runs: the
// kernel part (bench/parts/kernel.ts) starts this with `ip netns exec <fresh namespace>`, so
// ipset and iptables-restore are spawned directly, as the agent spawns them (no `ip netns exec`
// per command). Prints one JSON document on stdout; progress on stderr.
//
//   node --expose-gc bench/kernel-child.ts --mode delta|rewrite --per-kind N [--seed S] [--cnps N] [--shared-admin-chains]
//
// With `--cnps N`, N ClusterNetworkPolicies (bench/cnps.ts) are added to the cluster first, and
// the events include their changes (added, deleted, priority changed); with
// `--shared-admin-chains`, compiled as `policyctl agent --shared-admin-chains` does.
//
// Both modes: the 10k-pod / 2k-policy cluster, node-001 (250 pods); its Ruleset applied cold by
// the Syncer; then `per-kind` events of each kind (bench/events.ts), shuffled, each timed from
// the model change until the kernel write returns:
// - delta: IncrementalCompiler.ruleset() + delta(), Syncer.syncDelta() (plan from the delta,
//   known state patched, dependency-ordered restore calls), through the agent's runner (small
//   set payloads answered by its long-lived ipset session). This is the agent's path.
// - rewrite: the same incremental compile, then the whole Ruleset written again: every set
//   created if missing, flushed and refilled (`ipset restore`), every chain flushed and
//   rewritten (`iptables-restore --noflush`), chains and sets that went deleted and destroyed.
// Afterwards a fresh read of the kernel is diffed against a full compile: it must be empty.

import { parseArgs } from 'node:util';
import { compile, type CompileOptions } from '../src/compiler/compile.ts';
import { IncrementalCompiler } from '../src/compiler/incremental.ts';
import { renderChainBody, renderSetCreate, renderSetMember } from '../src/sync/render.ts';
import type { Ruleset } from '../src/compiler/ruleset.ts';
import { NFT } from '../src/sync/backend.ts';
import { isEmpty } from '../src/sync/plan.ts';
import { agentRunner } from '../src/sync/agent-runner.ts';
import { mustRun, processRunner, type Runner } from '../src/sync/runner.ts';
import { Syncer } from '../src/sync/syncer.ts';
import { addClusterPolicies } from './cnps.ts';
import { IdleCollector } from '../src/agent/idle-gc.ts';
import { CNP_EVENT_KINDS, EVENT_KINDS, EventSource, QUIET_BEFORE_EVENT_MS, type EventKind } from './events.ts';
import { collect } from './harness.ts';
import { generateCluster } from './synthetic.ts';

const KERNEL_NODE = 'node-001';

export interface KernelSample {
  readonly kind: EventKind;
  /** Model change to the kernel write returning. */
  readonly totalMs: number;
  /** model change + ruleset() (+ delta()). */
  readonly compileMs: number;
  /** Time inside the restore processes (spawn included). */
  readonly processMs: number;
  readonly processes: number;
  /** iptables-restore alone (0 when not run). */
  readonly iptablesMs: number;
  readonly rules: number;
  readonly setEntries: number;
  /** delta mode: the garbage collection run after the event (as the agent does), not in totalMs. */
  readonly gcMs: number;
}

export interface KernelChildResult {
  readonly mode: 'delta' | 'rewrite';
  readonly coldMs: number;
  readonly samples: readonly KernelSample[];
  /** A fresh read of the kernel diffed against a full compile at the end: nothing to do. */
  readonly verifiedEqual: boolean;
  readonly verifyDetail: string;
  /** Median time of spawning `true` through the same runner: the floor of each process. */
  readonly spawnMs: number;
}

/** A runner that keeps each call's duration. */
/** Times each call; `process` is false for the calls the ipset session answered (no process started). */
class TimedRunner implements Runner {
  calls: { cmd: string; ms: number; process: boolean }[] = [];
  private readonly inner: ReturnType<typeof agentRunner>;
  constructor(inner: ReturnType<typeof agentRunner>) {
    this.inner = inner;
  }
  async run(cmd: string, args: readonly string[], opts?: { input?: string }) {
    const t0 = performance.now();
    const served = this.inner.session.calls;
    try {
      return await this.inner.run(cmd, args, opts);
    } finally {
      this.calls.push({ cmd, ms: performance.now() - t0, process: this.inner.session.calls === served });
    }
  }
}

/** The whole Ruleset written again, as a sync layer without a diff would: see the header. */
async function rewrite(runner: Runner, rs: Ruleset, prev: Ruleset): Promise<{ rules: number; setEntries: number }> {
  const before: string[] = [];
  let setEntries = 0;
  for (const s of rs.sets) {
    before.push(renderSetCreate(s), `flush ${s.name}`);
    for (const m of s.members) before.push(renderSetMember(s.name, m.entry, m.nomatch));
    setEntries += s.members.length;
  }
  const chains = new Set(rs.chains.map((c) => c.name));
  const gone = prev.chains.map((c) => c.name).filter((n) => !chains.has(n));
  const ipt = ['*filter', ...rs.chains.map((c) => `:${c.name} - [0:0]`), ...gone.map((n) => `:${n} - [0:0]`)];
  let rules = 0;
  for (const c of rs.chains) {
    ipt.push(...renderChainBody(c));
    rules += c.rules.length;
  }
  ipt.push(...gone.map((n) => `-X ${n}`), 'COMMIT');
  const sets = new Set(rs.sets.map((s) => s.name));
  const destroy = prev.sets.filter((s) => !sets.has(s.name)).map((s) => `destroy ${s.name}`);
  await mustRun(runner, 'ipset', ['restore', '-exist'], { input: before.join('\n') + '\n' });
  await mustRun(runner, NFT.restore, ['--noflush', '--wait=10'], { input: ipt.join('\n') + '\n' });
  if (destroy.length) await mustRun(runner, 'ipset', ['restore', '-exist'], { input: destroy.join('\n') + '\n' });
  return { rules, setEntries };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { mode: { type: 'string' }, 'per-kind': { type: 'string' }, seed: { type: 'string', default: '1' }, cnps: { type: 'string', default: '0' }, 'shared-admin-chains': { type: 'boolean', default: false } } });
  const mode = values.mode;
  if (mode !== 'delta' && mode !== 'rewrite') throw new Error(`--mode must be delta or rewrite, got ${JSON.stringify(mode)}`);
  const perKind = Number(values['per-kind']);
  const progress = (l: string) => process.stderr.write(`  [kernel ${mode}] ${l}\n`);

  const c = generateCluster({ pods: 10_000, policies: 2_000, seed: Number(values.seed) });
  const cnps = Number(values.cnps);
  if (cnps > 0) addClusterPolicies(c, cnps);
  const kinds: readonly EventKind[] = cnps > 0 ? [...EVENT_KINDS, ...CNP_EVENT_KINDS] : EVENT_KINDS;
  const model = c.model;
  // The agent's default layout (the verdict cache on: every write also empties PCTL-verdicts).
  const opts: CompileOptions = { verdictCache: true, ...(values['shared-admin-chains'] && { tiers: { continuation: { Admin: 'dispatch' } } }) };
  const ic = new IncrementalCompiler(model, KERNEL_NODE, opts);
  // The agent's runner: small set payloads through its long-lived ipset session.
  const session = agentRunner();
  const timed = new TimedRunner(session);
  const syncer = new Syncer({ runner: timed, backend: { ...NFT, reason: 'bench' } });

  // Cold apply by the Syncer (reads the empty kernel, writes everything).
  let from = ic.ruleset();
  let t = performance.now();
  await syncer.sync(from);
  const coldMs = performance.now() - t;

  const spawn: number[] = [];
  for (let i = 0; i < 15; i++) {
    t = performance.now();
    await processRunner().run('true', []);
    spawn.push(performance.now() - t);
  }
  spawn.sort((a, b) => a - b);

  const events = new EventSource(c, KERNEL_NODE);
  const step = async (kind: EventKind): Promise<KernelSample> => {
    const ev = events.next(kind);
    timed.calls = [];
    const t0 = performance.now();
    ev.apply(model);
    const rs = ic.ruleset();
    const delta = ic.delta();
    const t1 = performance.now();
    let size: { rules: number; setEntries: number };
    if (mode === 'delta') {
      const r = await syncer.syncDelta(rs, delta, from);
      if (r.planFrom !== 'delta') throw new Error(`after a ${kind} event the Syncer planned from ${r.planFrom}, not from the delta`);
      size = r.counts;
    } else {
      size = await rewrite(timed, rs, from);
    }
    const t2 = performance.now();
    from = rs;
    const ipt = timed.calls.filter((x) => x.cmd.endsWith('-restore'));
    const processMs = timed.calls.reduce((n, x) => n + x.ms, 0);
    const processes = timed.calls.filter((x) => x.process).length;
    // The agent collects the garbage (stale rules, chains, sets) right after each sync.
    const t3 = performance.now();
    if (mode === 'delta') await syncer.collectGarbage();
    const gcMs = performance.now() - t3;
    return {
      kind,
      totalMs: t2 - t0,
      compileMs: t1 - t0,
      processMs,
      processes,
      iptablesMs: ipt.reduce((n, x) => n + x.ms, 0),
      rules: size.rules,
      setEntries: size.setEntries,
      gcMs,
    };
  };

  // Warm-up: one event of each kind, not recorded.
  for (const kind of events.sequence(1, kinds)) await step(kind);
  collect();
  // The agent's idle collection (policyctl agent: src/cli/agent.ts).
  const idle = new IdleCollector();
  const samples: KernelSample[] = [];
  const seq = events.sequence(perKind, kinds);
  for (const [i, kind] of seq.entries()) {
    if (i % 50 === 0) progress(`event ${i}/${seq.length}`);
    // Single events: each comes to an agent that is done with the one before (its garbage
    // collection, and the background work that follows a quiet moment, such as starting the
    // next spare iptables-nft-restore, and V8's young generation collected as the agent does
    // when idle: src/agent/idle-gc.ts), as events spaced apart do. Not timed.
    idle.idle();
    await new Promise((r) => setTimeout(r, QUIET_BEFORE_EVENT_MS));
    idle.busy();
    samples.push(await step(kind));
  }

  session.close();
  // The kernel now must hold exactly what a full compile wants.
  const check = await new Syncer({ runner: processRunner(), backend: { ...NFT, reason: 'bench' }, dryRun: true }).verify(compile(model, KERNEL_NODE, opts));
  const p = check.plan;
  const verifyDetail = `sets to create ${p.createSets.length}, entries to add ${p.addMembers.length} and delete ${p.delMembers.length}, chains to write ${p.writeChains.length} and delete ${p.deleteChains.length}, hooks to fix ${p.insertHooks.length + p.removeHooks.length}, sets to destroy ${p.destroySets.length}`;
  ic.dispose();
  const result: KernelChildResult = { mode, coldMs, samples, verifiedEqual: isEmpty(p), verifyDetail, spawnMs: spawn[Math.floor(spawn.length / 2)]! };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`kernel-child: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
