// policyctl: argument parsing and output only; the meaning lives in src/semantics and
// src/compiler, loading in src/manifests.

import { Command, CommanderError, Option } from 'commander';
import { compile } from '../compiler/compile.ts';
import { VERDICT_CACHE_TIMEOUT_S } from '../compiler/layout.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import { escapeJson, escapeLine, printable } from '../model/issues.ts';
import type { Protocol } from '../model/types.ts';
import { explainPod, type FlowQuery } from '../semantics/explain.ts';
import { declaredPorts, enforceablePodsSorted, formatGrid, reachTable } from '../semantics/reach.ts';
import { podKey } from '../semantics/evaluate.ts';
import { runAgent, serviceProxyOptions } from './agent.ts';
import { agentCompileOptions } from '../agent/agent.ts';
import { labCommand } from './lab.ts';
import { formatExplain } from './explain-text.ts';
import { formatCsv, formatDot, formatMarkdown } from './reach-formats.ts';
import { CliError, EXIT, processIo, type Io } from './io.ts';
import { findPod, parseEndpoint, parsePodRef } from './refs.ts';
import { loadSource, type SourceOptions } from './source.ts';
import { errorText } from '../util/error-text.ts';

const HELP_FOOTER = `
Objects are read from the cluster, or from manifests with -f.
- Cluster (no -f): every Namespace, Node, Pod, NetworkPolicy and (where their CRD is
  installed) ClusterNetworkPolicy is listed once through the kubeconfig: --kubeconfig PATH,
  else KUBECONFIG, else ~/.kube/config (--context picks a context). The same objects as files
  give the same output.
- Manifests: -f takes files, folders (read recursively) or - for standard input; YAML or
  JSON, several documents per file, and List objects as printed by
  \`kubectl get pods,namespaces,networkpolicies,nodes -A -o yaml\`. ClusterNetworkPolicies
  (policy.networking.k8s.io/v1alpha2, Admin and Baseline tiers) are read from manifests and
  from the cluster; explain prints the tiers each direction went through.

Names are kubectl-style: pod/NAMESPACE/NAME, or pod/NAME with -n NAMESPACE.

Exit codes:
  0  success
  1  the command failed (object not found, file unreadable, kernel command failed)
  2  bad flags or arguments
  3  --strict and some manifest object was invalid (the others were still used)
  4  a check found a difference (lab probe --expect)

Examples:
  policyctl reach --port 80
  policyctl explain pod/shop/db --context prod --from pod/shop/api
  policyctl explain pod/x/a -f cluster.yaml
  policyctl explain -n x a -f manifests/ --from pod/y/b --port 80
  policyctl reach -f manifests/ --port 80 --protocol TCP
  policyctl reach -f manifests/ -o json | jq '.results[] | select(.allowed == false)'
  policyctl reach -f manifests/ -o dot | dot -Tsvg > reach.svg
  policyctl compile -f manifests/ --node node-1 -o restore
`;

function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new CliError(`--port must be a number from 1 to 65535, got ${JSON.stringify(v)}`, EXIT.usage);
  return n;
}

function parseProtocol(v: string): Protocol {
  const p = v.toUpperCase();
  if (p !== 'TCP' && p !== 'UDP' && p !== 'SCTP') throw new CliError(`--protocol must be TCP, UDP or SCTP, got ${JSON.stringify(v)}`, EXIT.usage);
  return p;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** JSON output, with the characters JSON leaves raw (U+2028, bidi controls) escaped too. */
const jsonOut = (v: unknown): string => escapeJson(JSON.stringify(v, null, 2)) + '\n';

function sourceOptions(cmd: Command): SourceOptions {
  const o = cmd.optsWithGlobals();
  return {
    files: o.filename ?? [],
    strict: !!o.strict,
    ...(o.kubeconfig !== undefined ? { kubeconfig: o.kubeconfig as string } : {}),
    ...(o.context !== undefined ? { context: o.context as string } : {}),
  };
}

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  let code: number = EXIT.ok;
  const program = new Command('policyctl')
    .description('Explain, simulate and compile Kubernetes NetworkPolicies (iptables + ipset, flannel host-gw).')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .addHelpText('after', HELP_FOOTER);

  const withSource = (c: Command) =>
    c
      .option('-f, --filename <path>', 'manifest file, folder or - (repeatable); without it, objects come from the cluster', collect)
      .option('--kubeconfig <path>', 'kubeconfig of the cluster to read (default: KUBECONFIG, then ~/.kube/config)')
      .option('--context <name>', 'kubeconfig context to use (default: its current-context)')
      .option('--strict', 'exit 3 when any object read is invalid', false);

  withSource(
    program
      .command('explain')
      .description("Show a pod's isolation: which policies select it, requirement by requirement, and what each rule allows; with --from/--to, whether a flow is allowed and why.")
      .argument('<pod>', 'pod/NAMESPACE/NAME, or pod/NAME with -n')
      .option('-n, --namespace <ns>', 'namespace for a pod given without one', 'default')
      .option('--from <peer>', 'ingress flow from this pod (or IPv4 address) to the pod')
      .option('--to <peer>', 'egress flow from the pod to this pod (or IPv4 address)')
      .option('--port <n>', 'port of the flow (default: every port the destination declares)')
      .addOption(new Option('--protocol <p>', 'protocol of the flow').default('TCP'))
      .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text')),
  ).action(async (podArg: string, o, cmd: Command) => {
    const src = await loadSource(sourceOptions(cmd), io);
    const model = src.model;
    const pod = findPod(model, parsePodRef(podArg, o.namespace));
    if (o.from && o.to) throw new CliError('give --from or --to, not both', EXIT.usage);
    let query: FlowQuery | undefined;
    const peerText: string | undefined = o.from ?? o.to;
    if (peerText) {
      const peer = parseEndpoint(model, peerText, o.namespace);
      const direction = o.from ? 'ingress' : 'egress';
      const dst = direction === 'ingress' ? pod : peer.kind === 'pod' ? peer.pod : undefined;
      let ports: FlowQuery['ports'];
      if (o.port) ports = [{ port: parsePort(o.port), protocol: parseProtocol(o.protocol) }];
      else {
        ports = dst ? declaredPorts(dst) : [];
        if (ports.length === 0) throw new CliError(`${dst ? `pod/${podKey(dst)} declares no container ports` : 'the destination is an IP address'}: give --port`, EXIT.usage);
      }
      query = { peer, direction, ports };
    } else if (o.port) {
      throw new CliError('--port needs --from or --to', EXIT.usage);
    }
    const report = explainPod(model, pod, query);
    io.out(o.output === 'json' ? jsonOut(report) : formatExplain(report));
    code = src.errors > 0 && o.strict ? EXIT.invalidInput : EXIT.ok;
  });

  withSource(
    program
      .command('reach')
      .description('Print the truth table over every ordered pair of enforceable pods: a grid (rows: clients, columns: servers; . allowed, X denied, - port not declared), JSON, a Graphviz graph, CSV or a markdown table.')
      .option('--port <n>', 'port to evaluate (default: every port each destination declares)')
      .addOption(new Option('--protocol <p>', 'protocol, with --port').default('TCP'))
      .option('-n, --namespace <ns>', 'only pods of these namespaces (repeatable)', collect)
      .option('-A, --all-namespaces', 'pods of every namespace (the default without -n)')
      .addOption(new Option('-o, --output <format>', 'output format (see Output formats below)').choices(['text', 'json', 'dot', 'csv', 'md']).default('text'))
      .addHelpText(
        'after',
        `
Output formats:
  text  the grid: rows clients, columns servers; . allowed, X denied, - port not declared
  json  {"results":[{"from":"NS/POD","to":"NS/POD","port":80,"protocol":"TCP","allowed":true}, ...]}
        one entry per ordered pair (a pod to itself included) and port
  dot   a Graphviz graph: namespaces as clusters, pods as nodes, one edge per pair of pods
        with an allowed port, labelled with every allowed port/protocol (a pod to itself left out)
  csv   the json entries as records: from,to,port,protocol,allowed (header first)
  md    a markdown table: rows clients, columns servers, each cell the ports evaluated,
        denied ones struck through

Examples:
  policyctl reach -f manifests/ -o dot | dot -Tsvg > reach.svg
  policyctl reach -f manifests/ -n shop --port 5432 -o md
  policyctl reach -f manifests/ -o csv > reach.csv
`,
      ),
  ).action(async (o, cmd: Command) => {
    if (o.allNamespaces && o.namespace) throw new CliError('give -n NAMESPACE or -A (all namespaces), not both', EXIT.usage);
    const src = await loadSource(sourceOptions(cmd), io);
    const model = src.model;
    const ports = o.port ? [{ port: parsePort(o.port), protocol: parseProtocol(o.protocol) }] : undefined;
    const results = reachTable(model, { ...(ports ? { ports } : {}), ...(o.namespace ? { namespaces: o.namespace } : {}) });
    const pods = enforceablePodsSorted(model, o.namespace);
    if (o.output === 'json') io.out(jsonOut({ results }));
    else if (o.output === 'csv') io.out(formatCsv(results));
    // The graph and the table are written even with no pod (an empty graph renders).
    else if (o.output === 'dot') io.out(formatDot(results, pods));
    else if (o.output === 'md') io.out(formatMarkdown(results, pods));
    else io.out(pods.length ? formatGrid(results, pods.map(podKey)) : 'no enforceable pods (pods need an IP, no hostNetwork, not Succeeded/Failed)\n');
    code = src.errors > 0 && o.strict ? EXIT.invalidInput : EXIT.ok;
  });

  withSource(
    program
      .command('compile')
      .description('Print the ipset and iptables payloads the agent would apply on a node.')
      .requiredOption('--node <name>', 'node to compile for (pods with spec.nodeName equal to it are local)')
      .addOption(new Option('-o, --output <format>', 'output format').choices(['restore', 'json']).default('restore'))
      .addOption(new Option('--service-proxy <mode>', "kube-proxy's mode on the node (ipvs adds PCTL-OUTPUT and its hook)").choices(['iptables', 'nftables', 'ipvs']).default('iptables'))
      .option('--service-cidr <cidr>', 'under ipvs: the Service ClusterIP range (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
      .option('--revoke-established', "the layout of an agent with --revoke-established: PCTL-MIDSTREAM drops TCP packets without SYN that conntrack takes for new connections, and UDP answers of flows the agent ended (the ipset PCTL-revoked)")
      .option('--no-verdict-cache', 'the layout of an agent with --no-verdict-cache: no ipset PCTL-verdicts and no rules that read or fill it'),
  ).action(async (o, cmd: Command) => {
    const src = await loadSource(sourceOptions(cmd), io);
    const model = src.model;
    const known = new Set([...model.allNodes()].map((n) => n.name));
    for (const p of model.allPods()) if (p.nodeName) known.add(p.nodeName);
    if (!known.has(o.node)) {
      io.err(`warning: node ${printable(o.node)} is neither a Node object nor any pod's spec.nodeName (known: ${[...known].sort().map(printable).join(', ') || 'none'})\n`);
    }
    const proxy = serviceProxyOptions({ serviceProxy: o.serviceProxy, serviceCidr: o.serviceCidr });
    const rs = compile(
      model,
      o.node,
      agentCompileOptions({ revokeEstablished: !!o.revokeEstablished, verdictCache: o.verdictCache !== false, proxyMode: proxy.serviceProxy === 'auto' ? 'iptables' : proxy.serviceProxy, serviceCidrs: proxy.serviceCidrs }),
    );
    // Never expected (names carry 105 bits of SHA-256); the payload isolates the pods concerned.
    for (const c of rs.collisions ?? []) {
      io.err(`error: chain name ${c.name} stands for two different ${c.direction.toLowerCase()} chains: their pods are isolated by ${c.chain}, which allows nothing\n`);
    }
    if (o.output === 'json') io.out(jsonOut(rs));
    else {
      // Under IPVS the layout differs (PCTL-OUTPUT and its hook): say which layout this is.
      if (proxy.serviceProxy === 'ipvs') io.out(`# kube-proxy IPVS mode: Service CIDRs ${proxy.serviceCidrs.join(', ') || 'none (VIPs judged at INPUT)'}, node ports ${proxy.nodePorts.from}-${proxy.nodePorts.to}\n`);
      io.out(`# ipset restore payload\n${renderIpsetRestore(rs.sets)}\n# iptables-restore --noflush payload\n${renderIptablesRestore(rs)}`);
    }
    code = rs.collisions ? EXIT.failure : src.errors > 0 && o.strict ? EXIT.invalidInput : EXIT.ok;
  });

  program
    .command('agent')
    .description('Run the node agent: watch the cluster (--kube) or a folder of manifests, compile for this node, keep iptables and ipsets in sync.')
    .addHelpText(
      'after',
      `
Nothing is written before the source has listed everything once. Rules stay in place when the
agent stops (pods stay isolated); --cleanup removes them.

Examples:
  policyctl agent --node node-1 --kube --health-addr :9102          # in the DaemonSet
  policyctl agent --node node-1 --manifests ./cluster --dry-run      # what would be written
  policyctl agent --cleanup                                          # remove everything PCTL-
`,
    )
    .option('--node <name>', "this node's name, as in pods' spec.nodeName")
    .option('--manifests <dir>', 'folder of manifests to enforce (re-read on change)')
    .option('--kube', 'watch the cluster through the API server (in a pod: its service account)')
    .option('--kubeconfig <path>', 'with --kube: kubeconfig to use instead of the in-cluster service account')
    .option('--context <name>', 'with --kube: kubeconfig context to use')
    .option('--health-addr <host:port>', 'serve /healthz, /readyz, /metrics and /drops here (e.g. :9102, or unix:PATH for a unix socket)')
    .option('--resync-interval <duration>', 're-read the kernel and repair drift this often', '10s')
    .option('--stale-watch <duration>', 'with --kube: a watch with no event and no bookmark for this long is restarted with a fresh list, and /readyz is not ready past half of it (the API server sends a bookmark about every minute and before each watch deadline; 10s to 2m)', '2m')
    .option('--status-file <path>', 'rewrite this JSON file after every sync (what was applied)')
    .option('--cni-socket <path>', 'serve the policyctl-cni plugin on this unix socket (folder created 0700); the plugin\'s default and the DaemonSet\'s: /run/policyctl/cni.sock')
    .option('--pod-cidr <cidr>', "this node's pod CIDR, besides its Node's spec.podCIDRs (repeatable): new connections of its addresses that are not programmed pods are dropped", (v: string, prev: string[] = []) => [...prev, v])
    .option('--revoke-established', 'end established connections that a policy change denies (deletes their conntrack entries within a second of the change); TCP packets of the pod CIDRs that conntrack takes up mid-stream are dropped, so a connection whose entry is lost must reconnect, and for 120 s so are UDP answers to a client port of an ended flow (the ipset PCTL-revoked)')
    .option('--shared-admin-chains', 'one Admin ClusterNetworkPolicy chain for all the pods under the same Admin policies, followed by a second dispatch to their NetworkPolicy or Baseline chains: fewer rules and cheaper changes to Admin policies that select many pods, a few more rules per new connection')
    .addOption(new Option('--service-proxy <mode>', "kube-proxy's mode on this node: auto reads its traces (interface kube-ipvs0 or ipset KUBE-CLUSTER-IP: ipvs) at start and at each resync; under ipvs, Service traffic is judged in OUTPUT against the backend").choices(['auto', 'iptables', 'nftables', 'ipvs']).default('auto'))
    .option('--service-cidr <cidr>', 'under IPVS: the Service ClusterIP range (the API server\'s --service-cluster-ip-range; repeatable): packets of pods to it pass INPUT and are judged in OUTPUT against the backend', (v: string, prev: string[] = []) => [...prev, v])
    .option('--node-port-range <from-to>', 'under IPVS: the node port range (kube-proxy\'s); packets of pods to it pass INPUT and are judged in OUTPUT', '30000-32767')
    .option('--set-bridge-nf', 'set net.bridge.bridge-nf-call-iptables back to 1 whenever it is found at 0 (logged)')
    .option('--no-verdict-cache', `judge every new connection by the whole rule walk: no ipset PCTL-verdicts remembering the client, server and port of allowed TCP and UDP connections for ${VERDICT_CACHE_TIMEOUT_S} s (emptied by every write that may deny; with it, per-policy counters count a repeated connection once per ${VERDICT_CACHE_TIMEOUT_S} s)`)
    .option('--no-drop-log', "program no drop-log rule and read no drop log (kernels without NFLOG or hashlimit; the drops and the kernel's per-policy counters stay)")
    .option('--drop-log-interval <duration>', 'log each denied flow once per this interval, with its packet count (JSON lines; recent ones at /drops on --health-addr)', '10s')
    .option('--dry-run', 'print what would be written and exit, writing nothing')
    .option('--cleanup', 'remove every chain, jump and ipset this agent owns, and nothing else; then exit')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .action(async (o) => {
      code = await runAgent(o, io);
    });

  program
    .command('drops')
    .description("Recent denied flows of the cluster, from every agent's drop log (/drops) through the API server's pod proxy: grouped by destination pod, each with the policy and the reason in explain's words.")
    .addHelpText(
      'after',
      `
Needs get on pods/proxy in the agents' namespace (and list on pods there).

Examples:
  policyctl drops --kube                        # every node's recent denials
  policyctl drops --kube -n shop -o json        # flows from or to pods of namespace shop
  policyctl drops --kube --watch                # keep printing new ones
`,
    )
    .option('--kube', 'ask the agents of the cluster (the only source of drops; kept explicit as in policyctl agent --kube)')
    .option('--kubeconfig <path>', 'kubeconfig of the cluster (default: KUBECONFIG, then ~/.kube/config)')
    .option('--context <name>', 'kubeconfig context to use (default: its current-context)')
    .option('-n, --namespace <ns>', 'only flows from or to pods of this namespace')
    .option('--watch', 'keep printing new and updated flows (every second) until interrupted')
    .option('--agent-namespace <ns>', "the agents' namespace (the DaemonSet's)", 'kube-system')
    .option('--agent-selector <labels>', "the agent pods' label selector", 'app=policyctl')
    .option('--agent-port <port>', "the agents' --health-addr port", '9102')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: { kube?: boolean; kubeconfig?: string; context?: string; namespace?: string; watch?: boolean; agentNamespace: string; agentSelector: string; agentPort: string; output: string }) => {
      if (!o.kube) throw new CliError('give --kube: drops come from the agents of a cluster (policyctl lab drops for a lab)', EXIT.usage);
      const port = Number(o.agentPort);
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new CliError(`--agent-port must be a number from 1 to 65535, got ${JSON.stringify(o.agentPort)}`, EXIT.usage);
      const { loadKubeConfig } = await import('../watchers/kube-client.ts');
      const { kubeAgentDrops, showDrops } = await import('./drops.ts');
      let kc;
      try {
        kc = loadKubeConfig({ ...(o.kubeconfig !== undefined ? { kubeconfig: o.kubeconfig } : {}), ...(o.context !== undefined ? { context: o.context } : {}) });
      } catch (e) {
        throw new CliError(errorText(e), EXIT.usage);
      }
      const agents = { namespace: o.agentNamespace, selector: o.agentSelector, port };
      const ac = new AbortController();
      if (o.watch) process.once('SIGINT', () => ac.abort());
      try {
        code = await showDrops(io, (since) => kubeAgentDrops(kc, agents, since), { output: o.output, ...(o.namespace !== undefined ? { namespace: o.namespace } : {}), ...(o.watch ? { watch: true } : {}), signal: ac.signal });
      } catch (e) {
        throw new CliError(errorText(e));
      }
    });

  program
    .command('install-cni')
    .description("Install the policyctl-cni plugin into a node's CNI bin folder (the DaemonSet's init container does this): a native front end that forwards each call to the node's agent, and this Node with the plugin for when no agent answers.")
    .option('--bin-dir <dir>', "the node's CNI bin folder, as mounted", '/opt/cni/bin')
    .action(async (o: { binDir: string }) => {
      const { installPlugin } = await import('../cni/install.ts');
      const { readFile } = await import('node:fs/promises');
      const version = (JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
      const r = await installPlugin({ binDir: o.binDir, version });
      io.out(`installed ${r.wrapper} (policyctl-cni ${version}, files in ${r.dir})\n`);
      if (!r.frontEnd.native) io.err(`warning: no native front end (${r.frontEnd.reason}): each CNI call starts Node, which adds about 100 ms to every pod start\n`);
      code = EXIT.ok;
    });

  program.addCommand(labCommand(io, (c) => (code = c)));

  try {
    if (argv.length === 0) {
      program.outputHelp();
      return EXIT.usage;
    }
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.help' || e.code === 'commander.version') return EXIT.ok;
      return EXIT.usage;
    }
    if (e instanceof CliError) {
      io.err(`error: ${escapeLine(e.message)}\n`);
      return e.code;
    }
    io.err(`error: ${escapeLine(errorText(e))}\n`);
    return EXIT.failure;
  }
}
