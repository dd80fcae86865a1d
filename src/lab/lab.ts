// The real-kernel lab: a flannel host-gw cluster built from network namespaces on one machine
// (README.md, "The lab").
//
//   pl-<lab>.sw   switch: bridge br0 joining every node's eth0; its own address (.1 of the
//                 underlay) is an "external host" outside the cluster with routes to the podCIDRs
//   pl-<lab>.n.X  node X: eth0 (underlay .11, .12, ...), default route via .1, host-gw routes to
//                 the other nodes' podCIDRs, ip_forward=1, bridge-nf-call-iptables=1, cni0 (made
//                 by the CNI bridge plugin), flannel's and kube-proxy's iptables rules
//   pl-<lab>.p.H  pod: eth0 attached by the CNI bridge plugin (host-local IPAM, the requested IP),
//                 lo up, a server process on its TCP and UDP ports
//
// Nothing is created in the machine's own network namespace. Every step that fails after the
// first namespace exists is undone by destroyLab (createLab) or by removing the pod (addPod).
// An agent can later run inside a node with `ip netns exec <nodeNetns(lab, node)> <cmd>`.

import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  LabError,
  ipBatch,
  killPids,
  listNetns,
  netnsPids,
  run,
  runInNetns,
  setSysctls,
  type RunOptions,
  type RunResult,
} from './exec.ts';
import { formatIpv4, nthAddress, parseIpv4Cidr } from './ipv4.ts';
import {
  NODE_UPLINK,
  SWITCH_BRIDGE,
  labNetnsPrefix,
  labOfNetns,
  podNetnsName,
  nodeNetnsName,
  switchNetns,
  switchPortName,
  validateLabName,
} from './names.ts';
import { installPlugin } from '../cni/install.ts';
import { cachedResult, cniConflist, ipamDataDir, runCni, type CniCall, type CniConflist } from './cni.ts';
import { IPVS_CLUSTER_IP_SET, IPVS_INTERFACE, ipvsNodeLines, ipvsProxyArgs, renderIpvsMangle, renderNodeFilter, renderNodeNat, renderServices, serviceKey, type LabService } from './rules.ts';
import { IPVS_PROXY_SCRIPT, NODE_CACHE_DIR, SERVER_SCRIPT, nodeBinary, scriptArgv, scriptEnv, startDaemon } from './processes.ts';
import {
  DEFAULT_CLUSTER_CIDR,
  DEFAULT_UNDERLAY_CIDR,
  normalizePorts,
  resolveNodes,
  resolvePod,
  resolveService,
  type LabPodSpec,
  type LabServiceSpec,
  type LabSpec,
} from './spec.ts';
import {
  STATE_FILE,
  STATE_VERSION,
  labDir,
  loadState,
  saveState,
  stateLabNames,
  type LabNode,
  type LabPod,
  type LabPort,
  type LabState,
} from './state.ts';

/** Client-side sysctls for namespaces that open many short connections (README.md, "The lab"). */
const CLIENT_SYSCTLS = {
  'net.ipv4.tcp_tw_reuse': '1',
  'net.ipv4.ip_local_port_range': '15000 65000',
};

export interface LabOptions {
  /** Progress messages. */
  log?: (message: string) => void;
}

// ---------------------------------------------------------------------------------------------
// Per-lab serialisation of state changes inside this process.

const locks = new Map<string, Promise<unknown>>();

async function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(name) ?? Promise.resolve();
  const next = prev.then(fn, fn);
  const settled = next.catch(() => {});
  locks.set(name, settled);
  try {
    return await next;
  } finally {
    if (locks.get(name) === settled) locks.delete(name);
  }
}

// ---------------------------------------------------------------------------------------------
// Lookups

export function findNode(lab: LabState, node: string): LabNode {
  const n = lab.nodes.find((x) => x.name === node);
  if (!n) throw new LabError(`lab ${lab.name} has no node ${JSON.stringify(node)} (nodes: ${lab.nodes.map((x) => x.name).join(', ')})`);
  return n;
}

export function findPod(lab: LabState, key: string): LabPod {
  const p = lab.pods.find((x) => x.key === key);
  if (!p) throw new LabError(`lab ${lab.name} has no pod ${JSON.stringify(key)}`);
  return p;
}

/** The network namespace of a node (for `ip netns exec <it> <agent>`). */
export function nodeNetns(lab: LabState | string, node: string): string {
  return typeof lab === 'string' ? nodeNetnsName(lab, node) : findNode(lab, node).netns;
}

/** The network namespace of a pod ("namespace/name"). */
export function podNetns(lab: LabState | string, key: string): string {
  return typeof lab === 'string' ? podNetnsName(lab, key) : findPod(lab, key).netns;
}

export function execInNode(lab: LabState, node: string, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runInNetns(findNode(lab, node).netns, argv, { context: `in node ${node} of lab ${lab.name}`, ...opts });
}

export function execInPod(lab: LabState, key: string, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runInNetns(findPod(lab, key).netns, argv, { context: `in pod ${key} of lab ${lab.name}`, ...opts });
}

/** Runs a command in the switch namespace (the external host). */
export function execInSwitch(lab: LabState, argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return runInNetns(lab.switch.netns, argv, { context: `in the switch of lab ${lab.name}`, ...opts });
}

/**
 * Starts a long-lived process inside a node's namespace (an agent: `ip netns exec <node> argv`),
 * detached, with stdout/stderr in <lab dir>/logs/<name>.log. destroyLab ends it with the lab.
 * Returns its pid once it printed `readyLine`, or once it started when readyLine is false.
 */
export function startInNode(
  lab: LabState,
  node: string,
  argv: readonly string[],
  opts: { logName?: string; env?: Record<string, string>; readyLine?: string | false; readyTimeoutMs?: number } = {},
): Promise<number> {
  const n = findNode(lab, node);
  return startDaemon({
    argv: ['ip', 'netns', 'exec', n.netns, ...argv],
    logFile: logFile(lab, opts.logName ?? `node-${node}`),
    context: `starting a process in node ${node} of lab ${lab.name}`,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.readyLine !== undefined ? { readyLine: opts.readyLine } : {}),
    ...(opts.readyTimeoutMs !== undefined ? { readyTimeoutMs: opts.readyTimeoutMs } : {}),
  });
}

/** Loads a lab's state written by createLab (in this or another process). */
export async function openLab(name: string, opts: { stateDir?: string } = {}): Promise<LabState> {
  const state = await loadState(name, opts.stateDir);
  if (!state) throw new LabError(`lab ${JSON.stringify(name)} has no state file under ${labDir(name, opts.stateDir)}`);
  return state;
}

// ---------------------------------------------------------------------------------------------
// Building

async function ensureBrNetfilter(netns: string, log: (m: string) => void): Promise<void> {
  const probe = () => runInNetns(netns, ['test', '-e', '/proc/sys/net/bridge/bridge-nf-call-iptables'], { reject: false });
  if ((await probe()).exitCode === 0) return;
  log('br_netfilter is not loaded: modprobe br_netfilter');
  await run(['modprobe', 'br_netfilter'], { context: 'loading br_netfilter (bridge-nf-call-iptables)' });
  if ((await probe()).exitCode !== 0) {
    throw new LabError('/proc/sys/net/bridge/bridge-nf-call-iptables is missing in a new namespace even after modprobe br_netfilter');
  }
}

async function iptablesRestore(netns: string, text: string, context: string): Promise<void> {
  await runInNetns(netns, ['iptables-restore', '--noflush', '--wait'], { input: text, context: `${context}; input:\n${text}` });
}

async function setUpSwitch(lab: LabState, prefix: number): Promise<void> {
  const sw = lab.switch.netns;
  await setSysctls(sw, { 'net.bridge.bridge-nf-call-iptables': '0', ...CLIENT_SYSCTLS }, `configuring switch ${sw}`);
  const lines = [
    'link set lo up',
    `link add ${SWITCH_BRIDGE} type bridge`,
    `link set ${SWITCH_BRIDGE} up`,
    `addr add ${lab.external.ip}/${prefix} dev ${SWITCH_BRIDGE}`,
  ];
  for (const n of lab.nodes) {
    const port = switchPortName(n.name);
    lines.push(
      `link add ${port} type veth peer name ${NODE_UPLINK} netns ${n.netns}`,
      `link set ${port} master ${SWITCH_BRIDGE}`,
      `link set ${port} up`,
    );
  }
  // The external host reaches pod IPs through the nodes, like a router with host-gw routes.
  for (const n of lab.nodes) lines.push(`route add ${n.podCIDR} via ${n.ip} dev ${SWITCH_BRIDGE}`);
  await ipBatch(sw, lines, `building switch ${sw}`);
}

/** The node agent's CNI socket in a lab whose conflists chain policyctl-cni. */
export function nodeCniSocket(labDir: string, node: string): string {
  return join(labDir, 'cni', node, 'cni.sock');
}

/** The lab's CNI bin folder: policyctl-cni as install-cni installs it (bridge and host-local stay in CNI_PATH). */
export function labCniBin(labDir: string): string {
  return join(labDir, 'cni', 'bin');
}

/** The node's conflist: bridge, then policyctl-cni when the lab chains it (unless bypassed: a pod attached by hand). */
function nodeCniConfig(lab: LabState, node: LabNode, bypassPolicyCni = false): CniConflist {
  const input = { podCIDR: node.podCIDR, clusterCIDR: lab.clusterCIDR, ipamDataDir: ipamDataDir(lab.dir, node.name) };
  return cniConflist(input, node.cniSocket && !bypassPolicyCni ? { socket: node.cniSocket, timeoutSeconds: lab.cniTimeoutSeconds ?? 10 } : undefined);
}

async function setUpNode(lab: LabState, node: LabNode, prefix: number): Promise<void> {
  await setSysctls(
    node.netns,
    { 'net.ipv4.ip_forward': '1', 'net.bridge.bridge-nf-call-iptables': '1', ...CLIENT_SYSCTLS },
    `configuring node ${node.name}`,
  );
  const lines = [
    'link set lo up',
    `addr add ${node.ip}/${prefix} dev ${NODE_UPLINK}`,
    `link set ${NODE_UPLINK} up`,
    `route add default via ${lab.external.ip} dev ${NODE_UPLINK}`,
    // flannel host-gw: every other node's podCIDR via that node's address.
    ...lab.nodes.filter((o) => o !== node).map((o) => `route add ${o.podCIDR} via ${o.ip} dev ${NODE_UPLINK}`),
  ];
  await ipBatch(node.netns, lines, `building node ${node.name}`);
  // The plugin gets its config on stdin; a copy is kept for people and agents to read.
  await mkdir(join(lab.dir, 'cni'), { recursive: true });
  await writeFile(join(lab.dir, 'cni', `${node.name}.conflist`), JSON.stringify(nodeCniConfig(lab, node), null, 2) + '\n');
  const input = { clusterCIDR: lab.clusterCIDR, podCIDR: node.podCIDR };
  await iptablesRestore(node.netns, renderNodeFilter(input) + renderNodeNat(input), `flannel/kube-proxy rules on node ${node.name}`);
  if (lab.serviceProxy === 'ipvs') await setUpIpvsPath(node);
}

/**
 * IPVS-path mode (rules.ts): kube-proxy's traces (kube-ipvs0, KUBE-CLUSTER-IP), the mark and
 * policy route that bring the backends' replies to the proxy, and no ICMP redirects (the node
 * routes between the pods of its own bridge in this mode: pvlanPods).
 */
async function setUpIpvsPath(node: LabNode): Promise<void> {
  const context = `IPVS-path plumbing on node ${node.name}`;
  await setSysctls(node.netns, { 'net.ipv4.conf.all.send_redirects': '0', 'net.ipv4.conf.default.send_redirects': '0' }, context);
  await ipBatch(node.netns, ipvsNodeLines(), context);
  await runInNetns(node.netns, ['ipset', 'create', IPVS_CLUSTER_IP_SET, 'hash:ip,port'], { context });
  await iptablesRestore(node.netns, renderIpvsMangle(), context);
}

/**
 * IPVS-path mode: the backend's replies to the proxy, addressed to the client pod's address,
 * must reach the node's IP layer even when the backend is on the client's own bridge, where
 * they would be switched straight to the client pod. So the bridge's pod ports are isolated
 * and cni0 answers ARP for the pods (private VLAN proxy ARP): every packet between two pods of
 * a node is routed by the node (crossing FORWARD once, as a bridged one does with
 * bridge-nf-call-iptables). Run after each pod's ADD (cni0 exists from the first one).
 */
async function pvlanPods(lab: LabState, node: LabNode): Promise<void> {
  if (lab.serviceProxy !== 'ipvs') return;
  const script = [
    'sysctl -qw net.ipv4.conf.cni0.proxy_arp_pvlan=1 net.ipv4.conf.cni0.send_redirects=0',
    'for p in /sys/class/net/cni0/brif/*; do ip link set dev "${p##*/}" type bridge_slave isolated on; done',
  ].join(' && ');
  await runInNetns(node.netns, ['sh', '-c', script], { context: `isolating the pod ports of cni0 on node ${node.name}` });
}

function serverArgs(id: string, ports: readonly LabPort[]): string[] {
  const tcp = ports.filter((p) => p.protocol === 'TCP').map((p) => p.port);
  const udp = ports.filter((p) => p.protocol === 'UDP').map((p) => p.port);
  return ['--id', id, ...(tcp.length ? ['--tcp', tcp.join(',')] : []), ...(udp.length ? ['--udp', udp.join(',')] : [])];
}

function logFile(lab: LabState, what: string): string {
  return join(lab.dir, 'logs', `${what.replaceAll('/', '_')}.log`);
}

/** The CNI call of a pod: ADD and DEL must name the same container, config and address (DEL gets the ADD's result, as a runtime caches it). */
function podCniCall(lab: LabState, node: LabNode, pod: LabPod, command: 'ADD' | 'DEL'): CniCall {
  return {
    command,
    nodeNetns: node.netns,
    podNetns: pod.netns,
    containerId: pod.containerId,
    config: nodeCniConfig(lab, node, pod.unmanaged),
    ...(pod.ip ? { ip: pod.ip } : {}),
    ...(command === 'DEL' && pod.ip ? { prevResult: cachedResult(pod.ip, node.podCIDR) } : {}),
    podNamespace: pod.namespace,
    podName: pod.name,
    binDir: labCniBin(lab.dir),
  };
}

/** How `addPod` starts a pod; the defaults are a kubelet's order. */
export interface AddPodOptions {
  /** Attach with the bridge plugin alone, as if by hand: no policyctl-cni, never named to an agent. */
  readonly bypassPolicyCni?: boolean;
  /** Runs once the pod's namespace exists, before any CNI plugin (tests start probers in it). */
  readonly beforeNetwork?: (pod: LabPod) => Promise<void>;
}

/** Namespace, sysctls and CNI ADD of a pod. The pod is recorded in lab.pods first. */
async function attachPod(lab: LabState, pod: LabPod, opts: AddPodOptions = {}): Promise<void> {
  const node = findNode(lab, pod.node);
  await run(['ip', 'netns', 'add', pod.netns], { context: `creating pod ${pod.key}` });
  pod.timeline = { created: Date.now() };
  await setSysctls(pod.netns, CLIENT_SYSCTLS, `configuring pod ${pod.key}`);
  await ipBatch(pod.netns, ['link set lo up'], `configuring pod ${pod.key}`);
  await opts.beforeNetwork?.(pod);
  const timeline = pod.timeline;
  const call = podCniCall(lab, node, pod, 'ADD');
  call.onPlugin = (type) => {
    if (type === 'bridge') timeline.networkUp = Date.now();
  };
  const result = await runCni(call);
  timeline.added = Date.now();
  const address = result?.ips?.[0]?.address?.split('/')[0];
  if (!address) throw new LabError(`CNI ADD for pod ${pod.key} returned no address: ${JSON.stringify(result)}`);
  if (pod.ip && address !== pod.ip) {
    throw new LabError(`CNI ADD for pod ${pod.key} assigned ${address}, not the requested ${pod.ip}`);
  }
  pod.ip = address;
  await pvlanPods(lab, node);
}

async function startPodServer(lab: LabState, pod: LabPod): Promise<void> {
  const served = pod.ports.filter((p) => p.protocol !== 'SCTP');
  if (served.length === 0) return;
  pod.serverPid = await startDaemon({
    argv: scriptArgv(pod.netns, SERVER_SCRIPT, serverArgs(pod.key, served)),
    env: scriptEnv(lab.dir),
    logFile: logFile(lab, `pod-${pod.key}`),
    context: `starting the server of pod ${pod.key}`,
  });
}

async function applyServices(lab: LabState, removed: readonly LabService[] = []): Promise<void> {
  if (lab.serviceProxy === 'ipvs') {
    await Promise.all(lab.nodes.map((n) => applyIpvsServices(lab, n, removed)));
    return;
  }
  const text = renderServices(lab.services, lab.clusterCIDR, removed);
  await Promise.all(lab.nodes.map((n) => iptablesRestore(n.netns, text, `services on node ${n.name}`)));
}

/**
 * IPVS-path mode: the VIPs on kube-ipvs0 and in KUBE-CLUSTER-IP, as kube-proxy keeps them, and
 * the node's proxy restarted with the current Services (none: stopped).
 */
async function applyIpvsServices(lab: LabState, node: LabNode, removed: readonly LabService[]): Promise<void> {
  const context = `IPVS-path services on node ${node.name}`;
  const udp = lab.services.find((s) => s.protocol !== 'TCP');
  if (udp) throw new LabError(`lab ${lab.name} reproduces IPVS's path for TCP only; service ${serviceKey(udp)} is not`);
  if (node.ipvsProxyPid) {
    await killPids([node.ipvsProxyPid]);
    delete node.ipvsProxyPid;
  }
  const live = new Set(lab.services.map((s) => s.clusterIP));
  const lines: string[] = [];
  for (const s of removed) {
    await runInNetns(node.netns, ['ipset', 'del', '-exist', IPVS_CLUSTER_IP_SET, `${s.clusterIP},tcp:${s.port}`], { context });
    if (!live.has(s.clusterIP)) lines.push(`addr del ${s.clusterIP}/32 dev ${IPVS_INTERFACE}`);
  }
  for (const s of lab.services) {
    await runInNetns(node.netns, ['ipset', 'add', '-exist', IPVS_CLUSTER_IP_SET, `${s.clusterIP},tcp:${s.port}`], { context });
    lines.push(`addr replace ${s.clusterIP}/32 dev ${IPVS_INTERFACE}`);
  }
  if (lines.length > 0) await ipBatch(node.netns, [...new Set(lines)], context);
  if (lab.services.length === 0) return;
  node.ipvsProxyPid = await startDaemon({
    argv: ['ip', 'netns', 'exec', node.netns, 'python3', IPVS_PROXY_SCRIPT, ...ipvsProxyArgs(lab.services)],
    logFile: logFile(lab, `ipvs-proxy-${node.name}`),
    context: `starting the IPVS-path proxy on node ${node.name}`,
  });
}

/**
 * Builds a lab. Throws when a lab of that name already exists (state file or namespaces); on any
 * failure everything created so far is removed again before the error is rethrown.
 */
export async function createLab(spec: LabSpec, opts: LabOptions = {}): Promise<LabState> {
  const log = opts.log ?? (() => {});
  const name = validateLabName(spec.name);
  const clusterCIDR = parseIpv4Cidr(spec.clusterCIDR ?? DEFAULT_CLUSTER_CIDR, 'clusterCIDR').text;
  const underlay = parseIpv4Cidr(spec.underlayCIDR ?? DEFAULT_UNDERLAY_CIDR, 'underlayCIDR');
  const nodes = resolveNodes(spec, clusterCIDR, underlay.text);
  const dir = labDir(name, spec.stateDir);
  const lab: LabState = {
    version: STATE_VERSION,
    name,
    dir,
    createdAt: new Date().toISOString(),
    clusterCIDR,
    underlayCIDR: underlay.text,
    switch: { netns: switchNetns(name), bridge: SWITCH_BRIDGE },
    external: { ip: formatIpv4(nthAddress(underlay, 1)), ports: normalizePorts(spec.externalPorts, 'externalPorts') },
    nodes,
    pods: [],
    services: [],
    ...(spec.policyCni ? { cniTimeoutSeconds: spec.policyCni.timeoutSeconds ?? 10 } : {}),
    ...(spec.serviceProxy === 'ipvs' ? { serviceProxy: 'ipvs' as const } : {}),
  };
  if (spec.policyCni) for (const n of nodes) n.cniSocket = nodeCniSocket(dir, n.name);
  // Validate every pod and service before touching the kernel.
  const pods: LabPod[] = [];
  for (const [i, p] of (spec.pods ?? []).entries()) {
    const pod = resolvePod({ ...lab, pods }, p, `pods[${i}]`);
    pods.push(pod);
  }
  const services = (spec.services ?? []).map((s) => resolveService(lab, s));

  return withLock(name, async () => {
    const existing = (await listNetns()).filter((n) => n.startsWith(labNetnsPrefix(name)));
    if (existing.length > 0 || (await loadState(name, spec.stateDir).catch(() => undefined))) {
      throw new LabError(
        `lab ${name} already exists (${existing.length ? `namespaces ${existing.join(', ')}` : `state in ${dir}`}); destroy it first`,
      );
    }
    const started = Date.now();
    try {
      await saveState(lab);
      log(`lab ${name}: namespaces`);
      await ipBatch(undefined, [lab.switch.netns, ...nodes.map((n) => n.netns)].map((n) => `netns add ${n}`), `creating lab ${name}`);
      await ensureBrNetfilter(lab.switch.netns, log);
      await setUpSwitch(lab, underlay.prefix);
      log(`lab ${name}: nodes`);
      await Promise.all(nodes.map((n) => setUpNode(lab, n, underlay.prefix)));
      // The plugin as install-cni installs it on a node (JavaScript, warmed cache), so that the
      // lab's pods start through what a cluster runs.
      if (spec.policyCni) await installPlugin({ binDir: labCniBin(dir), version: 'lab', node: nodeBinary(), linkNode: true });
      log(`lab ${name}: pods`);
      // CNI ADD one at a time per node (one cni0, one IPAM store), nodes in parallel.
      lab.pods.push(...pods);
      await Promise.all(
        nodes.map(async (n) => {
          for (const pod of pods.filter((p) => p.node === n.name)) await attachPod(lab, pod);
        }),
      );
      await saveState(lab);
      log(`lab ${name}: servers`);
      await Promise.all(pods.map((p) => startPodServer(lab, p)));
      if (lab.external.ports.some((p) => p.protocol !== 'SCTP')) {
        lab.external.serverPid = await startDaemon({
          argv: scriptArgv(lab.switch.netns, SERVER_SCRIPT, serverArgs('external', lab.external.ports.filter((p) => p.protocol !== 'SCTP'))),
          env: scriptEnv(lab.dir),
          logFile: logFile(lab, 'external'),
          context: `starting the external server of lab ${name}`,
        });
      }
      if (services.length > 0) {
        lab.services.push(...services);
        await applyServices(lab);
      }
      await saveState(lab);
      log(`lab ${name}: up in ${Date.now() - started} ms`);
      return lab;
    } catch (err) {
      log(`lab ${name}: failed, removing it`);
      try {
        await destroyLabUnlocked(name, spec.stateDir, dir);
      } catch (cleanupErr) {
        throw new LabError(`${(err as Error).message}\n(and cleaning up failed: ${(cleanupErr as Error).message})`, { cause: err });
      }
      throw err;
    }
  });
}

/**
 * A kubelet's teardown: the pod's processes, CNI DEL (through the conflist in reverse, so the
 * agent drops the address before host-local releases it), the namespace. A failed DEL leaves
 * the namespace and the address in place (the caller retries), unless `force` (cleaning up a
 * failed ADD: every plugin's DEL still runs).
 */
async function teardownPod(lab: LabState, pod: LabPod, force = false): Promise<void> {
  const node = lab.nodes.find((n) => n.name === pod.node);
  const present = (await listNetns()).includes(pod.netns);
  if (present) await killPids(await netnsPids(pod.netns));
  let failed: unknown;
  if (node) {
    try {
      await runCni({ ...podCniCall(lab, node, pod, 'DEL'), force });
    } catch (e) {
      if (!force) throw e;
      failed = e;
    }
  }
  if (present) await run(['ip', 'netns', 'del', pod.netns], { context: `deleting pod ${pod.key}` });
  if (failed) throw failed;
}

/**
 * Adds a pod to a running lab: namespace, CNI ADD with the requested IP (through policyctl-cni
 * when the lab chains it: ADD returns once the node's agent enforces the pod), server. When the
 * ADD fails the pod is torn down again and the error thrown (a kubelet would retry).
 */
export async function addPod(lab: LabState, spec: LabPodSpec, opts: AddPodOptions = {}): Promise<LabPod> {
  return withLock(lab.name, async () => {
    const pod = resolvePod(lab, spec, 'addPod');
    if (opts.bypassPolicyCni) pod.unmanaged = true;
    lab.pods.push(pod);
    try {
      await attachPod(lab, pod, opts);
      await startPodServer(lab, pod);
    } catch (err) {
      lab.pods = lab.pods.filter((p) => p !== pod);
      await teardownPod(lab, pod, true).catch(() => {});
      throw err;
    }
    await saveState(lab);
    return pod;
  });
}

/** Removes a pod: its processes, CNI DEL (releases the IP), its namespace. */
export async function removePod(lab: LabState, key: string): Promise<void> {
  return withLock(lab.name, async () => {
    const pod = findPod(lab, key);
    await teardownPod(lab, pod);
    lab.pods = lab.pods.filter((p) => p !== pod);
    await saveState(lab);
  });
}

/** Adds (or replaces, same clusterIP/port/protocol) a ClusterIP service DNAT on every node. */
export async function addService(lab: LabState, spec: LabServiceSpec): Promise<LabService> {
  return withLock(lab.name, async () => {
    const svc = resolveService(lab, spec);
    const key = serviceKey(svc);
    lab.services = [...lab.services.filter((s) => serviceKey(s) !== key), svc];
    await applyServices(lab);
    await saveState(lab);
    return svc;
  });
}

export async function removeService(lab: LabState, s: { clusterIP: string; port: number; protocol?: 'TCP' | 'UDP' }): Promise<void> {
  return withLock(lab.name, async () => {
    const key = serviceKey({ clusterIP: s.clusterIP, port: s.port, protocol: s.protocol ?? 'TCP' });
    const removed = lab.services.filter((x) => serviceKey(x) === key);
    if (removed.length === 0) throw new LabError(`lab ${lab.name} has no service ${key}`);
    lab.services = lab.services.filter((x) => serviceKey(x) !== key);
    await applyServices(lab, removed);
    await saveState(lab);
  });
}

// ---------------------------------------------------------------------------------------------
// Tearing down and listing

export interface DestroyResult {
  name: string;
  /** Namespaces deleted. */
  netns: string[];
  /** Processes ended (servers, agents, anything running inside the lab's namespaces). */
  pids: number[];
  /** The lab's state directory, when it was removed. */
  removedDir?: string;
}

/** `cluster` holds what `policyctl lab up` adds (src/lab/cluster.ts): agents' status, the watcher's. */
const LAB_DIR_ENTRIES = new Set([STATE_FILE, 'ipam', 'logs', 'cni', NODE_CACHE_DIR, 'cluster']);

async function destroyLabUnlocked(name: string, stateDir: string | undefined, dirHint?: string): Promise<DestroyResult> {
  const prefix = labNetnsPrefix(name);
  const namespaces = (await listNetns()).filter((n) => n.startsWith(prefix));
  const pids = (await Promise.all(namespaces.map(netnsPids))).flat();
  await killPids(pids);
  if (namespaces.length > 0) {
    // Pods first, the switch last: nothing is left dangling while it goes.
    const order = (n: string) => (n.startsWith(`${prefix}p.`) ? 0 : n.startsWith(`${prefix}n.`) ? 1 : 2);
    const sorted = [...namespaces].sort((a, b) => order(a) - order(b));
    await run(['ip', '-force', '-batch', '-'], {
      input: sorted.map((n) => `netns del ${n}`).join('\n') + '\n',
      context: `deleting the namespaces of lab ${name}`,
      reject: false,
    });
  }
  const left = (await listNetns()).filter((n) => n.startsWith(prefix));
  if (left.length > 0) throw new LabError(`lab ${name}: namespaces left after delete: ${left.join(', ')}`);
  const dir = dirHint ?? labDir(name, stateDir);
  let removedDir: string | undefined;
  try {
    const entries = await readdir(dir);
    // Only remove a directory that holds nothing but what a lab writes.
    if (entries.every((e) => LAB_DIR_ENTRIES.has(e) || e.startsWith(`${STATE_FILE}.`))) {
      await rm(dir, { recursive: true, force: true });
      removedDir = dir;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { name, netns: namespaces, pids, ...(removedDir ? { removedDir } : {}) };
}

/**
 * Removes a lab: ends every process inside its namespaces, deletes every namespace with its
 * prefix (found by name, so it works without the state file) and its state directory.
 */
export async function destroyLab(lab: LabState | string, opts: { stateDir?: string } = {}): Promise<DestroyResult> {
  const name = validateLabName(typeof lab === 'string' ? lab : lab.name);
  const dir = typeof lab === 'string' ? undefined : lab.dir;
  return withLock(name, () => destroyLabUnlocked(name, opts.stateDir, dir));
}

export interface LabSummary {
  name: string;
  /** Present when the lab has a readable state file. */
  state?: LabState;
  /** Its namespaces on the machine now. */
  netns: string[];
  /** "up": state and every namespace present; "partial": some missing; "orphaned": namespaces without state; "stale": state without namespaces. */
  status: 'up' | 'partial' | 'orphaned' | 'stale';
  error?: string;
}

/** Labs known from the state root or from namespaces named like a lab's. */
export async function listLabs(opts: { stateDir?: string } = {}): Promise<LabSummary[]> {
  const namespaces = await listNetns();
  const names = new Set<string>();
  for (const n of namespaces) {
    const lab = labOfNetns(n);
    if (lab) names.add(lab);
  }
  for (const n of await stateLabNames(opts.stateDir)) {
    try {
      validateLabName(n);
      names.add(n);
    } catch {
      /* not a lab directory */
    }
  }
  const out: LabSummary[] = [];
  for (const name of [...names].sort()) {
    const netns = namespaces.filter((n) => n.startsWith(labNetnsPrefix(name)));
    let state: LabState | undefined;
    let error: string | undefined;
    try {
      state = await loadState(name, opts.stateDir);
    } catch (err) {
      error = (err as Error).message;
    }
    let status: LabSummary['status'];
    if (!state) status = 'orphaned';
    else if (netns.length === 0) status = 'stale';
    else {
      const expected = [state.switch.netns, ...state.nodes.map((n) => n.netns), ...state.pods.map((p) => p.netns)];
      status = expected.every((n) => netns.includes(n)) ? 'up' : 'partial';
    }
    if (!state && netns.length === 0) continue;
    out.push({ name, netns, status, ...(state ? { state } : {}), ...(error ? { error } : {}) });
  }
  return out;
}

