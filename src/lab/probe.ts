// Probing connectivity on the real kernel, from inside the client's network namespace.
// One prober process per client namespace probes all of that client's targets in parallel, and
// all clients run at once, so a batch takes about one timeout plus a Node start, whatever its size.

import { LabError, runInNetns } from './exec.ts';
import { PROBER_SCRIPT, scriptCommand, scriptEnv } from './processes.ts';
import { findNode, findPod } from './lab.ts';
import type { LabState } from './state.ts';

export interface ProbeTarget {
  ip: string;
  port: number;
  protocol: 'TCP' | 'UDP';
}

/** A pod key "namespace/name", a node, or the external host (the switch namespace). */
export type ProbeSource = string | { pod: string } | { node: string } | { external: true };

export type ProbeOutcome = 'connected' | 'echoed' | 'refused' | 'timeout' | 'unreachable' | 'error';

export interface ProbeResult {
  from: ProbeSource;
  to: ProbeTarget;
  /** TCP: the connection was established; UDP: the echo came back. */
  allowed: boolean;
  outcome: ProbeOutcome;
  ms: number;
  /** Id of the server that answered: "namespace/name" of a pod, or "external". */
  server?: string;
  /** Client address:port as the server saw it (after NAT). */
  seenAs?: string;
  error?: string;
}

export interface ProbeRequest {
  from: ProbeSource;
  to: ProbeTarget;
}

export interface ProbeOptions {
  /** Per probe; a denied probe takes this long. Default 1000. */
  timeoutMs?: number;
  /** UDP datagram resend interval. Default 200. */
  udpRetryMs?: number;
}

function sourceNetns(lab: LabState, from: ProbeSource): { netns: string; label: string } {
  if (typeof from === 'string') return { netns: findPod(lab, from).netns, label: `pod ${from}` };
  if ('pod' in from) return { netns: findPod(lab, from.pod).netns, label: `pod ${from.pod}` };
  if ('node' in from) return { netns: findNode(lab, from.node).netns, label: `node ${from.node}` };
  return { netns: lab.switch.netns, label: 'the external host' };
}

function checkTarget(t: ProbeTarget): void {
  if (t.protocol !== 'TCP' && t.protocol !== 'UDP') {
    throw new LabError(`probe protocol must be TCP or UDP (the kernel has no SCTP), received ${JSON.stringify(t.protocol)}`);
  }
  if (!Number.isInteger(t.port) || t.port < 1 || t.port > 65535) {
    throw new LabError(`probe port must be an integer 1-65535, received ${JSON.stringify(t.port)}`);
  }
}

/** Runs many probes; results are in request order. */
export async function probeMany(lab: LabState, requests: readonly ProbeRequest[], opts: ProbeOptions = {}): Promise<ProbeResult[]> {
  const timeoutMs = opts.timeoutMs ?? 1000;
  const groups = new Map<string, { label: string; indexes: number[] }>();
  requests.forEach((r, i) => {
    checkTarget(r.to);
    const { netns, label } = sourceNetns(lab, r.from);
    const g = groups.get(netns) ?? { label, indexes: [] };
    g.indexes.push(i);
    groups.set(netns, g);
  });
  const results: ProbeResult[] = new Array(requests.length);
  await Promise.all(
    [...groups].map(async ([netns, g]) => {
      const targets = g.indexes.map((i) => {
        const t = requests[i]!.to;
        return { ip: t.ip, port: t.port, protocol: t.protocol };
      });
      const r = await runInNetns(netns, scriptCommand(PROBER_SCRIPT), {
        input: JSON.stringify({ timeoutMs, udpRetryMs: opts.udpRetryMs ?? 200, targets }),
        env: scriptEnv(lab.dir),
        context: `probing from ${g.label} of lab ${lab.name}`,
        timeoutMs: timeoutMs + 30_000,
      });
      let parsed: Omit<ProbeResult, 'from' | 'to'>[];
      try {
        parsed = JSON.parse(r.stdout) as Omit<ProbeResult, 'from' | 'to'>[];
      } catch {
        throw new LabError(`probing from ${g.label}: the prober printed no JSON: ${r.stdout.slice(0, 500)} ${r.stderr.slice(0, 500)}`);
      }
      if (parsed.length !== targets.length) {
        throw new LabError(`probing from ${g.label}: ${parsed.length} results for ${targets.length} targets`);
      }
      g.indexes.forEach((i, j) => {
        results[i] = { from: requests[i]!.from, to: requests[i]!.to, ...parsed[j]! };
      });
    }),
  );
  return results;
}

/** One probe: is `to` reachable from `from`? */
export async function probe(lab: LabState, from: ProbeSource, to: ProbeTarget, timeoutMs = 1000): Promise<ProbeResult> {
  const [r] = await probeMany(lab, [{ from, to }], { timeoutMs });
  return r!;
}

/** Every pod to every served TCP/UDP port of every pod (itself included), as probe requests. */
export function allPairs(lab: LabState): ProbeRequest[] {
  const out: ProbeRequest[] = [];
  for (const from of lab.pods) {
    for (const to of lab.pods) {
      for (const p of to.ports) {
        if (p.protocol === 'SCTP') continue;
        out.push({ from: from.key, to: { ip: to.ip, port: p.port, protocol: p.protocol } });
      }
    }
  }
  return out;
}

/** Probes every pair (allPairs). */
export function probeAllPairs(lab: LabState, opts: ProbeOptions = {}): Promise<ProbeResult[]> {
  return probeMany(lab, allPairs(lab), opts);
}
