// deploy/grafana-dashboard.json: every query is parsed with Prometheus's own PromQL grammar
// (@prometheus-io/lezer-promql, the one its web UI uses) and must read only metrics the agent
// exports, with labels those metrics carry. The names come from the agent's registry
// (src/agent/metrics.ts), so renaming a metric there breaks this test until the dashboard follows.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../src/agent/metrics.ts';

const root = new URL('../../', import.meta.url).pathname;
const dashboard = JSON.parse(readFileSync(join(root, 'deploy/grafana-dashboard.json'), 'utf8')) as Dashboard;

interface Target {
  expr?: string;
  refId?: string;
}
interface Panel {
  type: string;
  title: string;
  targets?: Target[];
  panels?: Panel[];
}
interface Variable {
  name: string;
  type: string;
  query?: string | { query?: string };
}
interface Dashboard {
  panels: Panel[];
  templating: { list: Variable[] };
}

/** A series the agent exports: its name as scraped, its kind and labels. */
interface Series {
  readonly type: string;
  readonly labels: ReadonlySet<string>;
}

/** Every series name the agent's registry exposes (a histogram as its _bucket, _sum and _count series). */
function exportedSeries(): Map<string, Series> {
  const out = new Map<string, Series>();
  for (const m of new AgentMetrics().registry.getMetricsAsArray()) {
    const { name, type, labelNames } = m as unknown as { name: string; type: string; labelNames: string[] };
    const labels = new Set(labelNames);
    if (type === 'histogram') {
      out.set(`${name}_bucket`, { type: 'counter', labels: new Set([...labels, 'le']) });
      out.set(`${name}_sum`, { type: 'counter', labels });
      out.set(`${name}_count`, { type: 'counter', labels });
    } else out.set(name, { type, labels });
  }
  return out;
}
const exported = exportedSeries();

type SyntaxNode = ReturnType<typeof parser.parse>['topNode'];

/** Labels Prometheus adds to every series it scrapes. */
const TARGET_LABELS = new Set(['instance', 'job']);

/** Grafana's interval variables, which are not PromQL: replaced by a duration before parsing. */
const withIntervals = (expr: string) => expr.replace(/\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}/g, '5m');

interface Reads {
  readonly metrics: { name: string; labels: string[]; rated: boolean }[];
  readonly grouping: string[];
  readonly errors: string[];
}

/** Parse a PromQL expression: the metrics it selects (with the labels matched), the labels it groups by, and syntax errors. */
function parsePromQL(expr: string): Reads {
  const text = withIntervals(expr);
  const tree = parser.parse(text);
  const reads: Reads = { metrics: [], grouping: [], errors: [] };
  const at = (n: SyntaxNode) => text.slice(n.from, n.to);
  tree.iterate({
    enter: (ref) => {
      const n = ref.node;
      if (ref.type.isError) reads.errors.push(`syntax error at ${ref.from}: ${JSON.stringify(text.slice(Math.max(0, ref.from - 10), ref.from + 10))}`);
      else if (ref.name === 'VectorSelector') {
        const id = n.getChild('Identifier');
        const labels = n.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher').map((m) => at(m.getChild('LabelName')!)) ?? [];
        // rate(), increase() and irate() are only meaningful on counters: which function reads this selector?
        const fn = n.parent?.name === 'MatrixSelector' ? n.parent.parent?.parent?.getChild('FunctionIdentifier') : undefined;
        const rated = !!fn && ['rate', 'increase', 'irate'].includes(at(fn));
        reads.metrics.push({ name: id ? at(id) : '', labels, rated });
      } else if (ref.name === 'GroupingLabels') {
        for (const l of n.getChildren('LabelName')) reads.grouping.push(at(l));
      }
    },
  });
  return reads;
}

/** Check what a query reads against the registry; returns the problems found. */
function problems(expr: string): string[] {
  const r = parsePromQL(expr);
  const out = [...r.errors];
  if (r.metrics.length === 0) out.push('reads no metric');
  const labelsRead = new Set(TARGET_LABELS);
  for (const m of r.metrics) {
    const s = exported.get(m.name);
    if (!s) {
      out.push(`${m.name || '(a selector without a metric name)'} is not a metric the agent exports`);
      continue;
    }
    for (const l of s.labels) labelsRead.add(l);
    for (const l of m.labels) if (!s.labels.has(l) && !TARGET_LABELS.has(l)) out.push(`${m.name} has no label ${l}`);
    if (m.rated && s.type !== 'counter') out.push(`${m.name} is a ${s.type}: rate() and increase() need a counter`);
  }
  for (const l of r.grouping) if (!labelsRead.has(l)) out.push(`grouped by ${l}, which no metric of the query carries`);
  return out;
}

function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}
const queryPanels = allPanels(dashboard.panels).filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => [`${p.title} ${t.refId}`, t.expr ?? ''] as const));

describe('deploy/grafana-dashboard.json', () => {
  it('has panels, each with at least one query', () => {
    expect(queryPanels.length).toBeGreaterThan(5);
    for (const p of queryPanels) expect(p.targets?.length, p.title).toBeGreaterThan(0);
  });

  it("lays its panels out without overlap on Grafana's 24-column grid, each with an id of its own", () => {
    const all = allPanels(dashboard.panels) as (Panel & { id: number; gridPos: { x: number; y: number; w: number; h: number } })[];
    expect(new Set(all.map((p) => p.id)).size).toBe(all.length);
    for (const p of all) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
    const cells = new Map<string, string>();
    for (const p of all) {
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          const k = `${x},${y}`;
          expect(cells.get(k), `${p.title} overlaps ${cells.get(k)} at ${k}`).toBeUndefined();
          cells.set(k, p.title);
        }
      }
    }
  });

  it.each(exprs)('%s: parses and reads only metrics and labels the agent exports', (_where, expr) => {
    expect(problems(expr)).toEqual([]);
  });

  it('fills its variables from metrics the agent exports', () => {
    const queried = dashboard.templating.list.filter((v) => v.type === 'query');
    expect(queried.length).toBeGreaterThan(0);
    for (const v of queried) {
      const q = typeof v.query === 'string' ? v.query : (v.query?.query ?? '');
      const m = /^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/.exec(q.trim());
      expect(m, `${v.name}: ${q}`).not.toBeNull();
      expect(problems(m![1]!)).toEqual([]);
      const series = parsePromQL(m![1]!).metrics.map((s) => exported.get(s.name)!);
      expect(series.every((s) => s.labels.has(m![2]!) || TARGET_LABELS.has(m![2]!)), `${v.name}: label ${m![2]}`).toBe(true);
    }
  });

  // The checker itself: each kind of mistake it must catch.
  it('rejects a misspelled metric, a missing label, a gauge under rate(), and bad syntax', () => {
    expect(problems('sum(rate(policyctl_sync_total[5m]))')).toEqual(['policyctl_sync_total is not a metric the agent exports']);
    expect(problems('policyctl_chains{node="a"}')).toEqual(['policyctl_chains has no label node']);
    expect(problems('sum by (reason) (policyctl_chains)')).toEqual(['grouped by reason, which no metric of the query carries']);
    expect(problems('rate(policyctl_chains[5m])')).toEqual(['policyctl_chains is a gauge: rate() and increase() need a counter']);
    expect(problems('sum(rate(policyctl_syncs_total[5m])')[0]).toMatch(/^syntax error/);
    expect(problems('vector(1)')).toEqual(['reads no metric']);
    expect(problems('histogram_quantile(0.9, sum by (le) (rate(policyctl_sync_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval])))')).toEqual([]);
  });
});
