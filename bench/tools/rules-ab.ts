// An interleaved A/B of what rendered rules cost a new connection, in the dataplane part's lab
// (bench/parts/dataplane.ts: two pods on one node, the bridge path, flannel's and kube-proxy's
// rules). The part itself compares no policy with one build's Rulesets; this compares Rulesets
// of different builds (or hand-written rules) in one run, loaded in turn, so that the machine's
// drift between runs (the no-policy rate alone varies by about 10%) does not decide the answer.
//
//   node bench/tools/rules-ab.ts render DIR/NAME       this checkout's dataplane Rulesets:
//                                                      NAME.ipt/.ips, NAME-cnp.ipt/.ips (100 CNPs),
//                                                      NAME-cnp-shared.ipt/.ips (the same,
//                                                      --shared-admin-chains)
//   node bench/tools/rules-ab.ts synthetic DIR         hand-written: hook (the hook and its replies
//                                                      rule), native30 (30 address compares more),
//                                                      set30 (30 set lookups instead), goto30 (the
//                                                      30 compares in 10 chains reached by goto)
//   node bench/tools/rules-ab.ts run DIR NAME...        as root: `none` (no rule of ours) and each
//                                                      NAME in turn (rotated each round, each run
//                                                      from an empty conntrack table), 6 rounds (AB_ROUNDS=N for more)
//                                                      of 2 s; a ratio is the median of each round's
//                                                      ratio to that round's run without rules
//
// Run `render` in two checkouts (a git worktree of the older commit) into one DIR to compare them.
// bench/RESULTS-2026-11-30.md (last section) holds figures it produced.

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { compile } from '../../src/compiler/compile.ts';
import { createLab, destroyLab, execInPod, findPod } from '../../src/lab/lab.ts';
import { NFT } from '../../src/sync/backend.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import { processRunner } from '../../src/sync/runner.ts';
import { Syncer } from '../../src/sync/syncer.ts';
import { addClusterPolicies } from '../cnps.ts';
import { benchObjects, CLIENT_IP, CRR_PORT, emptyConntrack, NODE, POD_CIDR, SERVER_IP } from '../parts/dataplane.ts';
import { generateCluster } from '../synthetic.ts';

const ROUNDS = Number(process.env.AB_ROUNDS ?? 6);
const SECONDS = 2;

function render(out: string): void {
  mkdirSync(dirname(out), { recursive: true });
  const cluster = generateCluster({ pods: 10_000, policies: 2_000, seed: 1 });
  const extra = benchObjects();
  for (const r of [extra.ns, ...extra.pods, ...extra.policies]) cluster.model.upsert(r);
  let rs = compile(cluster.model, NODE);
  writeFileSync(`${out}.ipt`, renderIptablesRestore(rs));
  writeFileSync(`${out}.ips`, renderIpsetRestore(rs.sets));
  addClusterPolicies(cluster);
  cluster.model.upsert({ ...extra.ns, labels: { ...extra.ns.labels, team: 'team00', env: 'prod' } });
  rs = compile(cluster.model, NODE);
  writeFileSync(`${out}-cnp.ipt`, renderIptablesRestore(rs));
  writeFileSync(`${out}-cnp.ips`, renderIpsetRestore(rs.sets));
  rs = compile(cluster.model, NODE, { tiers: { continuation: { Admin: 'dispatch' } } });
  writeFileSync(`${out}-cnp-shared.ipt`, renderIptablesRestore(rs));
  writeFileSync(`${out}-cnp-shared.ips`, renderIpsetRestore(rs.sets));
}

function synthetic(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const head = ['*filter', ':PCTL-FORWARD - [0:0]', '-A PCTL-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN'];
  const tail = ['-I FORWARD 1 -j PCTL-FORWARD', 'COMMIT', ''];
  const n = Array.from({ length: 30 }, (_, i) => i + 1);
  writeFileSync(join(dir, 'hook.ipt'), [...head, ...tail].join('\n'));
  writeFileSync(join(dir, 'hook.ips'), '');
  writeFileSync(join(dir, 'native30.ipt'), [...head, ...n.map((i) => `-A PCTL-FORWARD -s 10.8.0.${i}/32 -j DROP`), ...tail].join('\n'));
  writeFileSync(join(dir, 'native30.ips'), '');
  // The same 30 compares, in 10 chains reached by goto: what a chain transition adds.
  const chains = Array.from({ length: 10 }, (_, k) => k);
  const gotos = chains.flatMap((k) => [
    ...[1, 2].map((i) => `-A PCTL-AB${k} -s 10.8.${k}.${i}/32 -j DROP`),
    ...(k < 9 ? [`-A PCTL-AB${k} -g PCTL-AB${k + 1}`] : []),
  ]);
  writeFileSync(join(dir, 'goto30.ipt'), [head[0], head[1], ...chains.map((k) => `:PCTL-AB${k} - [0:0]`), head[2], '-A PCTL-FORWARD -j PCTL-AB0', ...gotos, ...tail].join('\n'));
  writeFileSync(join(dir, 'goto30.ips'), '');
  writeFileSync(join(dir, 'set30.ipt'), [...head, ...n.map((i) => `-A PCTL-FORWARD -m set --match-set AB${i % 3} src -j DROP`), ...tail].join('\n'));
  writeFileSync(join(dir, 'set30.ips'), 'create AB0 hash:ip\ncreate AB1 hash:ip\ncreate AB2 hash:ip\nadd AB0 10.7.0.1\n');
}

async function run(dir: string, names: readonly string[]): Promise<void> {
  const crr = join(dir, 'crr');
  execFileSync('cc', ['-O2', '-pthread', '-o', crr, join(import.meta.dirname, 'crr.c')]);
  const lab = await createLab({
    name: `ab${process.pid % 1000}`,
    clusterCIDR: '10.244.0.0/16',
    nodes: [{ name: NODE, podCIDR: POD_CIDR }],
    pods: [
      { namespace: 'bench', name: 'client', node: NODE, ip: CLIENT_IP },
      { namespace: 'bench', name: 'server', node: NODE, ip: SERVER_IP },
    ],
  });
  try {
    const netns = lab.nodes[0]!.netns;
    spawn('ip', ['netns', 'exec', findPod(lab, 'bench/server').netns, crr, 'server', String(CRR_PORT)], { detached: true, stdio: 'ignore' }).unref();
    await new Promise((r) => setTimeout(r, 500));
    await execInPod(lab, 'bench/client', ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65000']);
    const syncer = new Syncer({ runner: processRunner(netns), backend: { ...NFT, reason: 'bench' } });
    const configs = ['none', ...names];
    const rates: Record<string, number[]> = {};
    for (let round = 0; round < ROUNDS; round++) {
      // The order rotated each round, each run from an empty conntrack table (as the dataplane part).
      for (const c of configs.map((_, k) => configs[(round + k) % configs.length]!)) {
        await syncer.cleanup();
        if (c !== 'none') {
          execFileSync('ip', ['netns', 'exec', netns, 'ipset', 'restore', '-exist'], { input: readFileSync(join(dir, `${c}.ips`)) });
          execFileSync('ip', ['netns', 'exec', netns, 'iptables-nft-restore', '--noflush'], { input: readFileSync(join(dir, `${c}.ipt`)) });
        }
        await new Promise((r) => setTimeout(r, 500));
        emptyConntrack(netns);
        const r = await execInPod(lab, 'bench/client', [crr, 'client', SERVER_IP, String(CRR_PORT), String(SECONDS), '2']);
        (rates[c] ??= []).push((JSON.parse(r.stdout) as { rate: number }).rate);
        process.stderr.write(`  round ${round + 1}/${ROUNDS} ${c}: ${rates[c]!.at(-1)!.toFixed(0)} connections/s\n`);
      }
    }
    await syncer.cleanup();
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    // Ratio: the median of each round's ratio to that round's run without rules (as the dataplane
    // part reports it), so that the machine's drift between rounds cancels out.
    for (const c of configs) {
      const paired = median(rates[c]!.map((x, i) => x / rates.none![i]!));
      console.log(`${c.padEnd(12)} median ${median(rates[c]!).toFixed(0).padStart(6)}  ratio ${paired.toFixed(3)}  runs ${rates[c]!.map((x) => x.toFixed(0)).join(' ')}`);
    }
  } finally {
    await destroyLab(lab);
  }
}

const [cmd, arg, ...rest] = process.argv.slice(2);
if (cmd === 'render' && arg) render(arg);
else if (cmd === 'synthetic' && arg) synthetic(arg);
else if (cmd === 'run' && arg && rest.length > 0) await run(arg, rest);
else {
  process.stderr.write('usage: rules-ab.ts render DIR/NAME | synthetic DIR | run DIR NAME... (see the header)\n');
  process.exitCode = 2;
}
