// Shared by the lab drop-log tests (test/e2e/lab-drops*.test.ts): probe a case's step in a lab and
// check that every denied flow appears in the agents' /drops within a second, with the pods,
// port, protocol, direction and decision the semantics gives, and that no allowed flow does.

import { expect } from 'vitest';
import type { Drop } from '../../src/agent/drop-log.ts';
import { labAgentDrops, probeLab } from '../../src/cli/lab.ts';
import type { ClusterInfo } from '../../src/lab/cluster.ts';
import type { LabState } from '../../src/lab/state.ts';
import type { Model } from '../../src/model/store.ts';
import type { Protocol } from '../../src/model/types.ts';
import { allowed } from '../../src/semantics/evaluate.ts';

/** What the checks of one probe saw, to assert coverage (directions, tiers, nodes) at the end. */
export interface DropCoverage {
  ingress: number;
  egress: number;
  sameNode: number;
  crossNode: number;
  tiers: Set<string>;
}

export const newCoverage = (): DropCoverage => ({ ingress: 0, egress: 0, sameNode: 0, crossNode: 0, tiers: new Set() });

/** The latest sequence number of each agent's drops: later reads return only what came after. */
async function marks(info: ClusterInfo): Promise<Map<string, number>> {
  const agents = await labAgentDrops(info);
  for (const a of agents) expect(a.error, `node ${a.node}`).toBeUndefined();
  return new Map(agents.map((a) => [a.node, Math.max(0, ...a.drops.map((d) => d.seq))]));
}

const key = (from: string, to: string, port: number, protocol: string) => `${from}>${to}>${port}/${protocol}`;

/** Probes one port of every pod pair and checks the drops against the kernel's results and the semantics. */
export async function probeAndCheckDrops(lab: LabState, info: ClusterInfo, model: Model, probe: { port: number; protocol: Protocol }, seen: DropCoverage, what: string): Promise<void> {
  const since = await marks(info);
  const { results } = await probeLab(lab, probe);
  const probed = Date.now();
  const denied = results.filter((r) => r.from !== r.to && !r.allowed);
  let drops: Drop[] = [];
  // Every denied flow is there within a second of the probes.
  for (;;) {
    drops = (await labAgentDrops(info, since)).flatMap((a) => a.drops);
    const got = new Set(drops.map((d) => key(d.from, d.to, d.port ?? 0, d.protocol)));
    const missing = denied.filter((r) => !got.has(key(r.from, r.to, r.port, r.protocol)));
    if (missing.length === 0) break;
    if (Date.now() - probed > 1000) throw new Error(`${what}: not in lab drops within 1 s: ${missing.map((r) => key(r.from, r.to, r.port, r.protocol)).join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const podNode = new Map(lab.pods.map((p) => [p.key, p.node]));
  for (const r of results) {
    if (r.from === r.to) continue;
    const mine = drops.filter((d) => d.from === r.from && d.to === r.to && d.port === r.port && d.protocol === r.protocol);
    if (r.allowed) {
      expect(mine, `${what}: allowed ${key(r.from, r.to, r.port, r.protocol)} is in the drops`).toEqual([]);
      continue;
    }
    // What decided, as the semantics says: the denying direction, its node, the policies or the rule.
    const v = verdictOf(model, r.from, r.to, r.port, r.protocol);
    const dir = !v.egress.allowed ? v.egress : v.ingress;
    const d = dir.decidedBy!;
    const decision =
      d.tier === 'NetworkPolicy'
        ? { tier: 'NetworkPolicy', policies: [...dir.isolatedBy] }
        : { tier: d.tier, policy: `cnp/${d.policy}`, ruleIndex: d.ruleIndex, rule: d.ruleName ?? '' };
    for (const x of mine) {
      expect(x.direction, `${what}: ${key(r.from, r.to, r.port, r.protocol)}`).toBe(dir.direction);
      expect(x.node).toBe(podNode.get(dir.direction === 'Egress' ? r.from : r.to));
      expect(x.decision, `${what}: ${key(r.from, r.to, r.port, r.protocol)}`).toMatchObject(decision);
    }
    seen[dir.direction === 'Egress' ? 'egress' : 'ingress']++;
    seen[podNode.get(r.from) === podNode.get(r.to) ? 'sameNode' : 'crossNode']++;
    seen.tiers.add(d.tier);
  }
}

function verdictOf(model: Model, from: string, to: string, port: number, protocol: Protocol) {
  const pod = (k: string) => {
    const [ns, n] = k.split('/') as [string, string];
    const p = model.findPod(ns, n);
    if (!p) throw new Error(`no pod ${k} in the step's model`);
    return p;
  };
  return allowed(model, { src: { kind: 'pod', pod: pod(from) }, dst: { kind: 'pod', pod: pod(to) }, port, protocol });
}
