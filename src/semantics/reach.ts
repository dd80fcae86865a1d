// `policyctl reach` as data: the truth table over every ordered pair of enforceable pods.

import { printable } from '../model/issues.ts';
import type { Model } from '../model/store.ts';
import type { PodRecord, Protocol } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { allowed, podKey } from './evaluate.ts';

export interface PortQuery {
  readonly port: number;
  readonly protocol: Protocol;
}

/** One cell; the JSON contract of `policyctl reach -o json` (and `lab probe`). */
export interface ReachResult {
  readonly from: string;
  readonly to: string;
  readonly port: number;
  readonly protocol: Protocol;
  readonly allowed: boolean;
}

export function enforceablePodsSorted(model: Model, namespaces?: readonly string[]): PodRecord[] {
  return [...model.allPods()]
    .filter((p) => isEnforceable(p) && (!namespaces || namespaces.includes(p.namespace)))
    .sort((a, b) => (podKey(a) < podKey(b) ? -1 : podKey(a) > podKey(b) ? 1 : 0));
}

/** Ports a destination declares, in port then protocol order, without duplicates. */
export function declaredPorts(p: PodRecord): PortQuery[] {
  const seen = new Map<string, PortQuery>();
  for (const cp of p.ports) seen.set(`${cp.containerPort}/${cp.protocol}`, { port: cp.containerPort, protocol: cp.protocol });
  return [...seen.values()].sort((a, b) => a.port - b.port || (a.protocol < b.protocol ? -1 : 1));
}

/**
 * Every ordered pair, a pod to itself included. With `ports` each pair is evaluated on each
 * of them; without, on every port/protocol the destination pod declares.
 */
export function reachTable(model: Model, opts: { ports?: readonly PortQuery[]; namespaces?: readonly string[] } = {}): ReachResult[] {
  const pods = enforceablePodsSorted(model, opts.namespaces);
  const out: ReachResult[] = [];
  for (const dst of pods) {
    const ports = opts.ports ?? declaredPorts(dst);
    for (const src of pods) {
      for (const q of ports) {
        const v = allowed(model, { src: { kind: 'pod', pod: src }, dst: { kind: 'pod', pod: dst }, port: q.port, protocol: q.protocol });
        out.push({ from: podKey(src), to: podKey(dst), port: q.port, protocol: q.protocol, allowed: v.allowed });
      }
    }
  }
  return out.sort((a, b) => cmp(a.port, b.port) || cmp(a.protocol, b.protocol) || cmp(a.from, b.from) || cmp(a.to, b.to));
}

function cmp<T extends string | number>(a: T, b: T): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The text grid of the conformance matrices: rows are clients, columns servers; `.` allowed,
 * `X` denied, `-` where the server does not declare that port.
 */
export function formatGrid(results: readonly ReachResult[], pods: readonly string[]): string {
  const groups = new Map<string, Map<string, boolean>>();
  for (const r of results) {
    const k = `${r.port}/${r.protocol}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = new Map()));
    g.set(`${r.from}|${r.to}`, r.allowed);
  }
  // Pod names come from manifests: printed quoted when not plain, so a row stays one line.
  const shown = new Map(pods.map((p) => [p, printable(p)]));
  const width = Math.max(3, ...[...shown.values()].map((p) => p.length));
  const pad = (s: string) => s.padEnd(width);
  const blocks: string[] = [];
  for (const [k, g] of groups) {
    const lines = [`${k}`, `${pad('')} ${pods.map((p) => pad(shown.get(p)!)).join(' ')}`];
    for (const from of pods) {
      const cells = pods.map((to) => {
        const v = g.get(`${from}|${to}`);
        return pad(v === undefined ? '-' : v ? '.' : 'X');
      });
      lines.push(`${pad(shown.get(from)!)} ${cells.join(' ')}`.trimEnd());
    }
    blocks.push(lines.join('\n'));
  }
  return blocks.join('\n\n') + '\n';
}
