// policyctl drops --kube against the API server double: the agents' /drops (a real DropLog behind
// a real health server) reached through the pod proxy subresource, merged, filtered, printed.

import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServerDouble } from '../../test/support/apiserver.ts';
import { runCli } from '../../test/support/cli.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import type { Agent } from '../agent/agent.ts';
import { DropLog } from '../agent/drop-log.ts';
import { serveHealth } from '../agent/health.ts';
import { AgentMetrics } from '../agent/metrics.ts';
import { dropLogPrefix } from '../compiler/drop-log.ts';
import { loadKubeConfig } from '../watchers/kube-client.ts';
import { getFromSocket, kubeAgentDrops, showDrops } from './drops.ts';

let api: ApiServerDouble;
let dir: string;
let kubeconfig: string;
const servers: Server[] = [];
const logs: Record<string, DropLog> = {};

const agentPod = (name: string, node: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'kube-system', labels: { app: 'policyctl' } },
  spec: { nodeName: node, hostNetwork: true, containers: [{ name: 'agent', image: 'policyctl' }] },
  status: { phase: 'Running', podIP: '192.168.50.11' },
});

/** A node's agent: a DropLog behind its health server, reachable through the double's pod proxy. */
async function agent(pod: string, node: string): Promise<DropLog> {
  const dl = new DropLog({ node, model: sampleCluster(), logger: pino({ level: 'silent' }) });
  const fake = { status: () => ({ node }), metrics: new AgentMetrics() } as unknown as Agent;
  const sock = join(dir, `${pod}.sock`);
  servers.push(await serveHealth(fake, `unix:${sock}`, dl));
  api.create(agentPod(pod, node));
  api.setPodProxy('kube-system', pod, async (port, path) => {
    if (port !== 9102) return { status: 503, body: `nothing listens on port ${port}` };
    return { status: 200, body: await getFromSocket(sock, path) };
  });
  logs[node] = dl;
  return dl;
}

const NP = dropLogPrefix({ kind: 'np', dir: 'Ingress', policies: ['x/allow', 'x/deny'] });
const EGRESS = dropLogPrefix({ kind: 'np', dir: 'Egress', policies: ['x/eg'] });

beforeEach(async () => {
  api = await startApiServer();
  dir = mkdtempSync(join(tmpdir(), 'policyctl-drops-'));
  kubeconfig = api.writeKubeconfig(dir);
  const n1 = await agent('policyctl-a', 'n1');
  const n2 = await agent('policyctl-b', 'n2');
  // y/d -> x/a (ingress, on n1); x/b -> y/c egress denied on n1; y/c -> x/a seen on n2... as ingress of x/a is n1's, n2 logs an unknown address.
  n1.record({ prefix: NP, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 80 });
  n1.record({ prefix: NP, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 80 });
  n1.record({ prefix: EGRESS, src: '10.244.1.11', dst: '10.244.2.10', protocol: 'udp', dport: 53 });
  n2.record({ prefix: dropLogPrefix({ kind: 'unknown', dir: 'Ingress' }), src: '10.244.2.12', dst: '10.244.2.99', protocol: 'tcp', dport: 22 });
});

afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  await api.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('policyctl drops --kube', () => {
  it('asks every agent pod through the pod proxy and prints the drops grouped by destination', async () => {
    const r = await runCli(['drops', '--kube', '--kubeconfig', kubeconfig]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const lines = r.out.split('\n');
    // Grouped by destination, in name order; the reason in explain's words.
    expect(lines[0]).toBe('10.244.2.99:');
    expect(lines[1]).toMatch(/^  y\/s -> port 22\/TCP: ingress denied on n2, 1 packet in 0\.0s \(last [^)]+\): 10\.244\.2\.99 is in the pod CIDRs but is not a pod this node knows or enforces/);
    expect(lines[2]).toBe('x/a:');
    expect(lines[3]).toMatch(/^  y\/d -> port 80\/TCP: ingress denied on n1, 2 packets in [0-9.]+s \(last [^)]+\): \[NetworkPolicy\] isolated by x\/allow, x\/deny, no rule matches$/);
    expect(lines[4]).toBe('y/c:');
    expect(api.podProxyRequests.map((q) => `${q.namespace}/${q.pod}:${q.port}${q.path}`).sort()).toEqual(['kube-system/policyctl-a:9102/drops', 'kube-system/policyctl-b:9102/drops']);
  });

  it('-n filters by namespace, -o json gives the merged list; an agent that does not answer is named and fails the command', async () => {
    const j = await runCli(['drops', '--kube', '--kubeconfig', kubeconfig, '-n', 'x', '-o', 'json']);
    expect(j.code).toBe(0);
    const body = JSON.parse(j.out) as { drops: { from: string; to: string; direction: string; decision: { policies?: string[] } }[] };
    expect(body.drops.map((d) => `${d.from} ${d.to} ${d.direction}`).sort()).toEqual(['x/b y/c Egress', 'y/d x/a Ingress']);
    expect(body.drops.find((d) => d.direction === 'Egress')!.decision.policies).toEqual(['x/eg']);

    api.setPodProxy('kube-system', 'policyctl-b', undefined);
    const r = await runCli(['drops', '--kube', '--kubeconfig', kubeconfig]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^warning: node n2: agent pod kube-system\/policyctl-b: GET \/api\/v1\/namespaces\/kube-system\/pods\/policyctl-b:9102\/proxy\/drops: HTTP 503: /);
    expect(r.out).toContain('x/a:\n');

    const wrongPort = await runCli(['drops', '--kube', '--kubeconfig', kubeconfig, '--agent-port', '9999', '-o', 'json']);
    expect(JSON.parse(wrongPort.out).errors.map((e: { node: string }) => e.node).sort()).toEqual(['n1', 'n2']);
  });

  it('--watch asks for what changed since (the `since` query through the proxy) and prints only that', async () => {
    const kc = loadKubeConfig({ kubeconfig });
    const agents = { namespace: 'kube-system', selector: 'app=policyctl', port: 9102 };
    const ac = new AbortController();
    let out = '';
    const io = { out: (t: string) => void (out += t), err: () => {}, readStdin: async () => '' };
    const done = showDrops(io, (since) => kubeAgentDrops(kc, agents, since), { output: 'text', watch: true, everyMs: 50, signal: ac.signal });
    await new Promise((r) => setTimeout(r, 120));
    const before = out;
    logs.n1!.record({ prefix: NP, src: '10.244.1.12', dst: '10.244.1.10', protocol: 'udp', dport: 1234 });
    await new Promise((r) => setTimeout(r, 200));
    ac.abort();
    expect(await done).toBe(0);
    const after = out.slice(before.length);
    expect(after).toMatch(/^x\/a:\n  x\/a2 -> port 1234\/UDP: ingress denied on n1, 1 packet/);
    expect(after).not.toContain('y/d ->');
    expect(api.podProxyRequests.some((q) => /\/drops\?since=\d+$/.test(q.path))).toBe(true);
  });

  it('without --kube, or without agent pods, says what to give', async () => {
    expect((await runCli(['drops'])).err).toMatch(/give --kube/);
    const r = await runCli(['drops', '--kube', '--kubeconfig', kubeconfig, '--agent-selector', 'app=other']);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/no agent pods in namespace kube-system with labels app=other/);
  });
});
