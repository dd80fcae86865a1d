// Part 2, "incremental": from one model change to the sync plan.
//
// On the 10k pods / 2k policies cluster, for the node holding 250 pods, events of every kind in
// bench/events.ts, shuffled. Three runs over fresh events:
//
// A. The agent's path (the target). Timed: model.upsert/remove + IncrementalCompiler.ruleset()
//    + delta() + planFromDelta(delta, known) (src/sync/plan-from-delta.ts), what
//    Syncer.syncDelta does before writing. Then, timed on its own (it runs after the kernel
//    write): applyPlan(known, plan), the Syncer patching its known state.
// B. The previous path, for comparison: model change + ruleset() + diff(desired, known), the
//    whole Ruleset walked, with known = stateOf(previous) precomputed (stateOf timed on its
//    own); and on the same events the proposal `diffSince` (bench/proposals/diff-since.ts).
// C. Baseline: model change + compile(model, node) + diff (fewer events).
//
// Correctness guards (not timed): in A, at checkpoints, the plan from the delta equals diff's,
// the patched state leaves nothing to diff, and the incremental Ruleset renders exactly as a
// full compile; in B, on every event, diffSince and planFromDelta give diff's plan.

import { compile } from '../../src/compiler/compile.ts';
import { IncrementalCompiler } from '../../src/compiler/incremental.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import type { KernelState } from '../../src/sync/kernel-state.ts';
import { planFromDelta } from '../../src/sync/plan-from-delta.ts';
import { applyPlan, diff, isEmpty, type Plan } from '../../src/sync/plan.ts';
import { stateOf } from '../../src/sync/syncer.ts';
import { EVENT_DESCRIPTIONS, EVENT_KINDS, EventSource, type EventKind } from '../events.ts';
import { collect, max, mean, median, percentile, target, type BenchOptions, type BenchPart, type Cell, type PartResult } from '../harness.ts';
import { diffSince } from '../proposals/diff-since.ts';
import { generateCluster } from '../synthetic.ts';

const NODE = 'node-001'; // the node holding 250 pods

/** Run A, the agent's path. */
interface Sample {
  readonly kind: EventKind;
  readonly applyMs: number;
  /** ruleset() + delta() */
  readonly compileMs: number;
  /** planFromDelta */
  readonly planMs: number;
  /** model change to plan */
  readonly totalMs: number;
  /** applyPlan(known, plan), after the write */
  readonly patchMs: number;
  readonly rulesWritten: number;
  readonly chainsWritten: number;
  readonly setEntries: number;
  readonly chainsRecomputed: number;
}

/** Run B, the whole-Ruleset diff. */
interface DiffSample {
  readonly kind: EventKind;
  readonly diffMs: number;
  readonly totalMs: number;
  readonly totalSinceMs: number;
}

/** What a plan writes: rules (chain bodies and hooks) and set entries (added, deleted, in created sets). */
export function planSize(p: Plan): { rules: number; chains: number; setEntries: number } {
  return {
    rules: p.writeChains.reduce((n, c) => n + c.rules.length, 0) + p.appendRules.reduce((n, a) => n + a.rules.length, 0) + p.insertHooks.length + p.removeHooks.length,
    chains: p.writeChains.length + p.deleteChains.length,
    setEntries: p.addMembers.length + p.delMembers.length + [...p.createSets, ...p.replaceSets].reduce((n, s) => n + s.members.length, 0),
  };
}

/** Order-insensitive text of a plan, to check two plans agree. */
function planKey(p: Plan): string {
  const sorted = <T>(xs: readonly T[], k: (x: T) => string) => xs.map(k).sort().join('\n');
  return [
    sorted(p.createSets, (s) => `${s.name} ${s.type} ${s.members.map((m) => m.entry + (m.nomatch ? '!' : '')).join(',')}`),
    sorted(p.replaceSets, (s) => s.name),
    sorted(p.addMembers, (m) => `${m.set} ${m.entry} ${!!m.nomatch}`),
    sorted(p.delMembers, (m) => `${m.set} ${m.entry}`),
    sorted(p.writeChains, (c) => `${c.name} ${c.rules.length}`),
    sorted(p.appendRules, (a) => `${a.chain} ${a.rules.length}`),
    sorted(p.removeRules, (r) => `${r.chain} ${r.ids.join(',')}`),
    sorted(p.deleteChains, (c) => c),
    sorted(p.removeHooks, (h) => h.line),
    sorted(p.insertHooks, (h) => h.chain),
    sorted(p.destroySets, (s) => s),
  ].join('\n--\n');
}

const text = (rs: Ruleset) => renderIpsetRestore(rs.sets) + renderIptablesRestore(rs);

export const incrementalPart: BenchPart = {
  name: 'incremental',
  title: 'Part 2: from a model change to the sync plan',
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
    // What the Syncer knows after its first (full) sync; from then on patched with each plan.
    let known: KernelState = stateOf(prev);

    // Warm-up: a few events of each kind, not recorded.
    for (const kind of events.sequence(5)) {
      events.next(kind).apply(model);
      prev = ic.ruleset();
      const plan = planFromDelta(ic.delta(), known);
      diff(prev, known);
      diffSince(prev, prev, known);
      known = applyPlan(known, plan);
    }
    collect();

    // Run A: the agent's path. Each event: model change, ruleset() + delta(), plan from the
    // delta; then the known state patched with the plan (timed apart: after the kernel write).
    const samples: Sample[] = [];
    const seq = events.sequence(perKind);
    let checks = 0;
    for (const [i, kind] of seq.entries()) {
      if (i % 200 === 0) o.progress(`incremental: agent path (plan from the delta), event ${i}/${seq.length}`);
      const ev = events.next(kind);
      const t0 = performance.now();
      ev.apply(model);
      const t1 = performance.now();
      const rs = ic.ruleset();
      const delta = ic.delta();
      const t2 = performance.now();
      const plan = planFromDelta(delta, known);
      const t3 = performance.now();
      const check = i % checkEvery === checkEvery - 1;
      if (check && planKey(plan) !== planKey(diff(rs, known))) throw new Error(`planFromDelta disagrees with diff after a ${kind} event`);
      const t4 = performance.now();
      known = applyPlan(known, plan);
      const t5 = performance.now();
      if (check) {
        checks++;
        if (!isEmpty(diff(rs, known))) throw new Error(`the patched known state differs from the Ruleset after a ${kind} event`);
        if (text(rs) !== text(compile(model, NODE))) throw new Error(`incremental Ruleset differs from a full compile after a ${kind} event`);
      }
      const size = planSize(plan);
      samples.push({
        kind,
        applyMs: t1 - t0,
        compileMs: t2 - t1,
        planMs: t3 - t2,
        totalMs: t3 - t0,
        patchMs: t5 - t4,
        rulesWritten: size.rules,
        chainsWritten: size.chains,
        setEntries: size.setEntries,
        chainsRecomputed: ic.stats()?.chainsRecomputed ?? 0,
      });
      prev = rs;
    }
    notes.push(`checked: on the agent path, the plan from the delta equalled diff's, the patched known state left nothing to diff, and the incremental Ruleset rendered exactly as a full compile, at ${checks} checkpoints.`);

    // Run B: the whole-Ruleset diff against stateOf(previous) (precomputed), and diffSince.
    collect();
    const diffSamples: DiffSample[] = [];
    const stateOfMs: number[] = [];
    let prevState = stateOf(prev);
    for (const [i, kind] of events.sequence(perKind).entries()) {
      if (i % 200 === 0) o.progress(`incremental: whole-Ruleset diff, event ${i}/${seq.length}`);
      const ev = events.next(kind);
      const t0 = performance.now();
      ev.apply(model);
      const rs = ic.ruleset();
      const t2 = performance.now();
      const plan = diff(rs, prevState);
      const t3 = performance.now();
      const plan2 = diffSince(rs, prev, prevState);
      const t4 = performance.now();
      diffSamples.push({ kind, diffMs: t3 - t2, totalMs: t3 - t0, totalSinceMs: t2 - t0 + (t4 - t3) });
      const want = planKey(plan);
      if (planKey(plan2) !== want) throw new Error(`diffSince disagrees with diff after a ${kind} event`);
      if (planKey(planFromDelta(ic.delta(), prevState)) !== want) throw new Error(`planFromDelta disagrees with diff after a ${kind} event`);
      const t6 = performance.now();
      prevState = stateOf(rs);
      stateOfMs.push(performance.now() - t6);
      prev = rs;
    }
    ic.dispose();
    notes.push(`checked: on the whole-Ruleset diff run, diffSince and planFromDelta gave diff's plan on all ${diffSamples.length} events.`);

    // Run C: the same kinds of events with a full compile per event.
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
    const row = (label: string, s: readonly Sample[], d: readonly DiffSample[], full: readonly { totalMs: number }[]) => {
      const tot = s.map((x) => x.totalMs);
      rows.push([
        label,
        s.length,
        median(tot),
        p99(tot),
        max(tot),
        p99(s.map((x) => x.compileMs)),
        p99(s.map((x) => x.planMs)),
        p99(s.map((x) => x.patchMs)),
        median(d.map((x) => x.totalMs)),
        p99(d.map((x) => x.totalMs)),
        p99(d.map((x) => x.diffMs)),
        p99(d.map((x) => x.totalSinceMs)),
        mean(s.map((x) => x.chainsRecomputed)),
        mean(s.map((x) => x.rulesWritten)),
        mean(s.map((x) => x.setEntries)),
        max(s.map((x) => x.setEntries)),
        full.length ? median(full.map((x) => x.totalMs)) : null,
      ]);
    };
    for (const kind of EVENT_KINDS) {
      const s = samples.filter((x) => x.kind === kind);
      const d = diffSamples.filter((x) => x.kind === kind);
      row(kind, s, d, fullSamples.filter((x) => x.kind === kind));
      const k = kind.replaceAll('-', '_');
      metrics[`event_to_diff_ms_p99_${k}`] = round(p99(s.map((x) => x.totalMs)));
      metrics[`event_to_full_diff_ms_p99_${k}`] = round(p99(d.map((x) => x.totalMs)));
    }
    row('all kinds', samples, diffSamples, fullSamples);

    const all = samples.map((x) => x.totalMs);
    const allDiff = diffSamples.map((x) => x.totalMs);
    metrics.event_to_diff_ms_p50 = round(median(all));
    metrics.event_to_diff_ms_p99 = round(p99(all));
    metrics.event_compile_ms_p50 = round(median(samples.map((x) => x.compileMs)));
    metrics.event_compile_ms_p99 = round(p99(samples.map((x) => x.compileMs)));
    metrics.event_plan_ms_p99 = round(p99(samples.map((x) => x.planMs)));
    metrics.event_patch_known_ms_p50 = round(median(samples.map((x) => x.patchMs)));
    metrics.event_patch_known_ms_p99 = round(p99(samples.map((x) => x.patchMs)));
    metrics.event_to_full_diff_ms_p50 = round(median(allDiff));
    metrics.event_to_full_diff_ms_p99 = round(p99(allDiff));
    metrics.event_diff_ms_p50 = round(median(diffSamples.map((x) => x.diffMs)));
    metrics.event_diff_ms_p99 = round(p99(diffSamples.map((x) => x.diffMs)));
    metrics.event_to_diff_since_ms_p50 = round(median(diffSamples.map((x) => x.totalSinceMs)));
    metrics.event_to_diff_since_ms_p99 = round(p99(diffSamples.map((x) => x.totalSinceMs)));
    metrics.event_to_diff_full_compile_ms_p50 = round(median(fullSamples.map((x) => x.totalMs)));
    metrics.event_to_diff_full_compile_ms_p99 = round(p99(fullSamples.map((x) => x.totalMs)));
    metrics.state_of_ms_p50 = round(median(stateOfMs));
    metrics.events = samples.length + diffSamples.length;

    return {
      tables: [
        {
          title: `event -> sync plan on 10k pods / 2k policies, node with 250 pods (${perKind} events per kind, shuffled)`,
          columns: ['event', 'n', 'p50 ms', 'p99 ms', 'max ms', 'compile p99', 'plan p99', 'patch p99', 'full diff p50', 'full diff p99', 'diff alone p99', 'diffSince p99', 'chains built', 'rules written', 'set entries', 'max entries', 'full-compile p50'],
          rows,
          notes: [
            'p50/p99/max: the agent path: model change + IncrementalCompiler.ruleset() + delta() + planFromDelta(delta, known) (src/sync/plan-from-delta.ts).',
            'compile p99 / plan p99: its parts; patch p99: applyPlan(known, plan), the Syncer updating what it knows after the write (not in the span).',
            'full diff p50/p99: the previous path, in a separate run of as many events: model change + ruleset() + diff(desired, stateOf(previous)) over the whole Ruleset',
            `  (stateOf precomputed; its median is ${round(median(stateOfMs))} ms); diff alone p99: that diff on its own; diffSince p99: the same span with bench/proposals/diff-since.ts.`,
            'chains built: chains computed (not memoized) per event; rules written / set entries: mean size of the plan (rules in rewritten chains and hooks; set entries added, deleted, or in created sets).',
            `full-compile p50: model change + compile(model, node) + diff (${fullPerKind} events per kind).`,
            ...EVENT_KINDS.map((k) => `${k}: ${EVENT_DESCRIPTIONS[k]}`),
          ],
        },
      ],
      metrics,
      targets: [target('event_to_diff_ms_p99', p99(all), 2, 'ms')],
      notes,
      detail: {
        samples: samples.map((x) => ({ ...x, applyMs: round(x.applyMs), compileMs: round(x.compileMs), planMs: round(x.planMs), totalMs: round(x.totalMs), patchMs: round(x.patchMs) })),
        fullDiffSamples: diffSamples.map((x) => ({ kind: x.kind, diffMs: round(x.diffMs), totalMs: round(x.totalMs), totalSinceMs: round(x.totalSinceMs) })),
        fullCompileSamples: fullSamples.map((x) => ({ kind: x.kind, compileMs: round(x.compileMs), totalMs: round(x.totalMs) })),
      },
    };
  },
};

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
