import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ReachResult } from '../semantics/reach.ts';
import { runCli } from '../../test/support/cli.ts';
import { csvField, dotLabel, formatCsv, formatDot, formatMarkdown, mdText, type PodName } from './reach-formats.ts';

const root = new URL('../../', import.meta.url).pathname;
const examples = join(root, 'examples');

const run = (argv: string[]) => runCli(argv);

/** Graphviz's dot: required under CI=true (a missing dot fails the render tests, never skips them). */
function hasDot(): boolean {
  return spawnSync('dot', ['-V'], { stdio: 'ignore' }).status === 0;
}
const renderTests = process.env.CI === 'true' || hasDot();

function svgOf(dot: string): string {
  return execFileSync('dot', ['-Tsvg'], { input: dot, encoding: 'utf8' });
}

/** The edges of our DOT text: `id -> id [label="..."]`, ids as written. */
function dotEdges(dot: string): { from: string; to: string; label: string }[] {
  return [...dot.matchAll(/^ {2}(\S+) -> (\S+) \[label="((?:[^"\\]|\\.)*)"\];$/gm)].map((m) => ({ from: m[1]!, to: m[2]!, label: m[3]! }));
}

const r = (from: string, to: string, port: number, protocol: ReachResult['protocol'], allowed: boolean): ReachResult => ({ from, to, port, protocol, allowed });

describe('formatDot', () => {
  const pods: PodName[] = [
    { namespace: 'b', name: 'web' },
    { namespace: 'a', name: 'client' },
    { namespace: 'b', name: 'db' },
  ];
  const results = [
    r('a/client', 'b/web', 443, 'TCP', true),
    r('a/client', 'b/web', 80, 'TCP', true),
    r('a/client', 'b/web', 53, 'UDP', false),
    r('a/client', 'b/db', 5432, 'TCP', false),
    r('b/web', 'b/db', 5432, 'TCP', true),
    r('b/web', 'b/web', 80, 'TCP', true),
  ];

  it('merges the allowed ports of a pair into one edge, draws no edge for a denied pair, and leaves a pod to itself out', () => {
    const dot = formatDot(results, pods);
    expect(dotEdges(dot)).toEqual([
      { from: '"a/client"', to: '"b/web"', label: '80/TCP, 443/TCP' },
      { from: '"b/web"', to: '"b/db"', label: '5432/TCP' },
    ]);
    const self = dotEdges(formatDot(results, pods, { selfEdges: true }));
    expect(self).toContainEqual({ from: '"b/web"', to: '"b/web"', label: '80/TCP' });
  });

  it('puts each namespace in a cluster with its pods, in sorted order whatever the input order', () => {
    const dot = formatDot(results, pods);
    expect(dot).toMatch(/subgraph cluster_0 \{\n {4}label="namespace a";[^\n]*\n {4}"a\/client" \[label="client"\];\n {2}\}/);
    expect(dot).toMatch(/subgraph cluster_1 \{\n {4}label="namespace b";[^\n]*\n {4}"b\/db" \[label="db"\];\n {4}"b\/web" \[label="web"\];\n {2}\}/);
    expect(formatDot([...results].reverse(), [...pods].reverse())).toBe(dot);
  });

  it('escapes quotes, backslashes and newlines in labels, and gives such pods ids of their own', () => {
    expect(dotLabel('say "hi"')).toBe('"say \\"hi\\""');
    expect(dotLabel('a\\nb')).toBe('"a\\\\nb"'); // a backslash then n: shown as written, not a line break
    expect(dotLabel('a\nb')).toBe('"a\\\\nb"'); // a newline: shown as the two characters \n
    const odd: PodName[] = [
      { namespace: 'x"y', name: 'p"q\\' },
      { namespace: 'x"y', name: 'line\nbreak' },
    ];
    const dot = formatDot([r('x"y/p"q\\', 'x"y/line\nbreak', 80, 'TCP', true)], odd);
    expect(dotEdges(dot)).toEqual([{ from: 'pod_1', to: 'pod_0', label: '80/TCP' }]);
    expect(dot).toContain('label="namespace \\"x\\\\\\"y\\""');
  });

  it.skipIf(!renderTests)('renders with dot -Tsvg, names with quotes shown as the CLI prints them', () => {
    const odd: PodName[] = [
      { namespace: 'x"y', name: 'p"q\\' },
      { namespace: 'x"y', name: 'line\nbreak' },
      { namespace: 'plain', name: 'web' },
    ];
    const svg = svgOf(formatDot([r('x"y/p"q\\', 'plain/web', 80, 'TCP', true), r('plain/web', 'x"y/line\nbreak', 53, 'UDP', true)], odd));
    const texts = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!.replace(/&quot;/g, '"').replace(/&#45;/g, '-').replace(/&amp;/g, '&'));
    // printable(): JSON-quoted when not plain, so the SVG shows exactly the CLI's text.
    expect(texts).toEqual(expect.arrayContaining(['namespace "x\\"y"', '"p\\"q\\\\"', '"line\\nbreak"', 'web', '80/TCP', '53/UDP']));
    expect(svg.match(/<g id="node\d+" class="node">/g)).toHaveLength(3);
    expect(svg.match(/<g id="edge\d+" class="edge">/g)).toHaveLength(2);
    expect(svgOf(formatDot([], []))).toContain('<svg'); // no pod: an empty graph, still a picture
  });
});

describe('formatCsv', () => {
  it('quotes fields holding commas or quotes (quotes doubled) and keeps every record on one line', () => {
    expect(csvField('plain/web')).toBe('plain/web');
    expect(csvField('a,b/c')).toBe('"a,b/c"');
    expect(csvField('a"b/c')).toBe('"a""b/c"');
    expect(csvField(' x/y')).toBe('" x/y"');
    expect(csvField('a\nb/c')).toBe('a\\nb/c');
    const csv = formatCsv([r('n,s/a"b', 'ns/c', 80, 'TCP', true), r('ns/c', 'ns/c', 53, 'UDP', false)]);
    expect(csv).toBe('from,to,port,protocol,allowed\n"n,s/a""b",ns/c,80,TCP,true\nns/c,ns/c,53,UDP,false\n');
  });
});

describe('formatMarkdown', () => {
  it('is a table of clients by servers with denied ports struck through, names escaped', () => {
    const pods: PodName[] = [
      { namespace: 'ns', name: 'a|b' },
      { namespace: 'ns', name: 'c' },
    ];
    const md = formatMarkdown([r('ns/c', 'ns/a|b', 80, 'TCP', true), r('ns/c', 'ns/a|b', 443, 'TCP', false)], pods);
    const rows = md.split('\n').filter((l) => l.startsWith('|'));
    expect(rows[0]).toBe('| client \\\\ server | ns/a\\|b | ns/c |');
    expect(rows[1]).toBe('|---|---|---|');
    expect(rows[2]).toBe('| ns/a\\|b | - | - |');
    expect(rows[3]).toBe('| ns/c | 80/TCP, ~~443/TCP~~ | - |');
    expect(mdText('*x*_[y](z)`<b>')).toBe('\\*x\\*\\_\\[y\\](z)\\`\\<b\\>');
    // Every row has as many cells as the header: no name can add or end a cell.
    const cells = (l: string) => l.split(/(?<!\\)\|/).length;
    expect(new Set(rows.map(cells)).size).toBe(1);
  });
});

describe('policyctl reach -o dot|csv|md on the README example', () => {
  it('draws one edge per pair the JSON contract allows, labelled with exactly the allowed ports', async () => {
    const json = await run(['reach', '-f', examples, '-o', 'json']);
    expect(json.code, json.err).toBe(0);
    const results = JSON.parse(json.out).results as ReachResult[];
    const want = new Map<string, string[]>();
    for (const x of [...results].sort((a, b) => a.port - b.port || (a.protocol < b.protocol ? -1 : 1))) {
      if (!x.allowed || x.from === x.to) continue;
      const k = `"${x.from}" -> "${x.to}"`;
      want.set(k, [...(want.get(k) ?? []), `${x.port}/${x.protocol}`]);
    }
    const dot = await run(['reach', '-f', examples, '-o', 'dot']);
    expect(dot.code, dot.err).toBe(0);
    const got = new Map(dotEdges(dot.out).map((e) => [`${e.from} -> ${e.to}`, e.label.split(', ')]));
    expect(got).toEqual(want);
    expect(want.size).toBeGreaterThan(0);
    // Some pair is denied by the example's policies: the graph is not complete.
    const pods = new Set(results.map((x) => x.to));
    expect(got.size).toBeLessThan(pods.size * (pods.size - 1));
  });

  it('writes the JSON entries as CSV records and a markdown row per client', async () => {
    const results = JSON.parse((await run(['reach', '-f', examples, '-o', 'json'])).out).results as ReachResult[];
    const csv = await run(['reach', '-f', examples, '-o', 'csv']);
    expect(csv.code, csv.err).toBe(0);
    const lines = csv.out.trimEnd().split('\n');
    expect(lines[0]).toBe('from,to,port,protocol,allowed');
    expect(lines.slice(1)).toEqual(results.map((x) => `${x.from},${x.to},${x.port},${x.protocol},${x.allowed}`));
    const md = await run(['reach', '-f', examples, '-o', 'md']);
    expect(md.code, md.err).toBe(0);
    const pods = [...new Set(results.map((x) => x.from))];
    expect(md.out.split('\n').filter((l) => /^\| [^-]/.test(l) && !l.startsWith('| client'))).toHaveLength(pods.length);
  });

  it('refuses an unknown format naming it, with exit code 2, and teaches the formats in --help', async () => {
    const bad = await run(['reach', '-f', examples, '-o', 'svg']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("'svg' is invalid");
    expect(bad.err).toContain('text, json, dot, csv, md');
    const help = await run(['reach', '--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('dot -Tsvg');
    expect(help.out).toMatch(/^ {2}csv /m);
  });

  it.skipIf(!renderTests)('renders with dot -Tsvg: a node per pod, an edge per allowed pair', async () => {
    const dot = (await run(['reach', '-f', examples, '-o', 'dot'])).out;
    const svg = svgOf(dot);
    const results = JSON.parse((await run(['reach', '-f', examples, '-o', 'json'])).out).results as ReachResult[];
    expect(svg.match(/<g id="node\d+" class="node">/g)).toHaveLength(new Set(results.map((x) => x.from)).size);
    expect(svg.match(/<g id="edge\d+" class="edge">/g)).toHaveLength(dotEdges(dot).length);
    expect(svg.match(/<g id="clust\d+" class="cluster">/g)).toHaveLength(new Set(results.map((x) => x.from.split('/')[0])).size);
  });
});
