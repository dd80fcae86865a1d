// The agent on the kube source, against the API server double, on the real kernel (in a test
// namespace): faults of the API server never remove isolation, readiness says why, bursts
// coalesce, invalid policies are counted and isolate.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ApiServerDouble, type KubeObject, startApiServer, waitUntil } from '../../test/support/apiserver.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { main } from '../cli/main.ts';
import { NFT } from '../sync/backend.ts';
import { RecordingRunner } from '../sync/runner.ts';
import { Syncer } from '../sync/syncer.ts';
import { KubeSource, type KubeSourceOptions } from '../watchers/kube.ts';
import { Agent } from './agent.ts';
import { serveHealth } from './health.ts';

function pod(ns: string, name: string, ip: string, labels: Record<string, string>, node: string): KubeObject {
  return {
    kind: 'Pod',
    metadata: { namespace: ns, name, labels },
    spec: { nodeName: node, containers: [{ name: 'c', image: 'x', ports: [{ name: 'http', containerPort: 80 }] }] },
    status: { phase: 'Running', podIP: ip },
  };
}

const DENY = { kind: 'NetworkPolicy', metadata: { namespace: 'app', name: 'deny' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } };

function seed(api: ApiServerDouble): void {
  api.create({ kind: 'Namespace', metadata: { name: 'app' } });
  api.create({ kind: 'Node', metadata: { name: 'n1' }, spec: { podCIDR: '10.244.1.0/24' } });
  api.create({ kind: 'Node', metadata: { name: 'n2' }, spec: { podCIDR: '10.244.2.0/24' } });
  api.create(pod('app', 'web', '10.244.1.10', { app: 'web' }, 'n1'));
  api.create(pod('app', 'client', '10.244.2.10', { app: 'client' }, 'n2'));
}

describe.runIf(kernelTestsEnabled())('Agent on the kube source', () => {
  let net: TestNetns;
  let dir: string;
  let api: ApiServerDouble;
  let agent: Agent | undefined;
  let source: KubeSource;
  let rec: RecordingRunner;
  let logs: Record<string, unknown>[];

  beforeEach(async () => {
    net = createNetns('pctl-agentk');
    net.sh(`iptables-nft-restore <<'EOF'\n${FOREIGN_FILTER}EOF`);
    dir = mkdtempSync(join(tmpdir(), 'pctl-agentk-'));
    writeFileSync(join(dir, '.bridge-nf'), '1\n');
    api = await startApiServer();
    seed(api);
    logs = [];
  });

  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    await api.close();
    net.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  function makeAgent(o: Partial<KubeSourceOptions> = {}, extra: Partial<ConstructorParameters<typeof Agent>[0]> = {}): Agent {
    const kc = new KubeConfig();
    kc.loadFromString(api.kubeconfig());
    const logger = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s) as Record<string, unknown>) });
    source = new KubeSource({ kubeConfig: kc, nodeName: 'n1', logger, backoffMinMs: 20, backoffMaxMs: 200, ...o });
    rec = new RecordingRunner(net.runner);
    agent = new Agent({
      node: 'n1',
      source,
      syncer: new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' } }),
      logger,
      bridgeNfPath: join(dir, '.bridge-nf'),
      backoffMinMs: 50,
      ...extra,
    });
    return agent;
  }

  const filter = () => net.sh('iptables-save -t filter').split('\n').filter((l) => !l.startsWith('#')).join('\n');
  const applied = (a: Agent) => a.status().generation === source.model.generation && a.status().revision === source.revision();

  it('API server unreachable at start: not ready and nothing written until the lists are done', async () => {
    api.create(DENY);
    await api.setUnavailable(true, 'refuse');
    const a = makeAgent();
    let started = false;
    const starting = a.start().then(() => (started = true));
    await waitUntil(() => source.stats().errors.pods >= 3, 'several failed lists');
    expect(started).toBe(false);
    expect(rec.writes()).toEqual([]);
    expect(a.status().ready).toBe(false);
    expect(a.status().reasons).toContain('source not synced yet');
    expect(a.status().reasons.join('\n')).toMatch(/cannot list from the API server .*ECONNREFUSED/);
    await api.setUnavailable(false);
    await starting;
    expect(a.status().ready).toBe(true);
    expect(filter()).toMatch(/default deny ingress: isolated by app\/deny/);
  });

  it('API server lost later: keeps enforcing, writes nothing that removes rules, /readyz and the log say why; recovers', async () => {
    api.create(DENY);
    const a = makeAgent({}, { resyncMs: 100, verifyAfterWriteMs: 50 });
    await a.start();
    const server = await serveHealth(a, '127.0.0.1:0');
    try {
      const port = (server.address() as { port: number }).port;
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
      const before = filter();
      expect(before).toMatch(/default deny ingress: isolated by app\/deny/);
      await waitUntil(() => applied(a), 'the initial state applied');
      const writes = rec.writes().length;
      const syncs = a.status().syncs;

      await api.setUnavailable(true, 'refuse');
      api.delete('NetworkPolicy', 'app', 'deny'); // invisible while the API is gone
      await waitUntil(() => a.status().reasons.some((r) => /API server .* lost, enforcing the last known state/.test(r)), 'the loss in the status');
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reasons: string[] }).reasons.join()).toMatch(/source unhealthy, enforcing the last known state: API server http:\/\/127\.0\.0\.1:\d+ lost/);
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toMatch(/policyctl_source_healthy 0/);
      await waitUntil(() => a.status().syncs >= syncs + 3, 'periodic verifications while the API is gone');
      expect(rec.writes().slice(writes)).toEqual([]);
      expect(filter()).toBe(before);
      expect(logs.some((l) => l.level === 50 && /enforcing the last known state/.test(String(l.msg)))).toBe(true);

      await api.setUnavailable(false);
      await waitUntil(() => a.status().ready && !filter().includes('default deny ingress'), 'recovery applies the deletion');
    } finally {
      server.close();
    }
  });

  it('a silent watch turns /readyz not ready within half the stale-watch bound, naming the resource and its age; the restart relists and applies', async () => {
    await api.close();
    api = await startApiServer({ bookmarkIntervalMs: 50 }); // healthy watches say something every 50 ms
    seed(api);
    api.create(DENY);
    const bound = 3000;
    const a = makeAgent({ watchdogMs: bound });
    await a.start();
    const server = await serveHealth(a, '127.0.0.1:0');
    try {
      const readyz = `http://127.0.0.1:${(server.address() as { port: number }).port}/readyz`;
      await waitUntil(() => applied(a), 'the initial state applied');
      expect((await fetch(readyz)).status).toBe(200);
      // Ready, with a note: the double serves no ClusterNetworkPolicy CRD.
      expect(a.status().reasons).toEqual(['clusternetworkpolicies not served (CRD not installed): ClusterNetworkPolicies are not enforced']);
      api.stall(); // the open watches stay connected and say nothing more; LISTs still work
      const stalledAt = Date.now();
      api.patchLabels('Pod', 'app', 'web', { app: 'web', stale: 'yes' });
      await waitUntil(() => !a.status().ready, 'not ready', { timeoutMs: bound, intervalMs: 10 });
      expect(Date.now() - stalledAt).toBeLessThanOrEqual(bound / 2 + 500); // the poll and a loaded machine's timers
      const res = await fetch(readyz);
      expect(res.status).toBe(503);
      expect(((await res.json()) as { reasons: string[] }).reasons.join('\n')).toMatch(/watch silent past half the stale-watch bound of 3\.0 s .*(namespaces|nodes|pods|networkpolicies): no event or bookmark for \d\.\d s/);
      await waitUntil(() => source.model.findPod('app', 'web')?.labels.stale === 'yes' && applied(a), 'the relist applied', { timeoutMs: 3 * bound });
      expect(source.stats().restarts.watchdog).toBeGreaterThan(0);
    } finally {
      server.close();
      api.resume();
    }
  });

  it('a burst of 1000 pod events coalesces into a few syncs', async () => {
    api.create(DENY);
    const a = makeAgent();
    await a.start();
    await waitUntil(() => applied(a), 'the initial state applied');
    const syncs = a.status().syncs;
    // Unique addresses: an address two pods claim belongs to neither (and leaves the cluster).
    for (let i = 0; i < 500; i++) api.create(pod('app', `p${i}`, `10.244.${1 + Math.floor(i / 200)}.${20 + (i % 200)}`, { app: 'burst' }, 'n1'));
    for (let i = 0; i < 500; i++) api.patchLabels('Pod', 'app', `p${i}`, { app: 'burst', round: '2' });
    await waitUntil(() => source.stats().events.pods >= 1000 && applied(a), 'the burst applied', { timeoutMs: 20_000 });
    const n = a.status().syncs - syncs;
    expect(n).toBeGreaterThanOrEqual(1);
    expect(n).toBeLessThanOrEqual(10);
    expect(net.sh('ipset save')).toContain('10.244.1.219');
  });

  it('an invalid NetworkPolicy from the API is logged, counted, and its pods stay isolated in the kernel', async () => {
    api.create({
      kind: 'NetworkPolicy',
      metadata: { namespace: 'app', name: 'bad' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] } }] }] },
    });
    const a = makeAgent();
    await a.start();
    const server = await serveHealth(a, '127.0.0.1:0');
    try {
      const port = (server.address() as { port: number }).port;
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(/^policyctl_invalid_policies 1$/m);
      expect(metrics).toMatch(/^policyctl_source_objects_with_issues\{kind="NetworkPolicy"\} 1$/m);
    } finally {
      server.close();
    }
    expect(logs.filter((l) => /invalid NetworkPolicy/.test(String(l.msg)))).toEqual([
      expect.objectContaining({ level: 50, namespace: 'app', name: 'bad', field: 'spec.ingress[0].from[0].ipBlock.except[0]', value: '"192.168.0.0/16"' }),
    ]);
    // web (on n1) is isolated by the invalid policy and nothing is allowed in.
    expect(filter()).toMatch(/default deny ingress: isolated by app\/bad/);
    expect(a.status().ready).toBe(true);
  });
});

describe('policyctl agent --kube', () => {
  it('is a flag of the agent command; conflicting sources are usage errors', async () => {
    let err = '';
    const io = { out: () => {}, err: (s: string) => void (err += s), readStdin: async () => '' };
    expect(await main(['agent', '--node', 'n1', '--kube', '--manifests', '/nonexistent'], io)).toBe(2);
    expect(err).toMatch(/--kube .* or --manifests DIR, not both/);
    expect(await main(['agent', '--node', 'n1', '--kubeconfig', '/nonexistent'], io)).toBe(2);
    expect(err).toMatch(/--kubeconfig and --context need --kube/);
    expect(await main(['agent', '--node', 'n1', '--kube', '--kubeconfig', '/nonexistent/kubeconfig'], io)).toBe(1);
    expect(err).toMatch(/cannot read kubeconfig \/nonexistent\/kubeconfig/);
    expect(await main(['agent', '--node', 'n1', '--kube', '--stale-watch', '5m'], io)).toBe(2);
    expect(err).toMatch(/--stale-watch must be between 10s and 2m, got "5m"/);
    expect(await main(['agent', '--node', 'n1', '--kube', '--stale-watch', 'soon'], io)).toBe(2);
    expect(err).toMatch(/--stale-watch must be a duration like 500ms, 10s or 2m, got "soon"/);
  });
});
