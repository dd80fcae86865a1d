// `policyctl reach -o dot|csv|md`: the truth table of src/semantics/reach.ts as a Graphviz
// graph, a CSV file and a markdown table. Output only: which flows are allowed is decided by
// reachTable; these functions lay its results out.

import { escapeLine, printable } from '../model/issues.ts';
import type { ReachResult } from '../semantics/reach.ts';

/** A pod as the formats name it (a PodRecord fits). */
export interface PodName {
  readonly namespace: string;
  readonly name: string;
}

const keyOf = (p: PodName) => `${p.namespace}/${p.name}`;

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** "5000/TCP"; the order of reachTable (port, then protocol) is kept by sorting on both. */
const portText = (r: Pick<ReachResult, 'port' | 'protocol'>) => `${r.port}/${r.protocol}`;
const byPort = (a: Pick<ReachResult, 'port' | 'protocol'>, b: Pick<ReachResult, 'port' | 'protocol'>) => a.port - b.port || cmp(a.protocol, b.protocol);

/** Results grouped per client, then per server (maps of keys: no separator a name could hold), each pair's results in port order. */
function byPair(results: readonly ReachResult[]): Map<string, Map<string, ReachResult[]>> {
  const pairs = new Map<string, Map<string, ReachResult[]>>();
  for (const r of results) {
    let row = pairs.get(r.from);
    if (!row) pairs.set(r.from, (row = new Map()));
    let list = row.get(r.to);
    if (!list) row.set(r.to, (list = []));
    list.push(r);
  }
  for (const row of pairs.values()) for (const list of row.values()) list.sort(byPort);
  return pairs;
}

// ---------------------------------------------------------------------------------------------
// DOT

/**
 * A DOT quoted string for a label. Graphviz reads labels as escString: `\\` is a backslash,
 * `\"` a quote, and `\n` `\l` `\N` ... are directives; so control characters are first written
 * as JSON escapes (`escapeLine`: a label stays one line), then every backslash is doubled and
 * every quote escaped, and Graphviz shows the text as written. Callers pass names through
 * `printable`, as everywhere else in the CLI (quoted when not plain).
 */
export function dotLabel(text: string): string {
  return `"${escapeLine(text).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Kubernetes names (DNS labels and subdomains) are used as node ids as they are. */
const PLAIN_KEY = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * Node ids: `"ns/name"` for valid names, so the DOT text reads like the rest of the CLI's
 * output; any other name gets `pod_N` (N: its place in the sorted pod list), so no quoting rule
 * of Graphviz's ids (where a backslash before the closing quote escapes it) can be reached
 * from a manifest. The two kinds never collide: only the first holds a `/`.
 */
function nodeIds(pods: readonly PodName[]): Map<string, string> {
  const ids = new Map<string, string>();
  pods.forEach((p, i) => {
    const k = keyOf(p);
    ids.set(k, PLAIN_KEY.test(k) ? `"${k}"` : `pod_${i}`);
  });
  return ids;
}

export interface DotOptions {
  /** Draw an edge from a pod to itself too (default: left out; a pod reaching its own address never leaves its network namespace). */
  readonly selfEdges?: boolean;
}

/**
 * A directed graph: one cluster per namespace, one node per pod, one edge per ordered pair of
 * pods with at least one allowed port, labelled with every allowed port/protocol of the pair
 * (parallel edges merged, so the graph stays readable). Denied pairs have no edge. Namespaces,
 * pods and edges are written in sorted order: the same cluster gives the same text.
 */
export function formatDot(results: readonly ReachResult[], pods: readonly PodName[], opts: DotOptions = {}): string {
  const sorted = [...pods].sort((a, b) => cmp(keyOf(a), keyOf(b)));
  const ids = nodeIds(sorted);
  const namespaces = new Map<string, PodName[]>();
  for (const p of sorted) {
    let list = namespaces.get(p.namespace);
    if (!list) namespaces.set(p.namespace, (list = []));
    list.push(p);
  }
  const lines = [
    'digraph reach {',
    '  graph [rankdir=LR, fontname="Helvetica", fontsize=12, nodesep=0.3, ranksep=1.2, labelloc=t,',
    '         label="policyctl reach: an edge is a connection allowed, labelled with its ports"];',
    '  node [shape=box, style="rounded,filled", fillcolor="#f5f8fc", color="#4a6fa5", fontname="Helvetica", fontsize=11];',
    '  edge [color="#2f7d32", fontcolor="#1b4d1e", fontname="Helvetica", fontsize=9, arrowsize=0.7];',
  ];
  [...namespaces.keys()].sort(cmp).forEach((ns, i) => {
    lines.push(`  subgraph cluster_${i} {`);
    lines.push(`    label=${dotLabel(`namespace ${printable(ns)}`)}; style="rounded"; color="#9aa5b1";`);
    for (const p of namespaces.get(ns)!) lines.push(`    ${ids.get(keyOf(p))} [label=${dotLabel(printable(p.name))}];`);
    lines.push('  }');
  });
  const edges: { from: string; to: string; ports: string[] }[] = [];
  for (const list of [...byPair(results).values()].flatMap((row) => [...row.values()])) {
    const { from, to } = list[0]!;
    if (from === to && !opts.selfEdges) continue;
    if (!ids.has(from) || !ids.has(to)) continue; // a result for a pod outside the list drawn
    const ports = list.filter((r) => r.allowed).map(portText);
    if (ports.length) edges.push({ from, to, ports });
  }
  edges.sort((a, b) => cmp(a.from, b.from) || cmp(a.to, b.to));
  for (const e of edges) lines.push(`  ${ids.get(e.from)} -> ${ids.get(e.to)} [label=${dotLabel(e.ports.join(', '))}];`);
  lines.push('}');
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// CSV

/**
 * One CSV field (RFC 4180): quoted when it holds a comma, a quote or a space at either end,
 * quotes doubled. Control characters are written as JSON escapes first (`escapeLine`), so a
 * record is always one line, as every name the CLI prints stays on its line.
 */
export function csvField(text: string): string {
  const t = escapeLine(text);
  return /[",]|^\s|\s$/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
}

/** The JSON contract's columns, one record per result, in reachTable's order; header first. */
export function formatCsv(results: readonly ReachResult[]): string {
  const rows = ['from,to,port,protocol,allowed'];
  for (const r of results) rows.push([csvField(r.from), csvField(r.to), String(r.port), r.protocol, String(r.allowed)].join(','));
  return rows.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// Markdown

/**
 * Text inside a markdown table cell: control characters escaped (a newline would end the row),
 * then every character markdown could read as syntax (`|` ends a cell, `*_~` emphasis, `` ` ``
 * code, `[]` links, `<>&` HTML) backslash-escaped, which CommonMark allows before any ASCII
 * punctuation.
 */
export function mdText(text: string): string {
  return escapeLine(text).replace(/[\\|*_~`[\]<>&#!]/g, (c) => `\\${c}`);
}

/**
 * A table like the text grid (rows: clients, columns: servers), one cell per ordered pair
 * listing the ports evaluated: allowed ones plain, denied ones struck through; `-` when the
 * server declares no port.
 */
export function formatMarkdown(results: readonly ReachResult[], pods: readonly PodName[]): string {
  const keys = [...pods].map(keyOf).sort(cmp);
  const pairs = byPair(results);
  const lines = [
    'Rows are clients, columns servers. A cell lists the ports evaluated: allowed, or ~~denied~~; `-`: the server declares no port.',
    '',
    `| client \\\\ server | ${keys.map(mdText).join(' | ')} |`,
    `|---|${keys.map(() => '---').join('|')}|`,
  ];
  for (const from of keys) {
    const cells = keys.map((to) => {
      const list = pairs.get(from)?.get(to);
      return list?.length ? list.map((r) => (r.allowed ? portText(r) : `~~${portText(r)}~~`)).join(', ') : '-';
    });
    lines.push(`| ${mdText(from)} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n') + '\n';
}
