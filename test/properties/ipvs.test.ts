// docs/design.md, invariant two-statements, under kube-proxy's IPVS mode (issue 13). On random
// clusters compiled with `proxy: ipvs`, every flow gets the semantics' verdict
// - directly, through FORWARD (and INPUT), as under the other modes: IPVS changes nothing there;
// - through a Service, on IPVS's netfilter path (Dataplane.traverseIpvs): INPUT with the VIP
//   (ClusterIP, or the node's address and a node port), then OUTPUT with the client pod as source
//   and the backend pod as destination, then the backend node's FORWARD when it is another node.
//   The semantics judge Service traffic at the backend (as `policyctl reach` does), so the
//   verdict must equal the direct flow's;
// - through a node port of the backend's node from elsewhere (Dataplane.traverseIpvs with
//   `node`): a pod of another node, a hostNetwork pod, a node's address, an outside address.
//   The backend's node gets the packet in INPUT with its own address as destination and sends
//   it on through OUTPUT with the client's address, where the backend's ingress must judge it
//   as the semantics do (a security review found PCTL-OUTPUT returning every packet no local
//   pod sent, so a node port opened every local backend to every such client); a client pod's
//   own node judges its egress against the node's address it connects to (a direct flow);
// and traffic the node sends itself to its pods (kubelet probes, from its InternalIP or the
// bridge's address) returns from OUTPUT unjudged, by the rule for the node's own addresses.
// A suite that could not fail proves nothing: each mutation below (the OUTPUT hook dropped, ...)
// must make the same property fail. Replay a failure with PROPERTY_SEED=<seed>.

import fc from 'fast-check';
import { describe, it } from 'vitest';
import type { CompileOptions } from '../../src/compiler/compile.ts';
import { allowed, podKey, type Endpoint, type Flow } from '../../src/semantics/evaluate.ts';
import { EXTERNAL_IPS, NODE_ADDRESSES, FLOW_PORTS, NODES, clusterArb, tieredClusterArb, canTalk, type Cluster } from '../support/arbitraries.ts';
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
  return c.pods.filter(canTalk).map((pod) => ({ kind: 'pod', pod }));
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

/**
 * Every client of a node port of the backend's node from elsewhere, with the verdict the
 * semantics give that path: for each non-host backend pod B on node E, each pod of another node
 * and each hostNetwork pod (anywhere), each outside address, and each node's address but E's
 * bridge's (E reaches its own address from its InternalIP, the route's preferred source; the
 * bridge's address is a source only toward the pod CIDR). Expected: B's ingress for the client
 * (a host of E: always allowed, the node's own traffic; an unprogrammed address: denied), and
 * for a pod of another node also its egress to E's address and the node port, which its own
 * node judges (kube-proxy takes a node port only for its own node's addresses).
 */
function remoteNodePortFlows(c: Cluster): { flow: Flow; node: string; expected: { allowed: boolean; summary: string } }[] {
  const out: { flow: Flow; node: string; expected: { allowed: boolean; summary: string } }[] = [];
  for (const dst of endpoints(c)) {
    if (dst.kind !== 'pod' || dst.pod.hostNetwork || !dst.pod.nodeName) continue;
    const entry = NODES.find((n) => n.name === dst.pod.nodeName);
    if (!entry) continue;
    const clients: Endpoint[] = [
      ...endpoints(c).filter((e) => e.kind === 'pod' && (e.pod.hostNetwork || e.pod.nodeName !== entry.name)),
      ...[...EXTERNAL_IPS, ...NODE_ADDRESSES.filter((ip) => ip !== `${entry.prefix}1`)].map((ip): Endpoint => ({ kind: 'ip', ip })),
    ];
    for (const src of clients) {
      for (const q of FLOW_PORTS) {
        const flow: Flow = { src, dst, ...q };
        const atBackend = allowed(c.model, flow);
        let expected = { allowed: atBackend.allowed, summary: atBackend.summary };
        if (src.kind === 'pod' && !src.pod.hostNetwork) {
          const toNode = allowed(c.model, { src, dst: { kind: 'ip', ip: entry.ip }, port: NODE_PORT.port, protocol: q.protocol });
          expected = {
            allowed: toNode.allowed && atBackend.ingress.allowed,
            summary: `to ${entry.ip}:${NODE_PORT.port} on its node: ${toNode.summary}; at the backend: ${atBackend.ingress.summary}`,
          };
        }
        out.push({ flow, node: entry.name, expected });
      }
    }
  }
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
  for (const { flow, node, expected } of remoteNodePortFlows(c)) {
    const got = plane.traverseIpvs(flow, { ...NODE_PORT, node });
    if (got.allowed !== expected.allowed) fail(flow, `through a node port of ${node} (${NODE_PORT.port}, IPVS)`, expected.allowed, expected.summary, got.allowed, got.traces, plane);
  }
  // The node's own traffic to its pods: from its address and from the bridge's (the pod CIDR's
  // first address, which kubelet's probes leave with). Never policed (docs/design.md): it
  // returns from PCTL-OUTPUT before any policy or dispatch chain.
  for (const nd of NODES) {
    const bridge = `${nd.prefix}1`;
    for (const e of endpoints(c)) {
      if (e.kind !== 'pod' || e.pod.hostNetwork || e.pod.nodeName !== nd.name) continue;
      for (const src of [nd.ip, bridge]) {
        const r = plane.traceOutput(nd.name, { src, dst: e.pod.ips[0]!, protocol: 'tcp', dport: 80, sport: 40000 });
        if (r.verdict !== 'ACCEPT') throw new Error(`node ${nd.name} (${src}) -> ${podKey(e.pod)}: the node's own traffic was dropped in OUTPUT\n${formatTrace(r)}`);
        // Unjudged: no policy or dispatch chain was entered (whatever rule returned it).
        if (r.steps.some((st) => st.chain !== 'OUTPUT' && st.chain !== 'PCTL-OUTPUT')) throw new Error(`node ${nd.name} (${src}) -> ${podKey(e.pod)}: the node's own traffic did not return unjudged from PCTL-OUTPUT\n${formatTrace(r)}`);
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
    "the node's own traffic is policed in OUTPUT": (t) => t.replace(/\n-A PCTL-OUTPUT -m addrtype --src-type LOCAL [^\n]*-j RETURN/, ''),
    "PCTL-OUTPUT tests the destination's address type (the node's own traffic policed)": (t) => t.replace(/\n(-A PCTL-OUTPUT -m addrtype) --src-type LOCAL /, '\n$1 --dst-type LOCAL '),
    // The rule the security review found: everything no local pod sent returned unjudged, so a
    // node port opened every local backend to pods of other nodes and to the outside.
    'PCTL-OUTPUT returns what no local pod sent (the old rule 2: node ports open local backends to remote clients)': (t) =>
      t.replace(/\n-A PCTL-OUTPUT -m addrtype --src-type LOCAL /, '\n-A PCTL-OUTPUT -m set ! --match-set PCTL-programmed src '),
  };
  for (const [what, mutate] of Object.entries(mutations)) {
    it(`fails when ${what}`, () => expectMutationCaught(what, mutate, (spy) => fc.property(clusterArb, (c) => checkIpvs(c, spy)), RUNS));
  }
});
