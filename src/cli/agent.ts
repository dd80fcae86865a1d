// `policyctl agent`: wiring only. Logic lives in src/agent, src/sync and src/watchers.

import pino from 'pino';
import { Agent, agentCompileOptions } from '../agent/agent.ts';
import { CniServer } from '../agent/cni-server.ts';
import { parseCidr } from '../model/cidr.ts';
import { MIN_POD_CIDR_PREFIX } from '../model/normalize.ts';
import { DropLog } from '../agent/drop-log.ts';
import { serveHealth } from '../agent/health.ts';
import { PolicyCounters } from '../agent/policy-counters.ts';
import { readRuleCounters } from '../sync/rule-counters.ts';
import { Syncer } from '../sync/syncer.ts';
import { agentRunner } from '../sync/agent-runner.ts';
import { processRunner } from '../sync/runner.ts';
import { FileSource } from '../watchers/files.ts';
import { loadKubeConfig } from '../watchers/kube-client.ts';
import { KubeSource } from '../watchers/kube.ts';
import type { ModelSource } from '../watchers/source.ts';
import { CliError, EXIT, type Io } from './io.ts';
import { tuneV8ForAgent } from './v8-tuning.ts';
import { IdleCollector } from '../agent/idle-gc.ts';
import { errorText } from '../util/error-text.ts';
import { PROXY_MODES, type PortRange, type ProxyMode } from '../compiler/ruleset.ts';
import { detectProxyMode } from '../sync/proxy-mode.ts';

export interface AgentCliOptions {
  node?: string;
  manifests?: string;
  /** Watch the cluster; in-cluster service account unless `kubeconfig` is given. */
  kube?: boolean;
  kubeconfig?: string;
  context?: string;
  healthAddr?: string;
  resyncInterval: string;
  /** With --kube: the stale-watch bound (default 2m). */
  staleWatch?: string;
  dryRun?: boolean;
  cleanup?: boolean;
  statusFile?: string;
  /** Serve policyctl-cni on this unix socket. */
  cniSocket?: string;
  podCidr?: string[];
  revokeEstablished?: boolean;
  sharedAdminChains?: boolean;
  /** kube-proxy's mode: auto (detected), iptables, nftables or ipvs. */
  serviceProxy?: string;
  serviceCidr?: string[];
  nodePortRange?: string;
  setBridgeNf?: boolean;
  /** The verdict cache (default true; --no-verdict-cache). */
  verdictCache?: boolean;
  /** Read the drop log (default true; --no-drop-log). */
  dropLog?: boolean;
  dropLogInterval?: string;
  logLevel: string;
}

/** `500ms`, `10s`, `2m` -> milliseconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!m) throw new CliError(`${flag} must be a duration like 500ms, 10s or 2m, got ${JSON.stringify(text)}`, EXIT.usage);
  const n = Number(m[1]);
  return m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
}

export async function runAgent(o: AgentCliOptions, io: Io, makeSource?: (logger: pino.Logger) => ModelSource): Promise<number> {
  const logger = pino({ level: o.logLevel, base: { node: o.node } });
  const syncer = new Syncer({ runner: processRunner(), dryRun: !!o.dryRun, dropLog: o.dropLog !== false });
  if (o.cleanup) {
    const r = await syncer.cleanup();
    const p = r.plan;
    io.out(`removed ${p.deleteChains.length} chains, ${p.removeHooks.length} hooks and ${p.destroySets.length} ipsets of ours${o.dryRun ? ' (dry run: nothing written)' : ''}\n`);
    if (o.dryRun) io.out(r.payloads.ipsetBefore + r.payloads.iptables + r.payloads.ipsetAfter + r.payloads.gcIptables + r.payloads.gcIpset);
    return EXIT.ok;
  }
  if (!o.node) throw new CliError('--node is required (the name of this node, as in pods\' spec.nodeName)', EXIT.usage);
  const resyncMs = parseDuration(o.resyncInterval, '--resync-interval');
  const podCidrs = o.podCidr ?? [];
  for (const c of podCidrs) {
    try {
      const cidr = parseCidr(c);
      if (cidr.family !== 4) throw new Error('only IPv4 pod CIDRs are enforced');
      if (cidr.prefix < MIN_POD_CIDR_PREFIX) throw new Error(`a node's pod CIDR must be /${MIN_POD_CIDR_PREFIX} or narrower: every address in it would be taken for a pod's`);
    } catch (e) {
      throw new CliError(`--pod-cidr must be an IPv4 CIDR such as 10.244.1.0/24, got ${JSON.stringify(c)}: ${errorText(e)}`, EXIT.usage);
    }
  }
  const proxy = serviceProxyOptions(o);
  if (o.kube && o.manifests) throw new CliError('give --kube (the cluster) or --manifests DIR, not both', EXIT.usage);
  if (!o.kube && (o.kubeconfig !== undefined || o.context !== undefined)) throw new CliError('--kubeconfig and --context need --kube', EXIT.usage);
  let source: ModelSource;
  if (makeSource) source = makeSource(logger);
  else if (o.kube) source = kubeSource(o, o.node, logger, staleWatchMs(o.staleWatch ?? '2m'));
  // --dry-run is one pass: a file it cannot read is an error, not a wait (FileSourceOptions.once).
  else if (o.manifests) source = new FileSource({ dir: o.manifests, logger, ...(o.dryRun && { once: true }) });
  else throw new CliError('give --kube (watch the cluster) or --manifests DIR (a folder of manifests to enforce)', EXIT.usage);

  if (o.dryRun) {
    // One pass: print what would be written, then exit.
    await source.start();
    const { compile } = await import('../compiler/compile.ts');
    const mode = proxy.serviceProxy === 'auto' ? ((await detectProxyMode(syncer.runner)).mode ?? 'iptables') : proxy.serviceProxy;
    io.err(`service proxy: ${mode}${proxy.serviceProxy === 'auto' ? ' (detected)' : ''}\n`);
    const r = await syncer.sync(
      compile(
        source.model,
        o.node,
        agentCompileOptions({ podCidrs, sharedAdminChains: !!o.sharedAdminChains, revokeEstablished: !!o.revokeEstablished, verdictCache: o.verdictCache !== false, proxyMode: mode, serviceCidrs: proxy.serviceCidrs, nodePorts: proxy.nodePorts }),
      ),
    );
    await source.stop();
    io.out(`# would write (dry run)\n# ipset restore -exist\n${r.payloads.ipsetBefore}# iptables-restore --noflush\n${r.payloads.iptables}# ipset restore -exist\n${r.payloads.ipsetAfter}# then, garbage collection: iptables-restore --noflush\n${r.payloads.gcIptables}# ipset restore -exist\n${r.payloads.gcIpset}`);
    return EXIT.ok;
  }

  tuneV8ForAgent(); // the long-running agent only (not --dry-run, --cleanup)
  // V8's young generation collected while the agent is idle, off the next event's path.
  const idleWork = new IdleCollector();
  // The running agent writes small set payloads through one long-lived ipset process (most
  // events then start no process at all); see src/sync/ipset-session.ts.
  const runner = agentRunner();
  const agentSyncer = new Syncer({ runner, dropLog: o.dropLog !== false });
  const agent = new Agent({
    node: o.node,
    source,
    syncer: agentSyncer,
    logger,
    resyncMs,
    podCidrs,
    revokeEstablished: !!o.revokeEstablished,
    sharedAdminChains: !!o.sharedAdminChains,
    verdictCache: o.verdictCache !== false,
    idleWork,
    ...proxy,
    setBridgeNf: !!o.setBridgeNf,
    ...(o.statusFile ? { statusFile: o.statusFile } : {}),
  });
  // The drop log (issue 11): denied flows named by pods and policies, logged, at /drops, counted.
  const dropLog = o.dropLog === false ? undefined : new DropLog({ node: o.node, model: source.model, logger, metrics: agent.metrics, intervalMs: parseDuration(o.dropLogInterval ?? '10s', '--drop-log-interval') });
  // Packets allowed and denied per policy, from the kernel's rule counters, read at scrape time.
  const countersRunner = processRunner();
  new PolicyCounters(agent.metrics, async () => readRuleCounters(countersRunner, (await agentSyncer.backend()).save), logger);
  const server = o.healthAddr ? await serveHealth(agent, o.healthAddr, dropLog) : undefined;
  // The CNI socket answers from the start: an ADD that comes while the source is still listing
  // waits (within the plugin's timeout) instead of failing as if there were no agent.
  const cni = o.cniSocket ? new CniServer({ socketPath: o.cniSocket, node: o.node, source, agent, runner: processRunner(), logger }) : undefined;
  await cni?.listen();
  const stopped = new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      logger.info({ signal: sig }, 'stopping; rules stay in place so pods stay isolated (run `policyctl agent --cleanup` to remove them)');
      void Promise.all([cni?.close(), agent.stop(), dropLog?.stop()]).then(() => {
        runner.close();
        server?.close();
        resolve();
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await dropLog?.start();
  await agent.start();
  await stopped;
  return EXIT.ok;
}

/** `--service-proxy`, `--service-cidr`, `--node-port-range`, checked. */
export function serviceProxyOptions(o: Pick<AgentCliOptions, 'serviceProxy' | 'serviceCidr' | 'nodePortRange'>): { serviceProxy: ProxyMode | 'auto'; serviceCidrs: string[]; nodePorts: PortRange } {
  const mode = o.serviceProxy ?? 'auto';
  if (mode !== 'auto' && !(PROXY_MODES as readonly string[]).includes(mode)) throw new CliError(`--service-proxy must be auto, ${PROXY_MODES.join(', ')}; got ${JSON.stringify(mode)}`, EXIT.usage);
  const serviceCidrs = o.serviceCidr ?? [];
  for (const c of serviceCidrs) {
    try {
      if (parseCidr(c).family !== 4) throw new Error('only IPv4 is enforced');
    } catch (e) {
      throw new CliError(`--service-cidr must be an IPv4 CIDR such as 10.96.0.0/12, got ${JSON.stringify(c)}: ${errorText(e)}`, EXIT.usage);
    }
  }
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(o.nodePortRange ?? '30000-32767');
  const nodePorts = m ? { from: Number(m[1]), to: Number(m[2]) } : undefined;
  if (!nodePorts || nodePorts.from < 1 || nodePorts.from > nodePorts.to || nodePorts.to > 65535) throw new CliError(`--node-port-range must be FROM-TO such as 30000-32767, got ${JSON.stringify(o.nodePortRange)}`, EXIT.usage);
  return { serviceProxy: mode as ProxyMode | 'auto', serviceCidrs, nodePorts };
}

/**
 * `--stale-watch`: between 10 s (each watch's deadline is a quarter of it, and the API server
 * sends its bookmark 2 s before a deadline) and 2 minutes (past half of it, a minute, the API
 * server has missed both its minute bookmark and two deadline bookmarks: /readyz says so).
 */
function staleWatchMs(text: string): number {
  const ms = parseDuration(text, '--stale-watch');
  if (ms < 10_000 || ms > 120_000) throw new CliError(`--stale-watch must be between 10s and 2m, got ${JSON.stringify(text)}`, EXIT.usage);
  return ms;
}

/** The cluster as the agent's source: every Namespace, Pod, NetworkPolicy and ClusterNetworkPolicy, and this node's Node. */
export function kubeSource(o: Pick<AgentCliOptions, 'kubeconfig' | 'context'>, node: string, logger: pino.Logger, watchdogMs?: number): KubeSource {
  let kubeConfig;
  try {
    kubeConfig = loadKubeConfig({ inCluster: o.kubeconfig === undefined, ...(o.kubeconfig !== undefined ? { kubeconfig: o.kubeconfig } : {}), ...(o.context !== undefined ? { context: o.context } : {}) });
  } catch (e) {
    throw new CliError(errorText(e));
  }
  return new KubeSource({ kubeConfig, nodeName: node, logger, ...(watchdogMs !== undefined ? { watchdogMs } : {}) });
}
