// docs/design.md, invariant two-statements, under kube-proxy's IPVS mode (issue 13). On random
// clusters compiled with `proxy: ipvs`, every flow gets the semantics' verdict
// - directly, through FORWARD (and INPUT), as under the other modes: IPVS changes nothing there;
// - through a Service, on IPVS's netfilter path (Dataplane.traverseIpvs): INPUT with the VIP
//   (ClusterIP, or the node's address and a node port), then OUTPUT with the client pod as source
//   and the backend pod as destination, then the backend node's FORWARD when it is another node.
//   The semantics judge Service traffic at the backend (as `policyctl reach` does), so the
//   verdict must equal the direct flow's;
// and traffic the node sends itself to its pods (kubelet probes) passes OUTPUT untouched.
// A suite that could not fail proves nothing: each mutation below (the OUTPUT hook dropped, ...)
// must make the same property fail. Replay a failure with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, it } from 'vitest';
import type { CompileOptions } from '../../src/compiler/compile.ts';
import { allowed, podKey, type Endpoint, type Flow } from '../../src/semantics/evaluate.ts';
import { EXTERNAL_IPS, NODE_ADDRESSES, FLOW_PORTS, NODES, clusterArb, tieredClusterArb, type Cluster } from '../support/arbitraries.ts';
import { checkProperty, expectMutationCaught, propertyRuns } from '../support/property.ts';
import { Dataplane, type Mutator } from '../support/dataplane.ts';
import { formatTrace, type TraceResult } from '../support/tracer.ts';

const RUNS = propertyRuns(200);

/** A VIP of the Service CIDR and its port (the flow's port is the target port). */
const SERVICE_CIDR = '10.96.0.0/12';
const VIP = { kind: 'clusterIP' as const, vip: '10.96.0.10', port: 443 };
const NODE_PORT = { kind: 'nodePort' as const, port: 30080 };
const IPVS: CompileOptions = { proxy: { mode: 'ipvs', serviceCidrs: [SERVICE_CIDR] } };
const IPVS_SHARED: CompileOptions = { ...IPVS, tiers: { continuation: { Admin: 'dispatch' } } };

const name = (e: Endpoint) => (e.kind === 'pod' ? `${podKey(e.pod)}${e.pod.hostNetwork ? '(host)' : ''}` : e.ip);

function endpoints(c: Cluster): Endpoint[] {
  return c.pods.filter((p) => p.ips.length > 0 && p.phase !== 'Failed').map((pod) => ({ kind: 'pod', pod }));
}

/** Every direct flow: all ordered pairs of pods, and to and from the outside. */
function directFlows(c: Cluster): Flow[] {
  const out: Flow[] = [];
  for (const src of endpoints(c)) {
    for (const dst of endpoints(c)) for (const q of FLOW_PORTS) out.push({ src, dst, ...q });
    for (const ip of [...EXTERNAL_IPS, ...NODE_ADDRESSES]) for (const q of FLOW_PORTS) out.push({ src, dst: { kind: 'ip', ip }, ...q }, { src: { kind: 'ip', ip }, dst: src, ...q });
  }
  return out;
}

/** Every flow a Service can carry on IPVS's path: two distinct non-host pods. */
function serviceFlows(c: Cluster): Flow[] {
  const pods = endpoints(c).filter((e) => e.kind === 'pod' && !e.pod.hostNetwork);
  const out: Flow[] = [];
  for (const src of pods) for (const dst of pods) if (src.kind === 'pod' && dst.kind === 'pod' && src.pod.uid !== dst.pod.uid) for (const q of FLOW_PORTS) out.push({ src, dst, ...q });
  return out;
}

function fail(flow: Flow, how: string, expected: boolean, summary: string, got: boolean, traces: { node: string; hook: string; result: TraceResult }[], plane: Dataplane): never {
  const t = traces.map((x) => `--- ${x.node} ${x.hook}\n${formatTrace(x.result)}`).join('\n');
  const rules = [...plane.nodes].map(([n, p]) => `=== ${n}\n${p.ipsetText}${p.iptablesText}`).join('\n');
  throw new Error(`${name(flow.src)} -> ${name(flow.dst)} ${flow.port}/${flow.protocol} ${how}: semantics says ${expected ? 'allowed' : 'denied'} (${summary}) but the compiled rules ${got ? 'allow' : 'deny'} it\n${t}\n${rules}`);
}

/** Throws with a full account on the first disagreement. */
function checkIpvs(c: Cluster, mutate?: Mutator, opts: CompileOptions = IPVS): void {
  const plane = new Dataplane(c.model, NODES.map((n) => n.name), mutate, opts);
  for (const flow of directFlows(c)) {
    const expected = allowed(c.model, flow);
    const got = plane.traverse(flow);
    if (got.allowed !== expected.allowed) fail(flow, 'directly', expected.allowed, expected.summary, got.allowed, got.traces, plane);
  }
  for (const flow of serviceFlows(c)) {
    const expected = allowed(c.model, flow);
    for (const via of [VIP, NODE_PORT]) {
      const got = plane.traverseIpvs(flow, via);
      if (got.allowed !== expected.allowed) fail(flow, `through a Service (${via.kind} ${via.port}, IPVS)`, expected.allowed, expected.summary, got.allowed, got.traces, plane);
    }
  }
  // The node's own traffic to its pods: from its address and from the bridge's (the pod CIDR's
  // first address, which kubelet's probes leave with). Never policed (docs/design.md).
  for (const nd of NODES) {
    const bridge = `${nd.prefix}1`;
    for (const e of endpoints(c)) {
      if (e.kind !== 'pod' || e.pod.hostNetwork || e.pod.nodeName !== nd.name) continue;
      for (const src of [nd.ip, bridge]) {
        const r = plane.traceOutput(nd.name, { src, dst: e.pod.ips[0]!, protocol: 'tcp', dport: 80, sport: 40000 });
        if (r.verdict !== 'ACCEPT') throw new Error(`node ${nd.name} (${src}) -> ${podKey(e.pod)}: the node's own traffic was dropped in OUTPUT\n${formatTrace(r)}`);
      }
    }
  }
}




describe('under IPVS, compiled rules agree with the semantics on both paths', () => {
  it(`on ${RUNS} random clusters, every flow directly and through a Service`, () => {
    checkProperty(fc.property(clusterArb, (c) => checkIpvs(c)), RUNS);
  });

  it(`on ${RUNS} random clusters with random ClusterNetworkPolicies, every flow directly and through a Service`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkIpvs(c)), RUNS);
  });

  it(`on ${Math.ceil(RUNS / 2)} random clusters with random ClusterNetworkPolicies, Admin chains shared`, () => {
    const runs = Math.ceil(RUNS / 2);
    checkProperty(fc.property(tieredClusterArb, (c) => checkIpvs(c, undefined, IPVS_SHARED)), runs);
  });

  // Revoke mode: PCTL-FORWARD, PCTL-INPUT and PCTL-OUTPUT jump to PCTL-MIDSTREAM for mid-stream
  // TCP; a connection's first packet (a SYN) is judged as without it, on every path.
  it(`on ${Math.ceil(RUNS / 2)} random clusters with random ClusterNetworkPolicies, mid-stream drops on (--revoke-established)`, () => {
    checkProperty(fc.property(tieredClusterArb, (c) => checkIpvs(c, undefined, { ...IPVS, dropMidstream: true })), Math.ceil(RUNS / 2));
  });

  const mutations: Record<string, Mutator> = {
    'the OUTPUT hook is dropped (a Service opens every backend)': (t) => t.replace(/\n-I OUTPUT 1 [^\n]*-j PCTL-OUTPUT/, ''),
    'PCTL-OUTPUT judges no ingress (same-node backends open)': (t) => t.replace(/\n-A PCTL-OUTPUT [^\n]*-j PCTL-INGRESS/, ''),
    'PCTL-OUTPUT judges no egress': (t) => t.replace(/\n-A PCTL-OUTPUT [^\n]*-j PCTL-EGRESS/, ''),
    'Service VIPs are judged at INPUT (allowed Service traffic dropped)': (t) => t.replace(/\n-A PCTL-INPUT -d 10\.96\.0\.0\/12 [^\n]*-j RETURN/, ''),
    'node ports are judged at INPUT': (t) => t.replace(/\n-A PCTL-INPUT -p tcp [^\n]*--dport 30000:32767 [^\n]*-j RETURN/, ''),
    "the node's own traffic is policed in OUTPUT": (t) => t.replace(/\n-A PCTL-OUTPUT -m set ! --match-set PCTL-programmed src [^\n]*-j RETURN/, ''),
  };
  for (const [what, mutate] of Object.entries(mutations)) {
    it(`fails when ${what}`, () => expectMutationCaught(what, mutate, (spy) => fc.property(clusterArb, (c) => checkIpvs(c, spy)), RUNS));
  }
});
