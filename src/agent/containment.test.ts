// Containment on the real kernel (in test namespaces): an agent fed a cluster with one object
// the kernel refuses programs exactly what an agent fed the same cluster without that object
// programs (for a policy: with its fail-closed form, since dropping a policy would unisolate its
// pods), reports the object (log, metric, /readyz), stays enforced and keeps following changes;
// a restart with the object ends the same way.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { node, ns, pod, podsPeer, policy, port, ports, rule, sel } from '../../test/support/builders.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { holding, RefusingRunner } from '../../test/support/kernel-refusal.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { Model } from '../model/store.ts';
import type { ObjectRecord, PolicyRecord } from '../model/types.ts';
import { NFT } from '../sync/backend.ts';
import type { Runner } from '../sync/runner.ts';
import { Syncer } from '../sync/syncer.ts';
import { FileSource } from '../watchers/files.ts';
import type { ModelSource } from '../watchers/source.ts';
import { Agent } from './agent.ts';
import { serveHealth } from './health.ts';
import { until } from '../../test/support/until.ts';

const N1 = node('n1', '10.244.1.0/24', '192.168.50.11');
const N2 = node('n2', '10.244.2.0/24', '192.168.50.12');
const BASE: ObjectRecord[] = [
  ns('app'),
  N1,
  N2,
  pod('app', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1', ports: [port(80, 'http')] }),
  pod('app', 'db', { app: 'db' }, { ip: '10.244.1.11', node: 'n1' }),
  pod('app', 'client', { app: 'client' }, { ip: '10.244.2.10', node: 'n2', ports: [port(8080, 'metrics')] }),
  policy('app', 'deny', sel(), { types: ['Ingress'], ingress: [] }),
  policy('app', 'allow-web', sel({ app: 'web' }), { ingress: [rule([podsPeer('app', sel({ app: 'client' }))], ports('http'))] }),
  // Egress to the clients' named port: their addresses are in a hash:ip,port set too.
  policy('app', 'db-egress', sel({ app: 'db' }), { types: ['Egress'], egress: [rule([podsPeer('app', sel({ app: 'client' }))], ports('metrics'))] }),
];

/** A source that stores records as given (no manifest validation in between) and can be edited. */
class RecordSource implements ModelSource {
  readonly model = new Model();
  private readonly records: readonly ObjectRecord[];
  private readonly listeners: (() => void)[] = [];
  private rev = 0;
  constructor(records: readonly ObjectRecord[]) {
    this.records = records;
  }
  start = async () => {
    for (const r of this.records) this.model.upsert(r);
  };
  stop = async () => {};
  onChange = (l: () => void) => void this.listeners.push(l);
  revision = () => `r${this.rev}`;
  status = () => ({ synced: true, healthy: true, detail: 'records' });
  invalidPolicies = () => 0;
  upsert(r: ObjectRecord): void {
    this.model.upsert(r);
    this.rev++;
    for (const l of this.listeners) l();
  }
}

type Log = Record<string, unknown> & { msg: string };

/** What the kernel holds: every filter chain's rules in order, every set's type and sorted members. */
function view(net: TestNetns): { chains: Record<string, string[]>; sets: Record<string, string[]> } {
  const chains: Record<string, string[]> = {};
  for (const l of net.sh('iptables-save -t filter').split('\n')) {
    const decl = /^:(\S+) /.exec(l)?.[1];
    if (decl) chains[decl] ??= [];
    const rule = /^-A (\S+) /.exec(l)?.[1];
    if (rule) (chains[rule] ??= []).push(l);
  }
  const sets: Record<string, string[]> = {};
  for (const l of net.sh('ipset save').split('\n')) {
    const w = l.split(' ');
    if (w[0] === 'create') sets[w[1]!] = [w[2]!];
    else if (w[0] === 'add') sets[w[1]!]!.push(w.slice(2).join(' '));
  }
  for (const [k, v] of Object.entries(sets)) sets[k] = [v[0]!, ...v.slice(1).sort()];
  return { chains, sets };
}


async function metric(a: Agent, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const m = await a.metrics.registry.getSingleMetric(name)?.get();
  return m?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

describe.runIf(kernelTestsEnabled())('containment of objects the kernel refuses', () => {
  let net: TestNetns;
  let base: TestNetns;
  let dir: string;
  let bridgeNf: string;
  const agents: Agent[] = [];

  beforeEach(() => {
    net = createNetns('pctl-contain');
    base = createNetns('pctl-contain-base');
    for (const n of [net, base]) n.sh(`iptables-nft-restore <<'EOF'\n${FOREIGN_FILTER}EOF`);
    dir = mkdtempSync(join(tmpdir(), 'pctl-contain-'));
    bridgeNf = join(dir, '.bridge-nf');
    writeFileSync(bridgeNf, '1\n');
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) await a.stop();
    net.remove();
    base.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  function agent(runner: Runner, source: ModelSource, logs?: Log[]): Agent {
    const logger = logs ? pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Log) }) : pino({ level: 'silent' });
    const a = new Agent({
      node: 'n1',
      source,
      syncer: new Syncer({ runner, backend: { ...NFT, reason: 'test' } }),
      logger,
      bridgeNfPath: bridgeNf,
      backoffMinMs: 50,
      coalesceMs: 5,
      resyncMs: 60_000,
      verifyAfterWriteMs: 60_000,
    });
    agents.push(a);
    return a;
  }

  /** The kernel of an agent fed `records` in the baseline namespace (reset first). */
  async function baseline(records: readonly ObjectRecord[]): Promise<ReturnType<typeof view>> {
    const b = agent(base.runner, new RecordSource(records));
    await b.start();
    await b.stop();
    return view(base);
  }

  it('a pod at 0.0.0.0 (refused by ipset itself): programmed as without it, reported, enforced; likewise on restart', async () => {
    const poison = pod('app', 'poison', { app: 'client' }, { ip: '0.0.0.0', node: 'n2', ports: [port(8080, 'metrics')] });
    const logs: Log[] = [];
    const a = agent(net.runner, new RecordSource([...BASE, poison]), logs);
    await a.start(); // a start-up with the object: the kernel held nothing of ours
    const want = await baseline(BASE);
    expect(view(net)).toEqual(want);
    expect(want.chains['FORWARD']![0]).toContain('-j PCTL-FORWARD'); // enforced: hooked first, chains in place

    // Reported: a log line with object, field and value, the metrics, a /readyz reason.
    const line = logs.find((l) => l['object'] === 'pod/app/poison');
    expect(line).toMatchObject({ field: 'status.podIP', value: '0.0.0.0' });
    expect(line!.msg).toMatch(/^the kernel refused pod\/app\/poison status\.podIP "0\.0\.0\.0" \(ipset restore.*Error in line \d+: Null-valued element/);
    expect(await metric(a, 'policyctl_quarantined_objects', { kind: 'Pod' })).toBe(1);
    expect(await metric(a, 'policyctl_kernel_rejections_total', { kind: 'Pod' })).toBe(1);
    const server = await serveHealth(a, '127.0.0.1:0');
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as { port: number }).port}/readyz`);
      // Reported, but ready: everything else is enforced and the object fails closed.
      expect(res.status).toBe(200);
      const body = (await res.json()) as { reasons: string[]; quarantined: { object: string; field: string; value: string }[] };
      expect(body.reasons).toEqual([expect.stringMatching(/^quarantined pod\/app\/poison: the kernel refused status\.podIP "0\.0\.0\.0" \(.*Null-valued element.*\); enforced fail-closed/)]);
      expect(body.quarantined).toEqual([expect.objectContaining({ object: 'pod/app/poison', field: 'status.podIP', value: '0.0.0.0' })]);
    } finally {
      server.close();
    }

    // Restart: a new agent with the same cluster, on the kernel the first one left.
    await a.stop();
    const logs2: Log[] = [];
    const a2 = agent(net.runner, new RecordSource([...BASE, poison]), logs2);
    await a2.start();
    expect(view(net)).toEqual(want);
    expect(logs2.some((l) => l['object'] === 'pod/app/poison' && l['value'] === '0.0.0.0')).toBe(true);
    expect(a2.status().reasons).toEqual([expect.stringMatching(/^quarantined pod\/app\/poison/)]);
  });

  it('a valid pod made to fail through the test hook: as without it; changes still apply; a new address lifts the quarantine', async () => {
    const victim = pod('app', 'victim', { app: 'client' }, { ip: '10.244.2.30', node: 'n2', ports: [port(8080, 'metrics')] });
    const runner = new RefusingRunner(net.runner, { ipset: holding('10.244.2.30') });
    const logs: Log[] = [];
    const src = new RecordSource([...BASE, victim]);
    const a = agent(runner, src, logs);
    await a.start();
    expect(runner.refused).toBeGreaterThan(0);
    expect(view(net)).toEqual(await baseline(BASE));
    expect(logs.find((l) => l['object'] === 'pod/app/victim')!.msg).toMatch(/^the kernel refused pod\/app\/victim status\.podIP "10\.244\.2\.30" \(ipset restore.*Kernel error received: Invalid argument\): quarantined/);
    expect(a.status().reasons).toEqual([expect.stringMatching(/^quarantined pod\/app\/victim: the kernel refused status\.podIP "10\.244\.2\.30"/)]);

    // The object blocks nothing: another client is added and programmed.
    const client2 = pod('app', 'client2', { app: 'client' }, { ip: '10.244.2.20', node: 'n2' });
    src.upsert(client2);
    await until(() => a.status().revision === src.revision(), 'the new client to be applied');
    expect(view(net)).toEqual(await baseline([...BASE, client2]));

    // The pod changes (a new address): tried again as it is, and programmed.
    const moved = { ...victim, ips: ['10.244.2.31'] };
    src.upsert(moved);
    await until(() => a.status().revision === src.revision(), 'the moved pod to be applied');
    expect(view(net)).toEqual(await baseline([...BASE, client2, moved]));
    expect(a.status().ready).toBe(true);
    expect(await metric(a, 'policyctl_quarantined_objects', { kind: 'Pod' })).toBe(0);
    expect(logs.some((l) => /quarantine of pod\/app\/victim lifted: it changed/.test(l.msg))).toBe(true);
  });

  it('a policy made to fail through the test hook: enforced fail-closed (isolates, allows nothing), reported; likewise on restart', async () => {
    const evil = policy('app', 'evil', sel({ app: 'db' }), { ingress: [rule([podsPeer('app', sel({ app: 'client' }))], ports(5432))] });
    const refuse = { iptables: (l: string) => l.includes('app/evil ingress[0]') };
    const logs: Log[] = [];
    const a = agent(new RefusingRunner(net.runner, refuse), new RecordSource([...BASE, evil]), logs);
    await a.start();
    // Without the policy app/db would not be isolated for ingress: the comparison is with the
    // policy in its fail-closed form, the same selector and types and no rules.
    const failClosed: PolicyRecord = { ...evil, ingress: [], egress: [] };
    const want = await baseline([...BASE, failClosed]);
    expect(view(net)).toEqual(want);
    expect(Object.values(want.chains).flat().some((l) => l.includes('isolated by app/deny,app/evil'))).toBe(true);
    const line = logs.find((l) => l['object'] === 'networkpolicy/app/evil')!;
    expect(line).toMatchObject({ field: 'spec.ingress[0]' });
    expect(line.msg).toMatch(/^the kernel refused networkpolicy\/app\/evil spec\.ingress\[0\] "-A PCTL-I-\S+ .*app\/evil ingress\[0\].*" \(iptables-restore: .*RULE_APPEND failed.*Error occurred at line: \d+\): quarantined, enforced fail-closed \(isolates the pods it selects, allows nothing\)/);
    expect(await metric(a, 'policyctl_quarantined_objects', { kind: 'NetworkPolicy' })).toBe(1);
    expect(a.status().reasons).toEqual([expect.stringMatching(/^quarantined networkpolicy\/app\/evil: the kernel refused spec\.ingress\[0\]/)]);

    await a.stop();
    const logs2: Log[] = [];
    const a2 = agent(new RefusingRunner(net.runner, refuse), new RecordSource([...BASE, evil]), logs2);
    await a2.start();
    expect(view(net)).toEqual(want);
    expect(logs2.some((l) => l['object'] === 'networkpolicy/app/evil')).toBe(true);
  });

  it('a manifest pod at 0.0.0.0: reported (by the loader or the kernel), and the node enforced as without it', async () => {
    const yaml = (extra: string) => `
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.244.2.10}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
${extra}`;
    const poison = `---
apiVersion: v1
kind: Pod
metadata: {name: poison, namespace: app, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Running, podIP: 0.0.0.0}
`;
    const withIt = join(dir, 'with');
    const without = join(dir, 'without');
    for (const [d, text] of [
      [withIt, yaml(poison)],
      [without, yaml('')],
    ] as const) {
      mkdirSync(d);
      writeFileSync(join(d, 'cluster.yaml'), text);
    }
    const logs: Log[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as Log) });
    const a = agent(net.runner, new FileSource({ dir: withIt, logger, pollMs: 60_000, settleMs: 10 }), logs);
    await a.start();
    const b = agent(base.runner, new FileSource({ dir: without, pollMs: 60_000, settleMs: 10 }));
    await b.start();
    expect(view(net)).toEqual(view(base));
    expect(view(net).chains['FORWARD']![0]).toContain('-j PCTL-FORWARD');
    // Reported with the object and the value: by the loader's validation, or by the containment.
    const told = logs.filter((l) => JSON.stringify(l).includes('poison') && JSON.stringify(l).includes('0.0.0.0'));
    expect(told.length).toBeGreaterThan(0);
  });
});
