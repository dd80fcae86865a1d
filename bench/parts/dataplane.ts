// Part 4, the dataplane: what policies cost the packets. In a real-kernel lab, two pods on one
// node (the bridge path, br_netfilter on) measure TCP connection rate and bulk throughput with
// no policy, then with the node's Ruleset of a 10k-pod / 2k-policy cluster loaded (250 local
// pods) and both pods isolated by policies that allow them to talk, then with 100
// ClusterNetworkPolicies added (bench/cnps.ts; the pods' namespace in team00, so the team's
// Admin policies select them as well as the cluster-wide ones). The Rulesets are the agent's
// default layout, the verdict cache on (layout.ts VERDICT_CACHE_SET): the bench client opens its
// connections to one server and port, so after the first one they are allowed by the verdict the
// kernel remembered. What every connection would cost as a first one (a new client, server or
// port each time) is a side of its own: the same rules, the cache filled but never read.
// Also the number of rules a new connection traverses, counted by the tracer over the same
// rendered rules, for a first connection and for a repeated one.

import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compile } from '../../src/compiler/compile.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import { createLab, destroyLab, execInPod, findPod } from '../../src/lab/lab.ts';
import type { LabState } from '../../src/lab/state.ts';
import type { NamespaceRecord, PodRecord, PolicyRecord } from '../../src/model/types.ts';
import type { Rule, Ruleset } from '../../src/compiler/ruleset.ts';
import { VERDICT_CACHE_SET } from '../../src/compiler/layout.ts';
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

/** Connections per second (connect and close, 2 threads) from the client pod to the server pod. */
async function connRate(lab: LabState, crr: string, seconds: number): Promise<{ rate: number; failures: number }> {
  const r = await execInPod(lab, 'bench/client', [crr, 'client', SERVER_IP, String(CRR_PORT), String(seconds), '2']);
  return JSON.parse(r.stdout) as { rate: number; failures: number };
}

/** Bulk TCP throughput from the client pod to the server pod, Gbit/s. */
async function throughput(lab: LabState, seconds: number): Promise<number> {
  const t = await execInPod(lab, 'bench/client', ['iperf3', '-c', SERVER_IP, '-p', String(IPERF_PORT), '-t', String(seconds), '-J']);
  return (JSON.parse(t.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9;
}

/**
 * Empty the node's conntrack table before a run: a run leaves about 60k closed connections there
 * for 120 s (TIME_WAIT), and the table's bound (nf_conntrack_max, for the whole machine) is
 * reached after a few runs, from when on each new connection first evicts one. Without this the
 * first runs of a part met an emptier table than the later ones.
 */
export function emptyConntrack(netns: string): void {
  execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-F'], { stdio: 'ignore' });
}

/** After loading a Ruleset, before measuring: the kernel's deferred work of the load is done. */
const SETTLE_MS = 1000;

/**
 * Rounds of each pass. More for the connection rate: a 2 s run's rate moves by up to 15% on the
 * benchmark's VM from one run to the next, and the target (0.9) sits a few percent from what is
 * measured. Six for the throughput: with four, the median of runs whose rules an established
 * packet crosses once (the replies rule) came out at 0.966 against a target of 0.97.
 */
function roundsOf(o: BenchOptions): { readonly 'connection rate': number; readonly throughput: number } {
  return { 'connection rate': o.quick ? 2 : 10, throughput: o.quick ? 2 : 6 };
}

/** What the part reports of one side: medians, and each round's ratio to the run without policies of the same round. */
interface Side {
  readonly rate: number;
  /** NaN for a side without a throughput pass. */
  readonly gbps: number;
  readonly failures: number;
  /** Median over rounds of (this side's rate / the no-policy rate of that round). */
  readonly rateRatio: number;
  readonly gbpsRatio: number;
  readonly rateRatios: readonly number[];
}

/** One side of the comparison: its Ruleset (none: no rule of ours), and whether its throughput is measured. */
interface SideSpec {
  readonly label: string;
  readonly rs?: Ruleset;
  readonly throughput: boolean;
}

/**
 * Runs each side (the first without rules), interleaved in rounds, the order rotated each round
 * (a, b, c; b, c, a; ...), so the machine's drift (the no-policy rate alone moves by 10% between
 * runs on the benchmark's VM) and a position in the round affect every side alike. Each run
 * starts SETTLE_MS after its Ruleset was loaded (a load also empties the verdict cache, as any
 * write does). Connection rate and throughput are measured in passes of their own (a bulk run's
 * aftermath does not fall on a connection-rate run); the throughput pass leaves out the sides
 * that only differ in what new connections meet. A side's ratio is the median of its per-round
 * ratios to the run without policies of the same round.
 */
async function measure<K extends string>(lab: LabState, crr: string, syncer: Syncer, specs: Record<K, SideSpec>, o: BenchOptions): Promise<Record<K, Side>> {
  const rounds = roundsOf(o);
  const seconds = 2;
  const names = Object.keys(specs) as K[];
  const without = names.find((n) => !specs[n].rs);
  if (!without) throw new Error('the dataplane part needs a side without rules');
  const load = async (side: K) => {
    const rs = specs[side].rs;
    if (!rs) await syncer.cleanup();
    else await syncer.sync(rs, { readKernel: true });
    await new Promise((res) => setTimeout(res, SETTLE_MS));
    emptyConntrack(lab.nodes[0]!.netns);
  };
  const rate = Object.fromEntries(names.map((n) => [n, [] as { rate: number; failures: number }[]])) as Record<K, { rate: number; failures: number }[]>;
  const gbps = Object.fromEntries(names.map((n) => [n, [] as number[]])) as Record<K, number[]>;
  for (const pass of ['connection rate', 'throughput'] as const) {
    const sides = pass === 'throughput' ? names.filter((n) => specs[n].throughput) : names;
    for (let i = 0; i < rounds[pass]; i++) {
      for (let k = 0; k < sides.length; k++) {
        const side = sides[(i + k) % sides.length]!;
        await load(side);
        o.progress(`dataplane: ${pass}, round ${i + 1}/${rounds[pass]}, ${specs[side].label}`);
        if (pass === 'connection rate') rate[side].push(await connRate(lab, crr, seconds));
        else gbps[side].push(await throughput(lab, seconds));
      }
    }
  }
  const side = (s: K): Side => {
    const rateRatios = rate[s].map((x, i) => x.rate / rate[without][i]!.rate);
    return {
      rate: median(rate[s].map((x) => x.rate)),
      gbps: gbps[s].length ? median(gbps[s]) : NaN,
      failures: rate[s].reduce((n, x) => n + x.failures, 0),
      rateRatio: median(rateRatios),
      gbpsRatio: gbps[s].length ? median(gbps[s].map((x, i) => x / gbps[without][i]!)) : NaN,
      rateRatios,
    };
  };
  return Object.fromEntries(names.map((n) => [n, side(n)])) as Record<K, Side>;
}

/**
 * Rules of ours a new connection of the bench flow traverses (the first one; `repeated`: the
 * next one, which meets what the first left in the verdict cache), and an established packet.
 */
function rulesWalked(rs: Ruleset): { ours: number; all: number; repeated: number; established: number } {
  const table = parseIptablesRestore(renderIptablesRestore(rs), { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true });
  const sets = parseIpsetRestore(renderIpsetRestore(rs.sets));
  const syn = { src: CLIENT_IP, dst: SERVER_IP, protocol: 'tcp' as const, dport: CRR_PORT, sport: 40000 };
  const t = trace(table, sets, 'FORWARD', syn, { setTargets: true });
  if (t.verdict !== 'ACCEPT') throw new Error(`the bench flow is not allowed by its own policies: ${t.reason}`);
  const again = trace(table, sets, 'FORWARD', { ...syn, sport: 40001 }, { setTargets: true });
  const established = trace(table, sets, 'FORWARD', { ...syn, ctstate: 'ESTABLISHED' });
  const ours = (x: typeof t) => x.steps.filter((s) => s.chain.startsWith('PCTL-')).length;
  return { ours: ours(t), all: t.steps.length, repeated: ours(again), established: ours(established) };
}

/** The agent's default layout (src/cli/agent.ts): the verdict cache on. */
const AGENT_DEFAULT = { verdictCache: true } as const;

/**
 * The same Ruleset with the verdict cache filled but never read: every connection walks the
 * rules and is remembered, as a first connection is (a new client, server or port each time).
 */
function everyConnectionFirst(rs: Ruleset): Ruleset {
  const unread = `${VERDICT_CACHE_SET}-w`;
  const rewrite = (r: Rule): Rule => (r.action.kind === 'remember' ? { ...r, action: { ...r.action, set: unread } } : r);
  const cache = rs.sets.find((s) => s.name === VERDICT_CACHE_SET);
  if (!cache) throw new Error('the dataplane Ruleset has no verdict cache');
  return { ...rs, sets: [...rs.sets, { ...cache, name: unread }].sort((a, b) => (a.name < b.name ? -1 : 1)), chains: rs.chains.map((c) => ({ ...c, rules: c.rules.map(rewrite) })) };
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
      const rs = compile(cluster.model, NODE, AGENT_DEFAULT);
      // The same cluster with ClusterNetworkPolicies, the bench namespace in a team.
      addClusterPolicies(cluster);
      cluster.model.upsert({ ...extra.ns, labels: { ...extra.ns.labels, team: 'team00', env: 'prod' } });
      const rsCnp = compile(cluster.model, NODE, AGENT_DEFAULT);
      const cnpCount = [...cluster.model.allClusterPolicies()].length;

      // Rules a new connection walks, counted over the rendered text by the tracer.
      const walked = rulesWalked(rs);
      const walkedCnp = rulesWalked(rsCnp);
      const walkedShared = rulesWalked(compile(cluster.model, NODE, { ...AGENT_DEFAULT, tiers: { continuation: { Admin: 'dispatch' } } }));

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
      const m = await measure(
        lab,
        crr,
        syncer,
        {
          without: { label: 'without policies', throughput: true },
          with: { label: 'with policies', rs, throughput: true },
          withCnp: { label: 'with policies and ClusterNetworkPolicies', rs: rsCnp, throughput: true },
          firstCnp: { label: 'with policies and ClusterNetworkPolicies, every connection a first one', rs: everyConnectionFirst(rsCnp), throughput: false },
        },
        o,
      );
      syncer.dispose();
      const { without, with: withP, withCnp: withC, firstCnp } = m;
      await destroyLab(lab);

      const connRatio = withP.rateRatio;
      const tputRatio = withP.gbpsRatio;
      const connRatioCnp = withC.rateRatio;
      const tputRatioCnp = withC.gbpsRatio;
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
              ['the same, every connection a first one (walks every rule)', Math.round(firstCnp.rate), '', firstCnp.failures],
              ['ratio', +firstCnp.rateRatio.toFixed(3), '', ''],
            ],
            notes: [
              `the agent's default layout, the verdict cache on: a first connection of a client, server and port traverses ${walked.ours} of our rules (${walked.all} in all, flannel's and kube-proxy's included), a repeated one ${walked.repeated}; an established packet traverses ${walked.established}`,
              `with the ClusterNetworkPolicies, a first connection traverses ${walkedCnp.ours} of our rules (${walkedCnp.all} in all), a repeated one ${walkedCnp.repeated}; an established packet ${walkedCnp.established}; with shared Admin chains (--shared-admin-chains) a first one ${walkedShared.ours}`,
              `${roundsOf(o)['connection rate']} rounds of the four sides for the connection rate and ${roundsOf(o).throughput} of the first three for the throughput, the order rotated each round, each run ${SETTLE_MS / 1000} s after its rules were loaded, from an empty conntrack table and verdict cache; rates are medians, ratios the medians of each round's ratio to that round's run without policies (connection rate per round, with policies: ${withP.rateRatios.map((r) => r.toFixed(3)).join(' ')}; with ClusterNetworkPolicies: ${withC.rateRatios.map((r) => r.toFixed(3)).join(' ')}; every connection a first one: ${firstCnp.rateRatios.map((r) => r.toFixed(3)).join(' ')}); TCP connect+close by bench/tools/crr.c with 2 threads for 2 s, one server and port, bulk by iperf3 -t 2, in passes of their own`,
            ],
          },
        ],
        metrics: {
          conn_rate_ratio: +connRatio.toFixed(3),
          throughput_ratio: +tputRatio.toFixed(3),
          rules_per_new_connection: walked.ours,
          rules_per_repeated_connection: walked.repeated,
          conn_rate_no_policy: Math.round(without.rate),
          conn_rate_with_policies: Math.round(withP.rate),
          conn_rate_ratio_cnp100: +connRatioCnp.toFixed(3),
          conn_rate_ratio_cnp100_first_connections: +firstCnp.rateRatio.toFixed(3),
          throughput_ratio_cnp100: +tputRatioCnp.toFixed(3),
          rules_per_new_connection_cnp100: walkedCnp.ours,
          rules_per_repeated_connection_cnp100: walkedCnp.repeated,
          rules_per_new_connection_cnp100_shared: walkedShared.ours,
          conn_rate_with_cnp100: Math.round(withC.rate),
        },
        targets: [
          // Four digits: with three, a ratio of 0.9696 read "0.97 >= 0.97: NO".
          { metric: 'conn_rate_ratio', bound: 0.9, unit: '', relation: '>=', value: +connRatio.toFixed(4), met: connRatio >= 0.9 },
          { metric: 'throughput_ratio', bound: 0.97, unit: '', relation: '>=', value: +tputRatio.toFixed(4), met: tputRatio >= 0.97 },
          { metric: 'conn_rate_ratio_cnp100', bound: 0.9, unit: '', relation: '>=', value: +connRatioCnp.toFixed(4), met: connRatioCnp >= 0.9 },
        ],
      };
    } finally {
      await destroyLab(name).catch(() => {});
      rmSync(tmp, { recursive: true, force: true });
    }
  },
};
