// Part 2, "incremental": from one model change to the Ruleset diff.
//
// On the 10k pods / 2k policies cluster, for the node holding 250 pods, events of every kind in
// bench/events.ts, shuffled. Three runs over fresh events:
//
// A. The agent's path today. Timed: model.upsert/remove + IncrementalCompiler.ruleset() +
//    diff(desired, stateOf(previous)). stateOf(previous) is not in the span: the Syncer keeps
//    that state after each apply; its cost is reported on its own. On the same events, the span
//    with the proposed `diffSince` (bench/proposals/diff-since.ts) is timed too.
// B. The proposed path: model change + ruleset() + planFromDelta(ic.delta())
//    (bench/proposals/plan-from-delta.ts), with no stateOf per event, since a sync layer using
//    deltas would patch its known state instead of rebuilding it.
// C. Baseline: model change + compile(model, node) + diff (fewer events).
//
// Correctness guards (not timed): in A, diffSince and planFromDelta must give the same plan as
// diff on every event, and the incremental Ruleset must render exactly as a full compile every
// few events; in B, planFromDelta is checked against diff at checkpoints.

import { compile } from '../../src/compiler/compile.ts';
import { IncrementalCompiler } from '../../src/compiler/incremental.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/compiler/render.ts';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import type { KernelState } from '../../src/sync/kernel-state.ts';
import { diff, type Plan } from '../../src/sync/plan.ts';
import { stateOf } from '../../src/sync/syncer.ts';
import { EVENT_DESCRIPTIONS, EVENT_KINDS, EventSource, type EventKind } from '../events.ts';
import { collect, max, mean, median, percentile, target, type BenchOptions, type BenchPart, type Cell, type PartResult } from '../harness.ts';
import { diffSince } from '../proposals/diff-since.ts';
import { planFromDelta } from '../proposals/plan-from-delta.ts';
import { generateCluster } from '../synthetic.ts';

const NODE = 'node-001'; // the node holding 250 pods

interface Sample {
  readonly kind: EventKind;
  readonly applyMs: number;
  readonly compileMs: number;
  readonly diffMs: number;
  readonly diffSinceMs: number;
  readonly totalMs: number;
  readonly totalSinceMs: number;
  readonly rulesWritten: number;
  readonly chainsWritten: number;
  readonly setEntries: number;
  readonly chainsRecomputed: number;
}

interface DeltaSample {
  readonly kind: EventKind;
  readonly compileMs: number;
  readonly totalMs: number;
}

/** What a plan writes: rules (chain bodies and hooks) and set entries (added, deleted, in created sets). */
export function planSize(p: Plan): { rules: number; chains: number; setEntries: number } {
  return {
    rules: p.writeChains.reduce((n, c) => n + c.rules.length, 0) + p.insertHooks.length + p.removeHooks.length,
    chains: p.writeChains.length + p.deleteChains.length,
    setEntries: p.addMembers.length + p.delMembers.length + [...p.createSets, ...p.replaceSets].reduce((n, s) => n + s.members.length, 0),
  };
}

/** Order-insensitive text of a plan, to check two diffs agree. */
function planKey(p: Plan): string {
  const sorted = <T>(xs: readonly T[], k: (x: T) => string) => xs.map(k).sort().join('\n');
  return [
    sorted(p.createSets, (s) => `${s.name} ${s.type} ${s.members.map((m) => m.entry + (m.nomatch ? '!' : '')).join(',')}`),
    sorted(p.replaceSets, (s) => s.name),
    sorted(p.addMembers, (m) => `${m.set} ${m.entry} ${!!m.nomatch}`),
    sorted(p.delMembers, (m) => `${m.set} ${m.entry}`),
    sorted(p.writeChains, (c) => `${c.name} ${c.rules.length}`),
    sorted(p.deleteChains, (c) => c),
    sorted(p.removeHooks, (h) => h.line),
    sorted(p.insertHooks, (h) => h.chain),
    sorted(p.destroySets, (s) => s),
  ].join('\n--\n');
}

const text = (rs: Ruleset) => renderIpsetRestore(rs.sets) + renderIptablesRestore(rs);

export const incrementalPart: BenchPart = {
  name: 'incremental',
  title: 'Part 2: from a model change to the Ruleset diff',
  async run(o: BenchOptions): Promise<PartResult> {
    const perKind = o.quick ? 60 : 200;
    const fullPerKind = o.quick ? 3 : 15;
    const checkEvery = o.quick ? 40 : 50;
    const notes: string[] = [];
    if (o.quick) notes.push(`quick mode: ${perKind} events per kind (200 in a full run), ${fullPerKind} per kind for the full-compile baseline.`);

    o.progress('incremental: generating 10000 pods / 2000 policies');
    const c = generateCluster({ pods: 10000, policies: 2000, seed: o.seed });
    const model = c.model;
    const events = new EventSource(c, NODE);
    const ic = new IncrementalCompiler(model, NODE);
    let prev = ic.ruleset();
    let prevState: KernelState = stateOf(prev);
    const stateOfMs: number[] = [];

    // Warm-up: a few events of each kind, not recorded.
    for (const kind of events.sequence(5)) {
      events.next(kind).apply(model);
      prev = ic.ruleset();
      diff(prev, prevState);
      diffSince(prev, prev, prevState);
      planFromDelta(ic.delta());
      prevState = stateOf(prev);
    }
    collect();

    // Phase A: the agent's path today. Each event: model change, incremental ruleset, full diff.
    const samples: Sample[] = [];
    const seq = events.sequence(perKind);
    let checks = 0;
    for (const [i, kind] of seq.entries()) {
      if (i % 200 === 0) o.progress(`incremental: diff path, event ${i}/${seq.length}`);
      const ev = events.next(kind);
      const t0 = performance.now();
      ev.apply(model);
      const t1 = performance.now();
      const rs = ic.ruleset();
      const t2 = performance.now();
      const plan = diff(rs, prevState);
      const t3 = performance.now();
      const plan2 = diffSince(rs, prev, prevState);
      const t4 = performance.now();
      const size = planSize(plan);
      samples.push({
        kind,
        applyMs: t1 - t0,
        compileMs: t2 - t1,
        diffMs: t3 - t2,
        diffSinceMs: t4 - t3,
        totalMs: t3 - t0,
        totalSinceMs: t2 - t0 + (t4 - t3),
        rulesWritten: size.rules,
        chainsWritten: size.chains,
        setEntries: size.setEntries,
        chainsRecomputed: ic.stats()?.chainsRecomputed ?? 0,
      });
      const want = planKey(plan);
      if (planKey(plan2) !== want) throw new Error(`diffSince disagrees with diff after a ${kind} event`);
      if (planKey(planFromDelta(ic.delta())) !== want) throw new Error(`planFromDelta disagrees with diff after a ${kind} event`);
      if (i % checkEvery === checkEvery - 1) {
        checks++;
        if (text(rs) !== text(compile(model, NODE))) throw new Error(`incremental Ruleset differs from a full compile after a ${kind} event`);
      }
      const t6 = performance.now();
      prevState = stateOf(rs);
      stateOfMs.push(performance.now() - t6);
      prev = rs;
    }
    notes.push(`checked: diffSince and planFromDelta gave the same plan as diff on all ${samples.length} events of the diff path; the incremental Ruleset rendered exactly as a full compile at ${checks} checkpoints.`);

    // Phase B: the proposed path. Each event: model change, incremental ruleset, plan from the
    // delta; no stateOf per event (the sync layer would patch its known state with the delta).
    // Checked against the full diff at checkpoints (stateOf taken before the event, untimed).
    collect();
    const deltaSamples: DeltaSample[] = [];
    let deltaChecks = 0;
    for (const [i, kind] of events.sequence(perKind).entries()) {
      if (i % 200 === 0) o.progress(`incremental: delta path, event ${i}/${seq.length}`);
      const ev = events.next(kind);
      const check = i % checkEvery === checkEvery - 1;
      const before = check ? stateOf(prev) : undefined;
      const t0 = performance.now();
      ev.apply(model);
      const t1 = performance.now();
      const rs = ic.ruleset();
      const t2 = performance.now();
      const plan = planFromDelta(ic.delta());
      const t3 = performance.now();
      deltaSamples.push({ kind, compileMs: t2 - t1, totalMs: t3 - t0 });
      if (before) {
        deltaChecks++;
        if (planKey(plan) !== planKey(diff(rs, before))) throw new Error(`planFromDelta disagrees with diff after a ${kind} event`);
      }
      prev = rs;
    }
    ic.dispose();
    notes.push(`checked: on the delta path, planFromDelta gave the same plan as diff at ${deltaChecks} checkpoints.`);

    // Phase C: the same kinds of events with a full compile per event.
    collect();
    o.progress(`incremental: baseline with a full compile per event (${fullPerKind} per kind)`);
    prev = compile(model, NODE);
    prevState = stateOf(prev);
    const fullSamples: { kind: EventKind; totalMs: number; compileMs: number }[] = [];
    for (const kind of events.sequence(fullPerKind)) {
      const ev = events.next(kind);
      const t0 = performance.now();
      ev.apply(model);
      const t1 = performance.now();
      const rs = compile(model, NODE);
      const t2 = performance.now();
      diff(rs, prevState);
      const t3 = performance.now();
      fullSamples.push({ kind, totalMs: t3 - t0, compileMs: t2 - t1 });
      prevState = stateOf(rs);
      prev = rs;
    }

    const rows: Cell[][] = [];
    const metrics: Record<string, Cell> = {};
    const p99 = (xs: readonly number[]) => percentile(xs, 99);
    const row = (label: string, s: readonly Sample[], d: readonly DeltaSample[], full: readonly { totalMs: number }[]) => {
      const tot = s.map((x) => x.totalMs);
      rows.push([
        label,
        s.length,
        median(tot),
        p99(tot),
        max(tot),
        p99(s.map((x) => x.compileMs)),
        p99(s.map((x) => x.diffMs)),
        p99(s.map((x) => x.totalSinceMs)),
        median(d.map((x) => x.totalMs)),
        p99(d.map((x) => x.totalMs)),
        mean(s.map((x) => x.chainsRecomputed)),
        mean(s.map((x) => x.rulesWritten)),
        mean(s.map((x) => x.setEntries)),
        max(s.map((x) => x.setEntries)),
        full.length ? median(full.map((x) => x.totalMs)) : null,
      ]);
    };
    for (const kind of EVENT_KINDS) {
      const s = samples.filter((x) => x.kind === kind);
      const d = deltaSamples.filter((x) => x.kind === kind);
      row(kind, s, d, fullSamples.filter((x) => x.kind === kind));
      const k = kind.replaceAll('-', '_');
      metrics[`event_to_diff_ms_p99_${k}`] = round(p99(s.map((x) => x.totalMs)));
      metrics[`event_to_delta_plan_ms_p99_${k}`] = round(p99(d.map((x) => x.totalMs)));
    }
    row('all kinds', samples, deltaSamples, fullSamples);

    const all = samples.map((x) => x.totalMs);
    const allDelta = deltaSamples.map((x) => x.totalMs);
    metrics.event_to_diff_ms_p50 = round(median(all));
    metrics.event_to_diff_ms_p99 = round(p99(all));
    metrics.event_compile_ms_p50 = round(median(samples.map((x) => x.compileMs)));
    metrics.event_compile_ms_p99 = round(p99(samples.map((x) => x.compileMs)));
    metrics.event_diff_ms_p50 = round(median(samples.map((x) => x.diffMs)));
    metrics.event_diff_ms_p99 = round(p99(samples.map((x) => x.diffMs)));
    metrics.event_to_diff_since_ms_p50 = round(median(samples.map((x) => x.totalSinceMs)));
    metrics.event_to_diff_since_ms_p99 = round(p99(samples.map((x) => x.totalSinceMs)));
    metrics.event_to_delta_plan_ms_p50 = round(median(allDelta));
    metrics.event_to_delta_plan_ms_p99 = round(p99(allDelta));
    metrics.event_delta_compile_ms_p99 = round(p99(deltaSamples.map((x) => x.compileMs)));
    metrics.event_to_diff_full_compile_ms_p50 = round(median(fullSamples.map((x) => x.totalMs)));
    metrics.event_to_diff_full_compile_ms_p99 = round(p99(fullSamples.map((x) => x.totalMs)));
    metrics.state_of_ms_p50 = round(median(stateOfMs));
    metrics.events = samples.length + deltaSamples.length;

    return {
      tables: [
        {
          title: `event -> diff on 10k pods / 2k policies, node with 250 pods (${perKind} events per kind, shuffled)`,
          columns: ['event', 'n', 'p50 ms', 'p99 ms', 'max ms', 'compile p99', 'diff p99', 'diffSince p99', 'delta p50', 'delta p99', 'chains built', 'rules written', 'set entries', 'max entries', 'full-compile p50'],
          rows,
          notes: [
            'p50/p99/max: model change + IncrementalCompiler.ruleset() + diff(desired, stateOf(previous)); stateOf(previous) is precomputed (the Syncer keeps it after each apply).',
            'compile p99 / diff p99: the two halves on their own. Proposals (bench/proposals/, not in src/sync yet):',
            '  diffSince p99: the same span with a diff that skips IpSet/Chain objects shared with the previous Ruleset;',
            '  delta p50/p99: model change + ruleset() + plan built from IncrementalCompiler.delta(), in a separate run of the same number of events without a stateOf per event.',
            'chains built: chains computed (not memoized) per event; rules written / set entries: mean size of the plan (rules in rewritten chains and hooks; set entries added, deleted, or in created sets).',
            `full-compile p50: the same span with compile(model, node) instead of the incremental compiler (${fullPerKind} events per kind).`,
            `stateOf(previous) median: ${round(median(stateOfMs))} ms (after each apply, not on the event path).`,
            ...EVENT_KINDS.map((k) => `${k}: ${EVENT_DESCRIPTIONS[k]}`),
          ],
        },
      ],
      metrics,
      targets: [
        target('event_to_diff_ms_p99', p99(all), 2, 'ms'),
        target('event_to_diff_since_ms_p99 (proposal)', p99(samples.map((x) => x.totalSinceMs)), 2, 'ms'),
        target('event_to_delta_plan_ms_p99 (proposal)', p99(allDelta), 2, 'ms'),
      ],
      notes,
      detail: {
        samples: samples.map((x) => ({ ...x, totalMs: round(x.totalMs), compileMs: round(x.compileMs), diffMs: round(x.diffMs), diffSinceMs: round(x.diffSinceMs), applyMs: round(x.applyMs), totalSinceMs: round(x.totalSinceMs) })),
        deltaSamples: deltaSamples.map((x) => ({ kind: x.kind, compileMs: round(x.compileMs), totalMs: round(x.totalMs) })),
        fullCompileSamples: fullSamples.map((x) => ({ kind: x.kind, compileMs: round(x.compileMs), totalMs: round(x.totalMs) })),
      },
    };
  },
};

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
