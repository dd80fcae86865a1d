// The benchmark harness: parts, results, statistics, table printing.
//
// A part is one section of the issue ("compile", "incremental", later "kernel" and
// "dataplane"): it runs with the shared options and returns tables to print and flat metrics
// for the JSON report. Adding a part = writing a `BenchPart` and listing it in bench/parts.ts.

export interface BenchOptions {
  /** Smaller repeat counts and no 50k-pod cluster: the whole run well under 5 minutes. */
  readonly quick: boolean;
  readonly seed: number;
  /** Progress lines (stderr). */
  readonly progress: (line: string) => void;
}

export type Cell = string | number | boolean | null;

export interface Table {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly Cell[])[];
  /** Printed under the table. */
  readonly notes?: readonly string[];
}

/** A target from the issue: the metric, the bound, and whether it was met. */
export interface Target {
  readonly metric: string;
  readonly bound: number;
  readonly unit: string;
  readonly value: number | null;
  readonly met: boolean | null;
  /** How value and bound compare when the target is met; default `<`. */
  readonly relation?: '<' | '<=' | '>=';
}

export interface PartResult {
  readonly tables: readonly Table[];
  /** Flat key -> value, merged into the JSON report (keys are global: prefix them if unsure). */
  readonly metrics: Readonly<Record<string, Cell>>;
  readonly targets?: readonly Target[];
  /** Anything skipped or worth knowing about how the figures were taken. */
  readonly notes?: readonly string[];
  /** Raw detail for the JSON report (per-run samples etc.). */
  readonly detail?: unknown;
}

export interface BenchPart {
  readonly name: string;
  readonly title: string;
  run(o: BenchOptions): Promise<PartResult>;
}

// ---- statistics -----------------------------------------------------------------------------

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export const median = (s: readonly number[]) => percentile(s, 50);
export const mean = (s: readonly number[]) => (s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN);
export const max = (s: readonly number[]) => (s.length ? Math.max(...s) : NaN);

/** Run `f` `warmup` times untimed, then `runs` times timed; returns each run's milliseconds. */
export function timeRuns<T>(f: () => T, runs: number, warmup: number): { ms: number[]; last: T } {
  let last = f();
  for (let i = 1; i < warmup; i++) last = f();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    last = f();
    ms.push(performance.now() - t0);
  }
  return { ms, last };
}

// ---- memory ---------------------------------------------------------------------------------

const gcFn = (globalThis as { gc?: () => void }).gc;

export const gcAvailable = typeof gcFn === 'function';

/** Full GC when the process runs with --expose-gc (twice: weak references settle on the second). */
export function collect(): void {
  if (gcFn) {
    gcFn();
    gcFn();
  }
}

export function memoryMb(): { rss: number; heapUsed: number } {
  const m = process.memoryUsage();
  return { rss: m.rss / 2 ** 20, heapUsed: m.heapUsed / 2 ** 20 };
}

// ---- output ---------------------------------------------------------------------------------

export function fmt(v: Cell, digits = 2): string {
  if (v === null) return '-';
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return '-';
    if (Number.isInteger(v)) return String(v);
    return v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : digits);
  }
  return String(v);
}

export function formatTable(t: Table): string {
  const cells = t.rows.map((r) => r.map((c) => fmt(c)));
  const widths = t.columns.map((c, i) => Math.max(c.length, ...cells.map((r) => (r[i] ?? '').length)));
  const numeric = t.columns.map((_, i) => t.rows.every((r) => typeof r[i] === 'number' || r[i] === null));
  const line = (r: readonly string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [`## ${t.title}`, '', line(t.columns), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)];
  for (const n of t.notes ?? []) out.push(`  ${n}`);
  return out.join('\n') + '\n';
}

export function formatTargets(targets: readonly Target[]): string {
  if (targets.length === 0) return '';
  return formatTable({
    title: 'Targets',
    columns: ['metric', 'value', 'target', 'met'],
    rows: targets.map((t) => [t.metric, t.value === null ? null : `${fmt(t.value)} ${t.unit}`.trim(), `${t.relation ?? '<'} ${t.bound} ${t.unit}`.trim(), t.met === null ? 'not measured' : t.met ? 'yes' : 'NO']),
  });
}

export function target(metric: string, value: number | null, bound: number, unit: string): Target {
  return { metric, value, bound, unit, met: value === null ? null : value < bound };
}
