// `policyctl lab ...`: argument handling and output for the real-kernel lab.

import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { clusterInfoFile, labUp, loadFolder, readClusterInfo, stopWatcher, waitApplied, watchLab, type ClusterInfo } from '../lab/cluster.ts';
import { destroyLab, listLabs, openLab } from '../lab/lab.ts';
import { probeMany, type ProbeRequest } from '../lab/probe.ts';
import type { LabState } from '../lab/state.ts';
import type { Protocol } from '../model/types.ts';
import { formatGrid, reachTable, type ReachResult } from '../semantics/reach.ts';
import { errorText } from '../util/error-text.ts';
import { getFromSocket, parseDropsBody, showDrops, type AgentDrops } from './drops.ts';
import { CliError, EXIT, type Io } from './io.ts';

export interface ProbeOutput {
  readonly results: ReachResult[];
  /** Declared ports that cannot be probed here (SCTP: this kernel has none). */
  readonly skipped: string[];
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new CliError('the lab creates network namespaces: run it as root (sudo)', EXIT.failure);
}

/** Probe every ordered pod pair on the given port, or on each port the destination declares. */
export async function probeLab(lab: LabState, port?: { port: number; protocol: Protocol }, timeoutMs = 1000): Promise<ProbeOutput> {
  const pods = [...lab.pods].sort((a, b) => (a.key < b.key ? -1 : 1));
  const requests: ProbeRequest[] = [];
  const skipped: string[] = [];
  for (const dst of pods) {
    const ports = port ? [port] : dst.ports;
    for (const p of ports) {
      if (p.protocol === 'SCTP') {
        skipped.push(`${dst.key} ${p.port}/SCTP (no SCTP in this kernel)`);
        continue;
      }
      for (const src of pods) requests.push({ from: src.key, to: { ip: dst.ip, port: p.port, protocol: p.protocol } });
    }
  }
  const byIp = new Map(pods.map((p) => [p.ip, p.key]));
  const raw = await probeMany(lab, requests, { timeoutMs });
  const results: ReachResult[] = raw.map((r) => ({ from: r.from as string, to: byIp.get(r.to.ip)!, port: r.to.port, protocol: r.to.protocol, allowed: r.allowed }));
  results.sort((a, b) => a.port - b.port || (a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0) || (a.from < b.from ? -1 : a.from > b.from ? 1 : 0) || (a.to < b.to ? -1 : a.to > b.to ? 1 : 0));
  return { results, skipped };
}

/** Cells where the kernel and the model disagree. */
export function compareWithModel(kernel: readonly ReachResult[], model: readonly ReachResult[]): string[] {
  const want = new Map(model.map((r) => [`${r.from}|${r.to}|${r.port}/${r.protocol}`, r.allowed]));
  const out: string[] = [];
  for (const r of kernel) {
    const w = want.get(`${r.from}|${r.to}|${r.port}/${r.protocol}`);
    if (w === undefined) out.push(`${r.from} -> ${r.to} ${r.port}/${r.protocol}: probed, but the model has no such pair`);
    else if (w !== r.allowed) out.push(`${r.from} -> ${r.to} ${r.port}/${r.protocol}: kernel ${r.allowed ? 'allowed' : 'denied'}, model says ${w ? 'allowed' : 'denied'}`);
  }
  return out;
}

function parsePortOpts(o: { port?: string; protocol: string }): { port: number; protocol: Protocol } | undefined {
  if (!o.port) return undefined;
  const port = Number(o.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new CliError(`--port must be a number from 1 to 65535, got ${JSON.stringify(o.port)}`, EXIT.usage);
  const protocol = o.protocol.toUpperCase();
  if (protocol !== 'TCP' && protocol !== 'UDP') throw new CliError(`--protocol must be TCP or UDP in the lab (this kernel has no SCTP), got ${JSON.stringify(o.protocol)}`, EXIT.usage);
  return { port, protocol };
}

async function probeCommand(io: Io, o: { name: string; stateDir?: string; port?: string; protocol: string; output: string; expect?: boolean; timeout: string }): Promise<number> {
  requireRoot();
  const lab = await openLab(o.name, o.stateDir ? { stateDir: o.stateDir } : {});
  const info = await readClusterInfo(lab);
  io.err(`waiting for lab ${lab.name} to apply ${info.manifests}...\n`);
  await waitApplied(lab, info, Number(o.timeout));
  const current = await openLab(o.name, o.stateDir ? { stateDir: o.stateDir } : {}); // pods may have changed
  const port = parsePortOpts(o);
  const out = await probeLab(current, port);
  for (const s of out.skipped) io.err(`skipped: ${s}\n`);
  if (o.output === 'json') io.out(JSON.stringify({ results: out.results }, null, 2) + '\n');
  else io.out(formatGrid(out.results, current.pods.map((p) => p.key).sort()));
  if (!o.expect) return EXIT.ok;
  const { model } = await loadFolder(info.manifests);
  const ports = [...new Map(out.results.map((r) => [`${r.port}/${r.protocol}`, { port: r.port, protocol: r.protocol }])).values()];
  const diffs = compareWithModel(out.results, reachTable(model, { ports }));
  if (diffs.length === 0) {
    io.err(`expect: all ${out.results.length} probes match the model\n`);
    return EXIT.ok;
  }
  io.err(`expect: ${diffs.length} of ${out.results.length} probes differ from the model:\n${diffs.map((d) => `  ${d}\n`).join('')}`);
  return EXIT.mismatch;
}

/** Every lab agent's /drops (`since`: only what changed after that sequence number, per node). */
export async function labAgentDrops(info: ClusterInfo, since: ReadonlyMap<string, number> = new Map()): Promise<AgentDrops[]> {
  return Promise.all(
    info.agents.map(async (a): Promise<AgentDrops> => {
      if (!a.healthSocket) return { node: a.node, drops: [], error: 'this lab was made before agents served /drops: recreate it (lab down, lab up)' };
      try {
        return parseDropsBody(a.node, await getFromSocket(a.healthSocket, `/drops?since=${since.get(a.node) ?? 0}`));
      } catch (e) {
        return { node: a.node, drops: [], error: `${a.healthSocket}: ${errorText(e)}` };
      }
    }),
  );
}

async function labDrops(io: Io, o: { name: string; stateDir?: string; namespace?: string; watch?: boolean; output: string }): Promise<number> {
  const lab = await openLab(o.name, o.stateDir ? { stateDir: o.stateDir } : {});
  const info = await readClusterInfo(lab);
  return showDrops(io, (since) => labAgentDrops(info, since), { output: o.output, ...(o.namespace !== undefined ? { namespace: o.namespace } : {}), ...(o.watch ? { watch: true } : {}) });
}

async function demo(io: Io, o: { name: string; keep?: boolean; stateDir?: string }): Promise<number> {
  requireRoot();
  const examples = join(import.meta.dirname, '..', '..', 'examples');
  const dir = await mkdtemp(join(tmpdir(), 'policyctl-demo-'));
  const log = (l: string) => io.err(`${l}\n`);
  try {
    await cp(join(examples, 'workloads'), join(dir, 'workloads'), { recursive: true });
    io.out(`Building a two-node flannel host-gw lab "${o.name}" from examples/workloads (namespaces, CNI bridge, servers, one agent per node)...\n`);
    const { lab } = await labUp({ name: o.name, manifests: dir, log, ...(o.stateDir ? { stateDir: o.stateDir } : {}) });
    const info = await readClusterInfo(lab);
    const show = async (title: string) => {
      await waitApplied(lab, info, 30_000);
      const { results } = await probeLab(lab);
      const { model } = await loadFolder(dir);
      const ports = [...new Map(results.map((r) => [`${r.port}/${r.protocol}`, { port: r.port, protocol: r.protocol }])).values()];
      const diffs = compareWithModel(results, reachTable(model, { ports }));
      io.out(`\n== ${title}: live truth table from real connections (rows: clients, columns: servers; . connected, X blocked)\n\n`);
      io.out(formatGrid(results, lab.pods.map((p) => p.key).sort()));
      io.out(diffs.length ? `\n${diffs.length} cells differ from policyctl reach:\n${diffs.join('\n')}\n` : `\nAll ${results.length} probes agree with \`policyctl reach\`.\n`);
      return diffs.length;
    };
    let bad = await show('Before: no NetworkPolicy');
    io.out(`\nCopying examples/policies into the watched folder ${dir}; the agents pick them up...\n`);
    await cp(join(examples, 'policies'), join(dir, 'policies'), { recursive: true });
    bad += await show('After: examples/policies applied');
    if (o.keep) io.out(`\nThe lab stays up: policyctl lab probe --name ${o.name}; edit ${dir}; policyctl lab down --name ${o.name}\n`);
    return bad ? EXIT.mismatch : EXIT.ok;
  } finally {
    if (!o.keep) {
      await down(o.name, o.stateDir).catch((e: unknown) => io.err(`cleanup failed: ${(e as Error).message}\n`));
      await rm(dir, { recursive: true, force: true });
    }
  }
}

async function down(name: string, stateDir?: string): Promise<string> {
  const lab = await openLab(name, stateDir ? { stateDir } : {}).catch(() => undefined);
  if (lab) {
    const info = await readClusterInfo(lab).catch(() => undefined);
    if (info) stopWatcher(info);
  }
  const r = await destroyLab(name, stateDir ? { stateDir } : {});
  return `${r.netns.length} namespaces, ${r.pids.length} processes${r.removedDir ? `, ${r.removedDir}` : ''}`;
}

export function labCommand(io: Io, setCode: (c: number) => void): Command {
  const lab = new Command('lab')
    .description('A flannel host-gw cluster on this machine, in network namespaces on the real kernel, enforced by policyctl agents (root only).')
    .addHelpText(
      'after',
      `
Examples:
  policyctl lab demo                                  # two nodes, examples/, truth table before and after
  policyctl lab up --name dev -f ./cluster            # Nodes, Pods (status.podIP), NetworkPolicies
  policyctl lab probe --name dev --expect             # real connections vs policyctl reach; exit 4 on a difference
  vi ./cluster/policies.yaml                          # the agents and the pod watcher follow the folder
  policyctl lab probe --name dev --port 80 -o json
  policyctl lab down --name dev
`,
    );
  const withName = (c: Command) => c.requiredOption('--name <name>', 'lab name ([a-z0-9-], at most 12 characters)').option('--state-dir <dir>', 'where lab state lives (default /run/policyctl-lab)');
  withName(
    lab
      .command('up')
      .description(
        "Build a lab from the Nodes, Namespaces, Pods and NetworkPolicies in a folder, start one agent per node, and return once they have applied it. Pods start in a cluster's order: CNI ADD through bridge, host-local and policyctl-cni (which returns once the node's agent enforces the pod), and the pod's IP reaches the agents only a status report later. The lab keeps following the folder.",
      )
      .requiredOption('-f, --filename <dir>', 'folder of manifests (watched while the lab runs)')
      .option('--status-delay <ms>', "delay between a pod's CNI ADD and its IP reaching the agents (kubelet's status report)", '500')
      .option('--cni-timeout <seconds>', "policyctl-cni's timeoutSeconds in the nodes' conflists", '10'),
  ).action(async (o) => {
    requireRoot();
    const statusDelayMs = Number(o.statusDelay);
    const cniTimeoutSeconds = Number(o.cniTimeout);
    if (!Number.isFinite(statusDelayMs) || statusDelayMs < 0) throw new CliError(`--status-delay must be a number of milliseconds, got ${JSON.stringify(o.statusDelay)}`, EXIT.usage);
    if (!Number.isFinite(cniTimeoutSeconds) || cniTimeoutSeconds <= 0) throw new CliError(`--cni-timeout must be a positive number of seconds, got ${JSON.stringify(o.cniTimeout)}`, EXIT.usage);
    const { lab: l, skipped } = await labUp({ name: o.name, manifests: o.filename, statusDelayMs, cniTimeoutSeconds, log: (x) => io.err(`${x}\n`), ...(o.stateDir ? { stateDir: o.stateDir } : {}) });
    for (const s of skipped) io.err(`skipped pod ${s}\n`);
    io.out(`lab ${l.name} is up: ${l.nodes.length} nodes, ${l.pods.length} pods; state in ${clusterInfoFile(l)}\n`);
    setCode(EXIT.ok);
  });
  withName(
    lab
      .command('probe')
      .description("Wait until every agent has applied the folder's current content, then connect every ordered pod pair from inside the client pod and print what the kernel did.")
      .option('--port <n>', 'port to probe (default: every TCP/UDP port each destination declares)')
      .option('--protocol <p>', 'TCP or UDP, with --port', 'TCP')
      .option('--expect', 'also compare with the model (policyctl reach) and exit 4 on any difference')
      .option('--timeout <ms>', 'bound on waiting for the agents', '30000')
      .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text')),
  ).action(async (o) => setCode(await probeCommand(io, o)));
  withName(
    lab
      .command('drops')
      .description("The denied flows the lab's agents recorded recently (their drop logs, /drops): grouped by destination pod, each with the policy and the reason.")
      .option('-n, --namespace <ns>', 'only flows from or to pods of this namespace')
      .option('--watch', 'keep printing new and updated flows (every second) until interrupted')
      .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text')),
  ).action(async (o) => setCode(await labDrops(io, o)));
  withName(lab.command('down').description('Remove everything the lab created: namespaces, processes, state.')).action(async (o) => {
    requireRoot();
    io.out(`lab ${o.name} removed: ${await down(o.name, o.stateDir)}\n`);
    setCode(EXIT.ok);
  });
  lab
    .command('list')
    .description('List labs on this machine.')
    .option('--state-dir <dir>', 'where lab state lives')
    .action(async (o) => {
      const labs = await listLabs(o.stateDir ? { stateDir: o.stateDir } : {});
      if (labs.length === 0) io.out('no labs\n');
      for (const l of labs) io.out(`${l.name}\t${l.status}\t${l.state ? `${l.state.nodes.length} nodes, ${l.state.pods.length} pods` : ''}\t${l.netns.length} namespaces\n`);
      setCode(EXIT.ok);
    });
  lab
    .command('demo')
    .description('Build a two-node lab from examples/workloads, print the live truth table, apply examples/policies, print it again, then remove the lab.')
    .option('--name <name>', 'lab name', 'demo')
    .option('--keep', 'leave the lab up afterwards')
    .option('--state-dir <dir>', 'where lab state lives')
    .action(async (o) => setCode(await demo(io, o)));
  withName(lab.command('watch', { hidden: true }).description('(internal) keep the lab pods in line with the folder')).action(async (o) => {
    const ac = new AbortController();
    process.once('SIGTERM', () => ac.abort());
    await watchLab(o.name, o.stateDir, (l) => io.err(`${new Date().toISOString()} ${l}\n`), ac.signal);
    setCode(EXIT.ok);
  });
  return lab;
}
