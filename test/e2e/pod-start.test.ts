// Fail closed in time, on the real kernel, in the lab's real order (CNI ADD through bridge,
// host-local and policyctl-cni; the pod's IP reaches the agents' source only a status report
// later):
// - pod start: 51 pods started one after another (on both nodes in turn) under default deny
//   (ingress, egress, both), each probed from its first instant both ways by
//   same-node and other-node pods and by the external host: no connection the policies deny
//   succeeds, and every flow they allow works within 1 s of the pod's network coming up
//   (test/support/pod-start.ts);
// - pods an Admin ClusterNetworkPolicy Deny walls off, started on either node: no connection
//   with a pod of the other node while that node does not know them yet (it drops an address of
//   the pod CIDRs no known pod has at a Deny that names pods), and their allowed flows still
//   work within 1 s;
// - a pod attached to cni0 by hand (bridge alone, never named to an agent) gets nothing in or out;
// - agent killed: existing isolation holds, a new pod's ADD fails and the pod gets no network
//   (nothing in or out, from friends neither) until the agent is back; after the restart the
//   pod starts and everything is enforced.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent } from '../../src/lab/cluster.ts';
import { netnsPids, signalPids } from '../../src/lab/exec.ts';
import { addPod, findNode } from '../../src/lab/lab.ts';
import { probeMany, type ProbeRequest } from '../../src/lab/probe.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { EXTERNAL_PORT, newPod, PEERS, PodStartScenario, type NewPod } from '../support/pod-start.ts';

const started = Date.now();

function pct(xs: readonly number[], q: number): string {
  if (xs.length === 0) return '-';
  const s = [...xs].sort((a, b) => a - b);
  return String(s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]);
}
const PODS = 51;

/** An Admin ClusterNetworkPolicy: the peers refuse namespace walled, in and out. */
const WALL = `
apiVersion: v1
kind: Namespace
metadata: {name: walled}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: wall}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: peers}}}
  ingress: [{name: no-walled-in, action: Deny, from: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: walled}}}]}]
  egress: [{name: no-walled-out, action: Deny, to: [{namespaces: {matchLabels: {kubernetes.io/metadata.name: walled}}}]}]
`;

describe.runIf(kernelTestsEnabled())('pod start, unknown pods and agent outage on the real kernel', () => {
  const s = new PodStartScenario({ name: `ps${process.pid % 100000}` });

  beforeAll(async () => {
    await s.up();
  }, 120_000);

  afterAll(async () => {
    await s.down();
    console.log(`pod start on the real kernel: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  it(`${PODS} pods under default deny: no denied connection succeeds from their first instant, allowed flows work within 1 s`, async () => {
    for (let i = 0; i < PODS; i++) await s.startPod(newPod(i));
    const r = await s.report();
    expect(r.pods).toHaveLength(PODS);
    expect(r.leaks).toEqual([]);
    expect(r.slow).toEqual([]);
    // The measure of "worked within 1 s" has data: nearly every allowed flow was seen broken
    // (tried before the pod's network existed or before it was enforced) before it worked.
    const firsts = r.allowedFirstMs;
    const seenBroken = r.allowedBrokenMs.length;
    console.log(`pod start: ${r.allowedFlows} allowed flows, first success p50 ${pct(firsts, 0.5)} ms, p99 ${pct(firsts, 0.99)} ms, max ${pct(firsts, 1)} ms; last failed attempt p99 ${pct(r.allowedBrokenMs, 0.99)} ms, max ${pct(r.allowedBrokenMs, 1)} ms after the network came up`);
    expect(seenBroken).toBeGreaterThan(r.allowedFlows / 2);
    // Every pod had flows of both kinds, and the probers really tried.
    expect(r.allowedFlows).toBeGreaterThan(PODS * 4);
    expect(r.deniedFlows).toBeGreaterThan(PODS * 4);
    expect(r.attempts).toBeGreaterThan(PODS * 100);
    // ADD (bridge plus policyctl-cni) returned only once the pod was enforced: after its network was up.
    for (const p of r.pods) expect(p.added).toBeGreaterThanOrEqual(p.networkUp);
  }, 300_000);

  it('pods an Admin Deny walls off: no connection with a pod of the other node while that node does not know them yet', async () => {
    // The peers refuse namespace walled both ways. A walled pod is programmed on its own node
    // at ADD; the other node learns its address half a second later (the status report), and
    // until then must not take it for no pod at all.
    await s.apply('wall.yaml', WALL);
    await s.restartProbers();
    const walled = [0, 1, 2, 3, 4, 5].map((i): NewPod => {
      const node = i % 2 === 0 ? 'n1' : 'n2';
      return { key: `walled/w${i}`, namespace: 'walled', name: `w${i}`, node, ip: `10.244.${node === 'n1' ? 1 : 2}.${150 + Math.floor(i / 2)}` };
    });
    for (const p of walled) await s.startPod(p);
    const r = await s.report(walled);
    expect(r.leaks).toEqual([]);
    // Both ways with every peer, of both nodes, both protocols: denied; with the external host: allowed, in time.
    expect(r.deniedFlows).toBe(walled.length * PEERS.length * 2 * 2);
    expect(r.allowedFlows).toBe(walled.length * 2 * 2);
    expect(r.slow).toEqual([]);
    expect(r.attempts).toBeGreaterThan(walled.length * 100);
  }, 90_000);

  it('a pod attached to cni0 by hand, never named to the agent, gets no connection in or out', async () => {
    const lab = await s.refresh();
    const rogue = await addPod(lab, { namespace: 'rogue', name: 'byhand', node: 'n1', ip: '10.244.1.250', ports: [{ port: 80 }, { port: 80, protocol: 'UDP' }] }, { bypassPolicyCni: true });
    const requests: ProbeRequest[] = [];
    for (const protocol of ['TCP', 'UDP'] as const) {
      for (const peer of PEERS) {
        requests.push({ from: peer, to: { ip: rogue.ip, port: 80, protocol } });
        requests.push({ from: rogue.key, to: { ip: lab.pods.find((p) => p.key === peer)!.ip, port: 80, protocol } });
      }
      requests.push({ from: { external: true }, to: { ip: rogue.ip, port: 80, protocol } });
      requests.push({ from: rogue.key, to: { ip: lab.external.ip, port: EXTERNAL_PORT, protocol } });
    }
    const results = await probeMany(lab, requests, { timeoutMs: 1000 });
    expect(results.filter((r) => r.allowed).map((r) => `${JSON.stringify(r.from)} -> ${r.to.ip}:${r.to.port}/${r.to.protocol}`)).toEqual([]);
    // The same flows work for a pod the agent knows (the probes can succeed at all).
    const control = await probeMany(lab, [{ from: 'peers/x1', to: { ip: lab.pods.find((p) => p.key === 'peers/s1')!.ip, port: 80, protocol: 'TCP' } }], { timeoutMs: 1000 });
    expect(control[0]!.allowed).toBe(true);
  }, 60_000);

  it('agent killed: isolation holds, a new pod gets no network until the agent is back, then everything is enforced', async () => {
    let lab = await s.refresh();
    const n1 = findNode(lab, 'n1');
    const agent = s.info.agents.find((a) => a.node === 'n1')!;
    signalPids(await netnsPids(n1.netns), 'SIGKILL');
    // Existing isolation holds: din/p0 (on n1) admits friends only.
    const p0 = newPod(0);
    const before = await probeMany(
      lab,
      [
        { from: 'peers/x2', to: { ip: p0.ip, port: 80, protocol: 'TCP' } },
        { from: { external: true }, to: { ip: p0.ip, port: 80, protocol: 'UDP' } },
        { from: 'peers/s2', to: { ip: p0.ip, port: 80, protocol: 'TCP' } },
      ],
      { timeoutMs: 1000 },
    );
    expect(before.map((r) => r.allowed)).toEqual([false, false, true]);

    // A new pod on n1 while its agent is down: ADD fails (no agent), and while its sandbox
    // exists nothing reaches it or leaves it, friends included.
    await s.restartProbers();
    const pod = { key: 'din/q1', namespace: 'din', name: 'q1', node: 'n1', ip: '10.244.1.200' };
    await expect(s.startPod(pod)).rejects.toThrow(/no policyctl agent listening/);
    await new Promise((r) => setTimeout(r, 500));
    await expect(s.kubelet.reconcile()).rejects.toThrow(/no policyctl agent listening/); // the kubelet's retry fails too

    // The agent comes back; the retry succeeds, and the pod is enforced from then on.
    const back = Date.now();
    await startAgent(lab, agent);
    const t0 = Date.now();
    for (;;) {
      try {
        await s.kubelet.reconcile();
        break;
      } catch (e) {
        if (Date.now() - t0 > 20_000) throw e;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
    const r = await s.report([pod]);
    // No leak during the outage or after it; while the agent was away the pod's sandboxes got
    // nothing at all, allowed flows included.
    expect(r.leaks).toEqual([]);
    expect(r.hits.filter((h) => (h.from === pod.key || h.to === pod.key) && h.t < back)).toEqual([]);
    // After the restart everything is enforced: the new pod admits friends only, the old
    // isolation stands. (Allowed flows are polled: the sandboxes torn down during the outage had
    // the same address with other MACs, and a peer's neighbour entry may take seconds to notice.)
    lab = await s.refresh();
    const probe = async (from: string, ip: string) => (await probeMany(lab, [{ from, to: { ip, port: 80, protocol: 'TCP' } }], { timeoutMs: 700 }))[0]!.allowed;
    const t1 = Date.now();
    while (!(await probe('peers/s2', pod.ip)) && Date.now() - t1 < 15_000);
    expect(await probe('peers/s2', pod.ip)).toBe(true);
    expect(await probe('peers/x2', pod.ip)).toBe(false);
    expect(await probe('peers/x1', pod.ip)).toBe(false);
    expect(await probe('peers/x1', p0.ip)).toBe(false);
  }, 90_000);
});
