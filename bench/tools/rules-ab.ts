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
//   node bench/tools/rules-ab.ts walk DIR/NAME          from NAME.ipt/.ips: NAME-walk (only the rules
//                                                      the bench flow's first packet walks: the same
//                                                      walk in a tiny Ruleset) and NAME-walk-nosets
//                                                      (that walk with each set match replaced by a
//                                                      native test of the same outcome): the price of
//                                                      the Ruleset's size and of its set lookups
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
import { median } from '../harness.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';

const ROUNDS = Number(process.env.AB_ROUNDS ?? 6);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`AB_ROUNDS must be a whole number of rounds, at least 1 (got ${JSON.stringify(process.env.AB_ROUNDS)})`);
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

/**
 * The rules the bench flow's first packet walks (the tracer's steps), alone: every chain it
 * enters with only the rules it tests there, a goto to a chain it never enters turned into a
 * drop (never taken: those rules do not match), and only the sets those rules use. `nosets`:
 * each set match replaced by what it answered, a native test of the same outcome (nothing when
 * it matched, `-f`, never true for these packets, when it did not).
 */
function walk(base: string): void {
  const ipt = readFileSync(`${base}.ipt`, 'utf8');
  const ips = readFileSync(`${base}.ips`, 'utf8');
  const table = parseIptablesRestore(ipt, { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true });
  const t = trace(table, parseIpsetRestore(ips), 'FORWARD', { src: CLIENT_IP, dst: SERVER_IP, protocol: 'tcp', dport: CRR_PORT, sport: 40000 });
  const ours = t.steps.filter((st) => st.chain.startsWith('PCTL-'));
  const walked = new Map(ours.map((st) => [st.line, st.matched]));
  const chains = new Set(ours.map((st) => st.chain));
  const write = (name: string, noSets: boolean) => {
    const used = new Set<string>();
    const out: string[] = [];
    ipt.split('\n').forEach((line, i) => {
      if (line.startsWith(':')) {
        if (chains.has(line.slice(1).split(' ')[0]!)) out.push(line);
        return;
      }
      if (!line.startsWith('-A ') && !line.startsWith('-I ')) return void out.push(line);
      const matched = walked.get(i + 1);
      if (matched === undefined && !line.endsWith('-j PCTL-FORWARD')) return; // the hook stays
      let r = line;
      if (noSets && matched !== undefined) {
        let first = true;
        r = r.replace(/ -m set (! )?--match-set \S+ \S+/g, () => (!matched && first ? ((first = false), ' -f') : ''));
      }
      for (const m of r.matchAll(/--match-set (\S+)/g)) used.add(m[1]!);
      const target = / -[gj] (PCTL-\S+)/.exec(r);
      out.push(target && !chains.has(target[1]!) ? r.replace(/ -[gj] PCTL-\S+/, ' -j DROP') : r);
    });
    writeFileSync(`${base}-${name}.ipt`, out.join('\n'));
    writeFileSync(`${base}-${name}.ips`, ips.split('\n').filter((l) => used.has(l.split(' ')[1] ?? '')).join('\n') + '\n');
    process.stderr.write(`${base}-${name}: ${walked.size} rules in ${chains.size} chains, ${used.size} sets\n`);
  };
  write('walk', false);
  write('walk-nosets', true);
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
else if (cmd === 'walk' && arg) walk(arg);
else if (cmd === 'run' && arg && rest.length > 0) await run(arg, rest);
else {
  process.stderr.write('usage: rules-ab.ts render DIR/NAME | synthetic DIR | walk DIR/NAME | run DIR NAME... (see the header)\n');
  process.exitCode = 2;
}
