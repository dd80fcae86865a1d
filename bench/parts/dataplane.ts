// Part 4, the dataplane: what policies cost the packets. In a real-kernel lab, two pods on one
// node (the bridge path, br_netfilter on) measure TCP connection rate and bulk throughput with
// no policy, then with the node's Ruleset of a 10k-pod / 2k-policy cluster loaded (250 local
// pods) and both pods isolated by policies that allow them to talk, then with 100
// ClusterNetworkPolicies added (bench/cnps.ts; the pods' namespace in team00, so the team's
// Admin policies select them as well as the cluster-wide ones). Also the number of rules a new
// connection traverses, counted by the tracer over the same rendered rules.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compile } from '../../src/compiler/compile.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import { createLab, destroyLab, execInPod, findPod } from '../../src/lab/lab.ts';
import type { LabState } from '../../src/lab/state.ts';
import type { NamespaceRecord, PodRecord, PolicyRecord } from '../../src/model/types.ts';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import { NFT } from '../../src/sync/backend.ts';
import { processRunner } from '../../src/sync/runner.ts';
import { Syncer } from '../../src/sync/syncer.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';
import { addClusterPolicies } from '../cnps.ts';
import { median, type BenchOptions, type BenchPart, type PartResult } from '../harness.ts';
import { generateCluster } from '../synthetic.ts';

export const NODE = 'node-001';
export const CRR_PORT = 5001;
const IPERF_PORT = 5201;
// Two free addresses of node-001's pod CIDR (its 250 pods hold .2 to .251), so that new
// connections meet the unknown-address checks (PCTL-programmed) as pod traffic does.
export const POD_CIDR = '10.244.1.0/24';
export const CLIENT_IP = '10.244.1.252';
export const SERVER_IP = '10.244.1.253';

/** The two lab pods and the policies that isolate them and let them talk. */
export function benchObjects(): { ns: NamespaceRecord; pods: PodRecord[]; policies: PolicyRecord[] } {
  const ns: NamespaceRecord = { kind: 'Namespace', uid: 'bench-ns', name: 'bench', labels: { 'kubernetes.io/metadata.name': 'bench' } };
  const pod = (name: string, ip: string, app: string): PodRecord => ({
    kind: 'Pod',
    uid: `bench-${name}`,
    namespace: 'bench',
    name,
    labels: { app },
    nodeName: NODE,
    ips: [ip],
    hostNetwork: false,
    phase: 'Running',
    ports: [
      { containerPort: CRR_PORT, name: 'crr', protocol: 'TCP' },
      { containerPort: IPERF_PORT, name: 'iperf', protocol: 'TCP' },
    ],
  });
  const sel = (app: string) => ({ requirements: [{ key: 'app', operator: 'In' as const, values: [app], origin: 'matchLabels' }] });
  const peer = (app: string) => ({ kind: 'pods' as const, namespaces: { kind: 'own' as const, name: 'bench' }, pods: sel(app) });
  const ports = [{ protocol: 'TCP' as const, port: 'crr' }, { protocol: 'TCP' as const, port: IPERF_PORT }];
  const policy = (name: string, app: string, type: 'Ingress' | 'Egress', other: string): PolicyRecord => ({
    kind: 'NetworkPolicy',
    uid: `bench-pol-${name}`,
    namespace: 'bench',
    name,
    podSelector: sel(app),
    policyTypes: [type],
    policyTypesDefaulted: false,
    ingress: type === 'Ingress' ? [{ peers: [peer(other)], ports }] : [],
    egress: type === 'Egress' ? [{ peers: [peer(other)], ports }] : [],
    ignored: [],
    issues: [],
  });
  return {
    ns,
    pods: [pod('client', CLIENT_IP, 'crr-client'), pod('server', SERVER_IP, 'crr-server')],
    policies: [policy('server-ingress', 'crr-server', 'Ingress', 'crr-client'), policy('client-egress', 'crr-client', 'Egress', 'crr-server')],
  };
}

function buildCrr(dir: string): string {
  const out = join(dir, 'crr');
  execFileSync('cc', ['-O2', '-pthread', '-o', out, join(import.meta.dirname, '..', 'tools', 'crr.c')]);
  return out;
}

function startInPod(lab: LabState, pod: string, argv: string[]): void {
  const child = spawn('ip', ['netns', 'exec', findPod(lab, pod).netns, ...argv], { detached: true, stdio: 'ignore' });
  child.unref();
}

async function waitListening(lab: LabState, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await execInPod(lab, 'bench/server', ['ss', '-ltn', `sport = :${port}`], { reject: false });
    if (r.stdout.includes(`:${port}`)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on port ${port} in bench/server`);
}

interface Sample {
  readonly rate: number;
  readonly gbps: number;
  readonly failures: number;
}

/** One connection-rate run and one throughput run between the two pods. */
async function sample(lab: LabState, crr: string, seconds: number): Promise<Sample> {
  const r = await execInPod(lab, 'bench/client', [crr, 'client', SERVER_IP, String(CRR_PORT), String(seconds), '2']);
  const j = JSON.parse(r.stdout) as { rate: number; failures: number };
  const t = await execInPod(lab, 'bench/client', ['iperf3', '-c', SERVER_IP, '-p', String(IPERF_PORT), '-t', String(seconds), '-J']);
  const ij = JSON.parse(t.stdout) as { end: { sum_received: { bits_per_second: number } } };
  // Let the closed connections' conntrack entries age a little between runs.
  await new Promise((res) => setTimeout(res, 1000));
  return { rate: j.rate, gbps: ij.end.sum_received.bits_per_second / 1e9, failures: j.failures };
}

/**
 * Runs without the Ruleset, with it, and with the Ruleset of the cluster with
 * ClusterNetworkPolicies, interleaved (without, with, with CNPs, without, ...), so a change in
 * the machine's load during the part affects every side alike.
 */
async function measure(lab: LabState, crr: string, syncer: Syncer, rs: Ruleset, rsCnp: Ruleset, o: BenchOptions): Promise<{ without: Sample; with: Sample; withCnp: Sample }> {
  const runs = o.quick ? 2 : 4;
  const seconds = o.quick ? 2 : 3;
  const a: Sample[] = [];
  const b: Sample[] = [];
  const c: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    await syncer.cleanup();
    o.progress(`dataplane: run ${i + 1}/${runs} without policies`);
    a.push(await sample(lab, crr, seconds));
    await syncer.sync(rs, { readKernel: true });
    o.progress(`dataplane: run ${i + 1}/${runs} with policies`);
    b.push(await sample(lab, crr, seconds));
    await syncer.sync(rsCnp, { readKernel: true });
    o.progress(`dataplane: run ${i + 1}/${runs} with policies and ClusterNetworkPolicies`);
    c.push(await sample(lab, crr, seconds));
  }
  const med = (xs: Sample[]): Sample => ({ rate: median(xs.map((x) => x.rate)), gbps: median(xs.map((x) => x.gbps)), failures: xs.reduce((n, x) => n + x.failures, 0) });
  return { without: med(a), with: med(b), withCnp: med(c) };
}

/** Rules of ours a new connection and an established packet of the bench flow traverse. */
function rulesWalked(rs: Ruleset): { ours: number; all: number; established: number } {
  const table = parseIptablesRestore(renderIptablesRestore(rs), { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true });
  const sets = parseIpsetRestore(renderIpsetRestore(rs.sets));
  const t = trace(table, sets, 'FORWARD', { src: CLIENT_IP, dst: SERVER_IP, protocol: 'tcp', dport: CRR_PORT, sport: 40000 });
  if (t.verdict !== 'ACCEPT') throw new Error(`the bench flow is not allowed by its own policies: ${t.reason}`);
  const established = trace(table, sets, 'FORWARD', { src: CLIENT_IP, dst: SERVER_IP, protocol: 'tcp', dport: CRR_PORT, sport: 40000, ctstate: 'ESTABLISHED' });
  return { ours: t.steps.filter((s) => s.chain.startsWith('PCTL-')).length, all: t.steps.length, established: established.steps.filter((s) => s.chain.startsWith('PCTL-')).length };
}

export const dataplanePart: BenchPart = {
  name: 'dataplane',
  title: 'Part 4: dataplane cost of 2k policies (real kernel, two pods on one node)',
  async run(o: BenchOptions): Promise<PartResult> {
    if (process.getuid?.() !== 0) return { tables: [], metrics: {}, notes: ['skipped: needs root (network namespaces)'] };
    const tmp = mkdtempSync(join(tmpdir(), 'pctl-bench-dp-'));
    const name = `bd${process.pid % 100000}`;
    try {
      const crr = buildCrr(tmp);
      o.progress('dataplane: generating the 10k-pod / 2k-policy cluster');
      const cluster = generateCluster({ pods: 10_000, policies: 2_000, seed: o.seed });
      const extra = benchObjects();
      for (const r of [extra.ns, ...extra.pods, ...extra.policies]) cluster.model.upsert(r);
      const rs = compile(cluster.model, NODE);
      // The same cluster with ClusterNetworkPolicies, the bench namespace in a team.
      addClusterPolicies(cluster);
      cluster.model.upsert({ ...extra.ns, labels: { ...extra.ns.labels, team: 'team00', env: 'prod' } });
      const rsCnp = compile(cluster.model, NODE);
      const cnpCount = [...cluster.model.allClusterPolicies()].length;

      // Rules a new connection walks, counted over the rendered text by the tracer.
      const walked = rulesWalked(rs);
      const walkedCnp = rulesWalked(rsCnp);
      const walkedShared = rulesWalked(compile(cluster.model, NODE, { tiers: { continuation: { Admin: 'dispatch' } } }));
      const ours = walked.ours;
      const oursEstablished = walked.established;

      o.progress('dataplane: building the lab');
      const lab = await createLab({
        name,
        clusterCIDR: '10.244.0.0/16',
        nodes: [{ name: NODE, podCIDR: POD_CIDR }],
        pods: [
          { namespace: 'bench', name: 'client', node: NODE, ip: CLIENT_IP },
          { namespace: 'bench', name: 'server', node: NODE, ip: SERVER_IP },
        ],
      });
      startInPod(lab, 'bench/server', [crr, 'server', String(CRR_PORT)]);
      startInPod(lab, 'bench/server', ['iperf3', '-s', '-p', String(IPERF_PORT)]);
      await waitListening(lab, CRR_PORT);
      await waitListening(lab, IPERF_PORT);
      await execInPod(lab, 'bench/client', ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);

      const syncer = new Syncer({ runner: processRunner(lab.nodes[0]!.netns), backend: { ...NFT, reason: 'bench' } });
      const m = await measure(lab, crr, syncer, rs, rsCnp, o);
      const without = m.without;
      const withP = m.with;
      const withC = m.withCnp;
      await destroyLab(lab);

      const connRatio = withP.rate / without.rate;
      const tputRatio = withP.gbps / without.gbps;
      const connRatioCnp = withC.rate / without.rate;
      const tputRatioCnp = withC.gbps / without.gbps;
      const rules = rs.chains.reduce((n, c) => n + c.rules.length, 0);
      const rulesCnp = rsCnp.chains.reduce((n, c) => n + c.rules.length, 0);
      return {
        tables: [
          {
            title: 'Two pods on one node, bridge path',
            columns: ['', 'TCP connections/s', 'throughput Gbit/s', 'failed connects'],
            rows: [
              ['no policy', Math.round(without.rate), +without.gbps.toFixed(2), without.failures],
              [`${rules} rules, ${rs.sets.length} sets (10k pods, 2k policies)`, Math.round(withP.rate), +withP.gbps.toFixed(2), withP.failures],
              ['ratio', +connRatio.toFixed(3), +tputRatio.toFixed(3), ''],
              [`${rulesCnp} rules, ${rsCnp.sets.length} sets (and ${cnpCount} ClusterNetworkPolicies)`, Math.round(withC.rate), +withC.gbps.toFixed(2), withC.failures],
              ['ratio', +connRatioCnp.toFixed(3), +tputRatioCnp.toFixed(3), ''],
            ],
            notes: [
              `a new connection traverses ${ours} of our rules (${walked.all} in all, flannel's and kube-proxy's included); an established packet traverses ${oursEstablished}`,
              `with the ClusterNetworkPolicies, a new connection traverses ${walkedCnp.ours} of our rules (${walkedCnp.all} in all); an established packet ${walkedCnp.established}; with shared Admin chains (--shared-admin-chains) ${walkedShared.ours}`,
              `medians of ${o.quick ? 2 : 4} interleaved runs each (without, with, without, with, ...); TCP connect+close by bench/tools/crr.c with 2 threads, bulk by iperf3 -t ${o.quick ? 2 : 3}`,
            ],
          },
        ],
        metrics: {
          conn_rate_ratio: +connRatio.toFixed(3),
          throughput_ratio: +tputRatio.toFixed(3),
          rules_per_new_connection: ours,
          conn_rate_no_policy: Math.round(without.rate),
          conn_rate_with_policies: Math.round(withP.rate),
          conn_rate_ratio_cnp100: +connRatioCnp.toFixed(3),
          throughput_ratio_cnp100: +tputRatioCnp.toFixed(3),
          rules_per_new_connection_cnp100: walkedCnp.ours,
          rules_per_new_connection_cnp100_shared: walkedShared.ours,
          conn_rate_with_cnp100: Math.round(withC.rate),
        },
        targets: [
          { metric: 'conn_rate_ratio', bound: 0.9, unit: '', relation: '>=', value: +connRatio.toFixed(3), met: connRatio >= 0.9 },
          { metric: 'throughput_ratio', bound: 0.97, unit: '', relation: '>=', value: +tputRatio.toFixed(3), met: tputRatio >= 0.97 },
          { metric: 'conn_rate_ratio_cnp100', bound: 0.9, unit: '', relation: '>=', value: +connRatioCnp.toFixed(3), met: connRatioCnp >= 0.9 },
        ],
      };
    } finally {
      await destroyLab(name).catch(() => {});
      rmSync(tmp, { recursive: true, force: true });
    }
  },
};
