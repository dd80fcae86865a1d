// Services under kube-proxy's IPVS mode on the real kernel (issue 13): the example cluster
// (examples/) plus one ClusterIP Service per server pod, in a lab built in IPVS-path mode, with
// the agents detecting the mode themselves (`--service-proxy auto` finds kube-ipvs0).
//
// What this proves: this kernel has no ip_vs, so the lab reproduces IPVS's netfilter path
// instead (src/lab/rules.ts, src/lab/ipvs-proxy.py): a client pod's SYN to a VIP crosses its
// node's INPUT with the VIP as destination (the VIP is an address of kube-ipvs0), and the
// connection to the backend leaves with the client pod's address as source through OUTPUT (same
// node), then the backend node's FORWARD (other node), exactly the hooks IPVS's rewritten packet
// crosses. On that path the kernel must give, for every client pod and every Service port, the
// verdict `policyctl reach` gives for the client and the backend pod (which judges Service
// traffic at the backend): backends whose ingress denies the client are closed through the
// ClusterIP on the same node and on another node, clients whose egress allows the backends
// reach them, clients whose egress denies them do not; the node's own traffic to its pods
// (kubelet's probes) still passes OUTPUT; direct pod-to-pod traffic keeps reach's verdict
// (FORWARD is unchanged; this mode routes same-node pod traffic through the node). A control
// run with the agents forced to iptables mode shows the lab path really bypasses FORWARD:
// there the same table is wrong both ways.
// Node ports reached from elsewhere (a security review's finding): a connection to a node port of
// the backend's node from a pod of the other node, from the other node itself or from the
// external host crosses that node's INPUT with its own address as destination and leaves through
// its OUTPUT with the client's address; the backend's ingress must judge it as `policyctl reach`
// judges the client (PCTL-OUTPUT once returned everything no local pod sent, which opened every
// local backend to every such client). A second proxy in each backend's node stands for IPVS's
// node ports there (ipvs-proxy.py, listening on the node's address). flannel masquerades a pod's
// connection to another node's address at the pod's node (ip-masq), so the backend's node sees
// such a client as that node; the property tests (test/properties/ipvs.test.ts) cover a pod
// address arriving unmasqueraded.
// What it cannot prove: anything about IPVS itself (its scheduling, connection table, conntrack
// handling, UDP); the proxy completes the client's handshake itself, so a cell counts as open
// only when the backend's greeting comes back through it; hairpin (a pod through its own
// Service) and UDP Services are not probed.

import { cpSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labUp, loadFolder, readClusterInfo, startAgent, waitApplied, type ClusterInfo } from '../../src/lab/cluster.ts';
import { killPids, netnsPids } from '../../src/lab/exec.ts';
import { IPVS_PROXY_SCRIPT, startDaemon } from '../../src/lab/processes.ts';
import { addService, execInNode, openLab } from '../../src/lab/lab.ts';
import { probeAllPairs, probeMany, type ProbeRequest, type ProbeResult, type ProbeSource } from '../../src/lab/probe.ts';
import type { LabState } from '../../src/lab/state.ts';
import type { Model } from '../../src/model/store.ts';
import { isEnforceable, type PodRecord } from '../../src/model/types.ts';
import { allowed, podKey, type Endpoint, type Verdict } from '../../src/semantics/evaluate.ts';
import { reachTable } from '../../src/semantics/reach.ts';
import { compareWithModel } from '../../src/cli/lab.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { tearDownLab } from '../support/lab-teardown.ts';
import { until } from '../support/until.ts';

const started = Date.now();
const SERVICE_CIDR = '10.96.0.0/12';
const TIMEOUT_MS = 1_000;

interface Cell {
  readonly client: PodRecord;
  readonly backend: PodRecord;
  readonly vip: string;
  readonly servicePort: number;
  readonly targetPort: number;
  readonly verdict: Verdict;
  readonly sameNode: boolean;
}

/** One Service per server pod: a VIP each, every TCP port it declares as a Service port 20000 above it. */
function servicesOf(model: Model): { backend: PodRecord; vip: string; ports: { servicePort: number; targetPort: number }[] }[] {
  const servers = [...model.allPods()].filter((p) => isEnforceable(p) && p.ports.some((c) => c.protocol === 'TCP')).sort((a, b) => (podKey(a) < podKey(b) ? -1 : 1));
  return servers.map((backend, i) => ({
    backend,
    vip: `10.96.0.${10 + i}`,
    ports: [...new Set(backend.ports.filter((c) => c.protocol === 'TCP').map((c) => c.containerPort))].map((targetPort) => ({ servicePort: targetPort + 20000, targetPort })),
  }));
}

describe.runIf(kernelTestsEnabled())('Services under kube-proxy IPVS mode on the real kernel', () => {
  const name = `iv${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-iv-'));
  let lab: LabState;
  let info: ClusterInfo;
  let model: Model;
  let cells: Cell[];

  const requests = (): ProbeRequest[] => cells.map((c) => ({ from: podKey(c.client), to: { ip: c.vip, port: c.servicePort, protocol: 'TCP' } }));
  /** Through when the backend's greeting came back (the proxy accepts every client itself). */
  const through = (r: ProbeResult, c: Cell) => r.server === podKey(c.backend);
  const show = (c: Cell) => `${podKey(c.client)} -> ${c.vip}:${c.servicePort} (${podKey(c.backend)}:${c.targetPort}, ${c.sameNode ? 'same node' : 'other node'})`;

  beforeAll(async () => {
    cpSync('examples', dir, { recursive: true });
    ({ model } = await loadFolder(dir));
    const agentArgs = Object.fromEntries([...model.allNodes()].map((n) => [n.name, ['--service-proxy', 'auto', '--service-cidr', SERVICE_CIDR]]));
    lab = (await labUp({ name, manifests: dir, stateDir, resyncInterval: '1s', serviceProxy: 'ipvs', agentArgs })).lab;
    info = await readClusterInfo(lab);
    cells = [];
    for (const s of servicesOf(model)) {
      for (const p of s.ports) {
        await addService(lab, { name: `${podKey(s.backend)}:${p.targetPort}`, clusterIP: s.vip, port: p.servicePort, backend: { ip: s.backend.ips[0]!, port: p.targetPort } });
        for (const client of [...model.allPods()].filter(isEnforceable)) {
          if (client.uid === s.backend.uid) continue; // hairpin: another path
          const verdict = allowed(model, { src: { kind: 'pod', pod: client }, dst: { kind: 'pod', pod: s.backend }, port: p.targetPort, protocol: 'TCP' });
          cells.push({ client, backend: s.backend, vip: s.vip, servicePort: p.servicePort, targetPort: p.targetPort, verdict, sameNode: client.nodeName === s.backend.nodeName });
        }
      }
    }
    lab = await openLab(name, { stateDir });
  }, 180_000);

  afterAll(() => tearDownLab(name, stateDir, [dir], { what: 'IPVS-path lab', started }));

  it('the example cluster covers every case the issue names (else this test proves less than it says)', () => {
    const kinds = {
      'ingress denies, same node': cells.some((c) => c.sameNode && !c.verdict.ingress.allowed && c.verdict.egress.allowed),
      'ingress denies, other node': cells.some((c) => !c.sameNode && !c.verdict.ingress.allowed && c.verdict.egress.allowed),
      'egress policy allows': cells.some((c) => c.verdict.allowed && c.verdict.egress.enforced),
      'egress denies': cells.some((c) => !c.verdict.egress.allowed && c.verdict.egress.enforced),
      'allowed, same node': cells.some((c) => c.sameNode && c.verdict.allowed),
      'allowed, other node': cells.some((c) => !c.sameNode && c.verdict.allowed),
    };
    expect(Object.entries(kinds).filter(([, v]) => !v).map(([k]) => k)).toEqual([]);
  });

  it('the agents detected IPVS themselves and hook OUTPUT', async () => {
    for (const n of lab.nodes) {
      expect((await execInNode(lab, n.name, ['iptables', '-S', 'OUTPUT'])).stdout.split('\n')[1]).toContain('-j PCTL-OUTPUT');
      expect((await execInNode(lab, n.name, ['iptables', '-S', 'PCTL-INPUT'])).stdout).toContain(`-d ${SERVICE_CIDR}`);
      const log = readFileSync(info.agents.find((a) => a.node === n.name)!.logFile, 'utf8');
      expect(log).toContain('kube-proxy in ipvs mode');
      const status = JSON.parse(readFileSync(info.agents.find((a) => a.node === n.name)!.statusFile, 'utf8')) as { serviceProxy?: unknown };
      expect(status.serviceProxy).toEqual({ mode: 'ipvs', how: 'detected' });
    }
  });

  it('gives `policyctl reach` verdict of client and backend for every client through every ClusterIP, and the backend sees the client pod', async () => {
    const results = await probeMany(lab, requests(), { timeoutMs: TIMEOUT_MS });
    const wrong: string[] = [];
    results.forEach((r, i) => {
      const c = cells[i]!;
      if (through(r, c) !== c.verdict.allowed) wrong.push(`${show(c)}: kernel ${through(r, c) ? 'through' : 'closed'}, reach says ${c.verdict.summary}`);
      // IPVS (NAT mode) keeps the client's address: the backend's policy sees the client pod.
      else if (through(r, c) && !r.seenAs?.startsWith(`${c.client.ips[0]}:`)) wrong.push(`${show(c)}: the backend saw ${r.seenAs}, not the client pod`);
    });
    expect(wrong).toEqual([]);
    const open = results.filter((r, i) => through(r, cells[i]!)).length;
    console.log(`IPVS path: ${cells.length} client x Service cells, ${open} through, ${cells.length - open} closed, as reach says`);
    expect(open).toBeGreaterThan(0);
    expect(open).toBeLessThan(cells.length);
  }, 60_000);

  it("the node's own traffic to its pods (kubelet's probes) passes OUTPUT, isolated pods included", async () => {
    const reqs: ProbeRequest[] = [];
    for (const p of [...model.allPods()].filter(isEnforceable)) {
      for (const c of p.ports.filter((x) => x.protocol === 'TCP')) reqs.push({ from: { node: p.nodeName! }, to: { ip: p.ips[0]!, port: c.containerPort, protocol: 'TCP' } });
    }
    const results = await probeMany(lab, reqs, { timeoutMs: TIMEOUT_MS });
    expect(results.filter((r) => !r.allowed || !r.server).map((r) => `${JSON.stringify(r.from)} -> ${r.to.ip}:${r.to.port}`)).toEqual([]);
  }, 60_000);

  it('direct pod-to-pod traffic (FORWARD; between pods of one node routed by it in this mode) still gets reach verdict', async () => {
    const byIp = new Map(lab.pods.map((p) => [p.ip, p.key]));
    const results = await probeAllPairs(lab, { timeoutMs: TIMEOUT_MS });
    const kernel = results.map((r) => ({ from: r.from as string, to: byIp.get(r.to.ip)!, port: r.to.port, protocol: r.to.protocol, allowed: r.allowed }));
    expect(kernel.length).toBeGreaterThan(0);
    expect(compareWithModel(kernel, reachTable(model))).toEqual([]);
  }, 60_000);

  it("node ports from elsewhere (a pod of the other node, the other node, the external host) meet the local backend's ingress: `policyctl reach` verdict for every client, the node's own connections pass", async () => {
    // One node port per Service port, on the backend's node only: IPVS listens on every node,
    // but a client of another node than the backend's is masqueraded there (not this finding).
    const ports = servicesOf(model).flatMap((s, i) => s.ports.map((p, j) => ({ ...s, ...p, nodePort: 30080 + i * 10 + j })));
    interface NodePortCell {
      readonly from: ProbeSource;
      readonly label: string;
      readonly srcIp: string;
      readonly backend: PodRecord;
      readonly nodeIp: string;
      readonly nodePort: number;
      readonly targetPort: number;
      readonly expected: boolean;
      readonly why: string;
      /** Denied by the backend's ingress, whatever else allows it. */
      readonly deniedAtBackend: boolean;
      readonly remote: 'pod' | 'host' | 'external' | 'local pod' | 'own node';
    }
    const np: NodePortCell[] = [];
    for (const s of ports) {
      const entry = lab.nodes.find((n) => n.name === s.backend.nodeName)!;
      const flow = (src: Endpoint) => allowed(model, { src, dst: { kind: 'pod', pod: s.backend }, port: s.targetPort, protocol: 'TCP' });
      const base = { backend: s.backend, nodeIp: entry.ip, nodePort: s.nodePort, targetPort: s.targetPort };
      for (const client of [...model.allPods()].filter(isEnforceable)) {
        if (client.uid === s.backend.uid) continue; // hairpin: another path
        const v = flow({ kind: 'pod', pod: client });
        if (client.nodeName === entry.name) {
          np.push({ ...base, from: podKey(client), label: podKey(client), srcIp: client.ips[0]!, expected: v.allowed, why: v.summary, deniedAtBackend: !v.ingress.allowed, remote: 'local pod' });
        } else {
          // Its own node judges its egress against the node's address (kube-proxy takes a node
          // port only for its own node's addresses), then masquerades it: flannel's ip-masq
          // (FLANNEL-POSTRTG) rewrites a pod's packets to anything outside the cluster CIDR, a
          // node's address included. So the backend's ingress meets the client's node.
          const clientNode = lab.nodes.find((n) => n.name === client.nodeName)!;
          const toNode = allowed(model, { src: { kind: 'pod', pod: client }, dst: { kind: 'ip', ip: entry.ip }, port: s.nodePort, protocol: 'TCP' });
          const seen = flow({ kind: 'ip', ip: clientNode.ip });
          np.push({ ...base, from: podKey(client), label: podKey(client), srcIp: clientNode.ip, expected: toNode.allowed && seen.ingress.allowed, why: `${toNode.summary}; ${seen.ingress.summary}`, deniedAtBackend: !seen.ingress.allowed, remote: 'pod' });
        }
      }
      for (const n of lab.nodes) {
        const v = flow({ kind: 'ip', ip: n.ip });
        np.push({ ...base, from: { node: n.name }, label: `node ${n.name}`, srcIp: n.ip, expected: v.allowed, why: v.summary, deniedAtBackend: !v.ingress.allowed, remote: n.name === entry.name ? 'own node' : 'host' });
      }
      const v = flow({ kind: 'ip', ip: lab.external.ip });
      np.push({ ...base, from: { external: true }, label: `external ${lab.external.ip}`, srcIp: lab.external.ip, expected: v.allowed, why: v.summary, deniedAtBackend: !v.ingress.allowed, remote: 'external' });
    }
    // Else this test proves less than it says.
    const covers = {
      'a pod of the other node whose egress allows it, denied by the backend': np.some((c) => c.remote === 'pod' && !c.expected && !c.why.startsWith('denied') && c.deniedAtBackend),
      'a pod of the other node allowed': np.some((c) => c.remote === 'pod' && c.expected),
      'the other node denied by the backend': np.some((c) => c.remote === 'host' && c.deniedAtBackend),
      'the other node allowed': np.some((c) => c.remote === 'host' && c.expected),
      'the external host denied by the backend': np.some((c) => c.remote === 'external' && c.deniedAtBackend),
      'the external host allowed': np.some((c) => c.remote === 'external' && c.expected),
      "the node's own connection to a backend that denies others": np.some((c) => c.remote === 'own node' && c.expected && np.some((d) => d.backend.uid === c.backend.uid && d.deniedAtBackend)),
    };
    expect(Object.entries(covers).filter(([, v]) => !v).map(([k]) => k)).toEqual([]);

    const pids: number[] = [];
    try {
      for (const n of lab.nodes) {
        const maps = ports.filter((s) => s.backend.nodeName === n.name).flatMap((s) => ['--map', `${n.ip}:${s.nodePort}=${s.backend.ips[0]}:${s.targetPort}`]);
        if (maps.length === 0) continue;
        pids.push(
          await startDaemon({
            argv: ['ip', 'netns', 'exec', n.netns, 'python3', IPVS_PROXY_SCRIPT, ...maps],
            logFile: join(dir, `node-ports-${n.name}.log`),
            context: `starting the node-port proxy on node ${n.name}`,
          }),
        );
      }
      const results = await probeMany(lab, np.map((c) => ({ from: c.from, to: { ip: c.nodeIp, port: c.nodePort, protocol: 'TCP' } })), { timeoutMs: TIMEOUT_MS });
      const wrong: string[] = [];
      results.forEach((r, i) => {
        const c = np[i]!;
        const open = r.server === podKey(c.backend);
        const show = `${c.label} -> ${c.nodeIp}:${c.nodePort} (${podKey(c.backend)}:${c.targetPort}, ${c.remote})`;
        if (open !== c.expected) wrong.push(`${show}: kernel ${open ? 'through' : 'closed'}, reach says ${c.expected ? 'allowed' : 'denied'} (${c.why})`);
        // The backend's policy met the client's own address, as IPVS keeps it.
        else if (open && !r.seenAs?.startsWith(`${c.srcIp}:`)) wrong.push(`${show}: the backend saw ${r.seenAs}, not ${c.srcIp}`);
      });
      expect(wrong).toEqual([]);
      const open = np.filter((c) => c.expected).length;
      console.log(`IPVS path, node ports: ${np.length} client x node port cells, ${open} through, ${np.length - open} closed, as reach says`);
    } finally {
      await killPids(pids);
    }
  }, 90_000);

  it('control: with the agents forced to iptables mode, the same table is wrong both ways (the lab path bypasses FORWARD)', async () => {
    lab = await openLab(name, { stateDir });
    for (const n of lab.nodes) {
      const proxy = n.ipvsProxyPid;
      await killPids((await netnsPids(n.netns)).filter((p) => p !== proxy));
      const agent = info.agents.find((a) => a.node === n.name)!;
      await startAgent(lab, { ...agent, extraArgs: ['--service-proxy', 'iptables'] });
    }
    await until(async () => {
      for (const n of lab.nodes) if ((await execInNode(lab, n.name, ['iptables', '-S', 'OUTPUT'])).stdout.includes('PCTL-OUTPUT')) return false;
      return true;
    }, 'the OUTPUT hooks to go under forced iptables mode', 30_000);
    await waitApplied(lab, info, 30_000);
    const results = await probeMany(lab, requests(), { timeoutMs: TIMEOUT_MS });
    // A backend whose ingress denies the client is open through its Service (calico#2165)...
    expect(cells.some((c, i) => !c.verdict.ingress.allowed && c.verdict.egress.allowed && through(results[i]!, c))).toBe(true);
    // ...and a client whose egress policy allows the backend is closed (kube-router#1136).
    expect(cells.some((c, i) => c.verdict.allowed && c.verdict.egress.enforced && !through(results[i]!, c))).toBe(true);
  }, 90_000);
});
