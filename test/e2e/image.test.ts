// The image of deploy/Dockerfile, built with scripts/build-image.sh and run on the real kernel
// as the DaemonSet runs it: the agent in a lab node's network namespace (hostNetwork), as PID 1
// of its container, with only the DaemonSet's capabilities (NET_ADMIN, NET_RAW), unprivileged,
// on a read-only root filesystem, the node's /run/xtables.lock mounted. It must enforce the
// truth table the agents run as processes enforced, serve policyctl-cni through the mounted
// socket folder, leave every rule in place on SIGTERM (docs/design.md, invariant
// fail-closed-in-time: "while the agent is down the rules stay in place"), and remove exactly
// its own objects with `agent --cleanup` (invariant own-only-ours); with both iptables
// backends. The init container's `policyctl install-cni` is run from the image into a temp
// folder standing for the host's /opt/cni/bin, and the plugin it installs is run on the host:
// the static front end the image carries (built in the Dockerfile's own stage), and the Node
// plugin it falls back to.
//
// Run time: 1.5 to 3 minutes with the image cached (2 shared cores); the first build on a fresh
// machine adds 3 to 6 minutes (a Debian base with mmdebstrap, Node from the npm registry, apt
// and npm ci), after which the base and the layers stay cached.

import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compareWithModel, probeLab } from '../../src/cli/lab.ts';
import { labUp, loadFolder, readClusterInfo, stopWatcher, waitApplied, type ClusterInfo } from '../../src/lab/cluster.ts';
import { netnsPids, run, runInNetns, signalPids } from '../../src/lab/exec.ts';
import { destroyLab, execInNode, findNode, findPod, openLab } from '../../src/lab/lab.ts';
import { nodeBinary } from '../../src/lab/processes.ts';
import type { LabState } from '../../src/lab/state.ts';
import { reachTable, type ReachResult } from '../../src/semantics/reach.ts';
import {
  TEST_IMAGE,
  buildImage,
  envFlags,
  hostPathMounts,
  loadDeployment,
  podman,
  removeContainers,
  securityFlags,
  type Deployment,
} from '../support/image.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../support/netns.ts';

const CLUSTER = `
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: n1}, spec: {podCIDR: 10.244.1.0/24}}
- {apiVersion: v1, kind: Node, metadata: {name: n2}, spec: {podCIDR: 10.244.2.0/24}}
- {apiVersion: v1, kind: Namespace, metadata: {name: app, labels: {team: app}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: ops, labels: {team: ops}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: app, labels: {app: web}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.1.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: intruder, namespace: app, labels: {app: intruder}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.1.11}
- apiVersion: v1
  kind: Pod
  metadata: {name: monitor, namespace: ops, labels: {app: monitor}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 9090}, {containerPort: 53, protocol: UDP}]}]}
  status: {phase: Running, podIP: 10.244.1.12}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: app, labels: {app: db}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 5432}]}]}
  status: {phase: Running, podIP: 10.244.2.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: app, labels: {app: client}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {phase: Running, podIP: 10.244.2.11}
`;
// Same-node and cross-node denials and allowances, ingress and egress, TCP and UDP.
const POLICIES = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - {from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}
  - {from: [{namespaceSelector: {matchLabels: {team: ops}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: app}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: intruder, namespace: app}
spec:
  podSelector: {matchLabels: {app: intruder}}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: monitor, namespace: ops}
spec:
  podSelector: {matchLabels: {app: monitor}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: app}}, podSelector: {matchLabels: {app: client}}}], ports: [{port: 53, protocol: UDP}]}]
`;
const LATE_POD = `
apiVersion: v1
kind: Pod
metadata: {name: late, namespace: app, labels: {app: client}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.244.1.20}
`;

const started = Date.now();
const phases: string[] = [];
const phase = (what: string, t0: number) => phases.push(`${what} ${((Date.now() - t0) / 1000).toFixed(1)} s`);

/** A namespace's own objects, counters stripped: PCTL chains, rules and sets; and everything else. */
async function kernelState(netns: string, backend: 'nft' | 'legacy' = 'nft'): Promise<{ ours: string[]; foreign: string[]; sets: string[] }> {
  const save = (await runInNetns(netns, [`iptables-${backend}-save`], { context: `reading the rules of ${netns}` })).stdout;
  const lines = save.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/, ''));
  const sets = (await runInNetns(netns, ['ipset', 'list', '-n'], { context: `listing the ipsets of ${netns}` })).stdout.split('\n').filter(Boolean).sort();
  return { ours: lines.filter((l) => l.includes('PCTL')), foreign: lines.filter((l) => !l.includes('PCTL')), sets };
}

describe.runIf(kernelTestsEnabled())('the image, run as the DaemonSet runs it', () => {
  const name = `im${process.pid % 100000}`;
  /** Every container this file starts carries it, so afterAll finds them all. */
  const label = `policyctl.e2e=${name}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-im-'));
  const hostDirs = mkdtempSync(join(tmpdir(), 'pctl-image-host-'));
  let deployment: Deployment;
  let lab: LabState;
  let info: ClusterInfo;
  let legacyNs: TestNetns | undefined;

  /** `podman run -d` of the agent with the DaemonSet's command, env, capabilities and hostPath mounts. */
  async function startAgentContainer(o: { container: string; netns: string; node: string; socketDir: string; extraArgs: string[]; mounts: string[] }): Promise<void> {
    const { flags: mounts, skipped } = hostPathMounts(deployment, deployment.agent, { '/run/policyctl': o.socketDir });
    if (skipped.length) console.log(`image test: not mounted: ${skipped.join('; ')}`);
    // The DaemonSet's args, with the lab's source in place of the API server (--kube).
    const args = (deployment.agent.args ?? []).flatMap((a) => (a === '--kube' ? [] : [a.replace('$(NODE_NAME)', o.node)]));
    await podman(
      [
        'run', '-d', '--name', o.container, '--label', label,
        '--network', `ns:/run/netns/${o.netns}`,
        ...securityFlags(deployment.agent),
        ...mounts,
        ...o.mounts,
        ...envFlags(deployment.agent),
        '-e', `NODE_NAME=${o.node}`,
        ...(deployment.agent.command ? ['--entrypoint', JSON.stringify(deployment.agent.command)] : []),
        TEST_IMAGE,
        ...args,
        ...o.extraArgs,
      ],
      { context: `starting the agent container of node ${o.node}` },
    );
  }

  /** `policyctl agent --cleanup` from the image in a namespace, with the agent container's privileges. */
  async function cleanupFromImage(netns: string): Promise<string> {
    const { flags: mounts } = hostPathMounts(deployment, deployment.agent, { '/run/policyctl': join(hostDirs, 'cleanup-run') });
    const r = await podman(
      ['run', '--rm', '--label', label, '--network', `ns:/run/netns/${netns}`, ...securityFlags(deployment.agent), ...mounts, TEST_IMAGE, '--cleanup'],
      { context: `policyctl agent --cleanup from the image in ${netns}` },
    );
    return r.stdout + r.stderr;
  }

  const containerOf = (node: string) => `pctl-${name}-${node}`;
  const socketDir = (node: string) => dirname(findNode(lab, node).cniSocket!);

  beforeAll(async () => {
    deployment = loadDeployment();
    mkdirSync(join(hostDirs, 'cleanup-run'));
    let t0 = Date.now();
    const built = await buildImage();
    phase('image build', t0);
    console.log(`image test: scripts/build-image.sh took ${built.seconds.toFixed(1)} s: ${built.summary}`);
    t0 = Date.now();
    writeFileSync(join(dir, 'cluster.yaml'), CLUSTER);
    writeFileSync(join(dir, 'policies.yaml'), POLICIES);
    lab = (await labUp({ name, manifests: dir, stateDir, resyncInterval: '2s' })).lab;
    info = await readClusterInfo(lab);
    phase('lab up (agents as processes)', t0);
  }, 25 * 60_000);

  afterAll(async () => {
    await removeContainers(label).catch((e: unknown) => console.log(`image test: removing containers failed: ${(e as Error).message}`));
    if (info) stopWatcher(info);
    await destroyLab(name, { stateDir });
    legacyNs?.remove();
    for (const d of [dir, stateDir, hostDirs]) rmSync(d, { recursive: true, force: true });
    const left = await podman(['ps', '-a', '-q', '--filter', `label=${label}`]).catch(() => undefined);
    if (left?.stdout.trim()) console.log(`image test: containers left: ${left.stdout.trim()}`);
    console.log(`image test: ${((Date.now() - started) / 1000).toFixed(1)} s in all (${phases.join(', ')})`);
  }, 60_000);

  const table = async (): Promise<ReachResult[]> => {
    lab = await openLab(name, { stateDir });
    const { results } = await probeLab(lab);
    const { model } = await loadFolder(dir);
    const ports = [...new Map(results.map((r) => [`${r.port}/${r.protocol}`, { port: r.port, protocol: r.protocol }])).values()];
    expect(compareWithModel(results, reachTable(model, { ports }))).toEqual([]);
    return results;
  };

  it('agents from the image enforce the truth table the agents run as processes enforced', async () => {
    let t0 = Date.now();
    const byProcesses = await table();
    expect(byProcesses.some((r) => !r.allowed) && byProcesses.some((r) => r.allowed && r.from !== r.to)).toBe(true);
    // Stop the process agents (their rules stay), and clear the nodes with --cleanup from the
    // image, so the containers start from an empty kernel and must program everything.
    await Promise.all(
      lab.nodes.map(async (n) => {
        signalPids(await netnsPids(n.netns), 'SIGTERM');
        const end = Date.now() + 10_000;
        while ((await netnsPids(n.netns)).length > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
        expect(await netnsPids(n.netns), `processes left in node ${n.name}`).toEqual([]);
        expect((await kernelState(n.netns)).ours.length).toBeGreaterThan(0);
        expect(await cleanupFromImage(n.netns)).toMatch(/removed \d+ chains/);
        expect(await kernelState(n.netns)).toMatchObject({ ours: [], sets: [] });
      }),
    );
    phase('process agents stopped, nodes cleaned by the image', t0);
    // The stopped agents' status files are still fresh and say "applied": remove them, so that
    // waitApplied below waits for the containers' own reports, not the processes' last ones.
    for (const a of info.agents) rmSync(a.statusFile, { force: true });
    t0 = Date.now();
    for (const a of info.agents) {
      await startAgentContainer({
        container: containerOf(a.node),
        netns: findNode(lab, a.node).netns,
        node: a.node,
        socketDir: socketDir(a.node),
        // The lab's source and status file (in the lab's cluster folder), as startAgent passes them.
        extraArgs: ['--manifests', a.source, '--status-file', a.statusFile, '--resync-interval', a.resyncInterval, '--pod-cidr', a.podCIDR],
        mounts: ['-v', `${dirname(a.statusFile)}:${dirname(a.statusFile)}`],
      });
    }
    await waitApplied(lab, info, 60_000);
    phase('agent containers applied', t0);
    t0 = Date.now();
    const byContainers = await table();
    expect(byContainers).toEqual(byProcesses);
    phase('truth table from the containers', t0);
    for (const a of info.agents) {
      const logs = await podman(['logs', containerOf(a.node)]);
      expect(logs.stdout + logs.stderr).toContain('"backend":"nft"');
      // The drop log's reader (python3 in the image) bound the node's NFLOG group with the DaemonSet's capabilities.
      expect(logs.stdout + logs.stderr).toContain('drop log: reading the NFLOG group of our log rules');
      // The DaemonSet's --health-addr answers in the node's namespace.
      const ready = await execInNode(lab, a.node, [nodeBinary(), '-e', 'fetch("http://127.0.0.1:9102/readyz").then(async (r) => console.log(r.status, await r.text()))'], { reject: false });
      expect(ready.stdout).toMatch(/^200 /);
    }
  }, 180_000);

  it("a pod started later gets its CNI ADD answered by the container, through the socket folder it shares with the node", async () => {
    const t0 = Date.now();
    writeFileSync(join(dir, 'late.yaml'), LATE_POD);
    await waitApplied(lab, info, 60_000); // the lab's kubelet retries a failed ADD, so this also times out on one
    lab = await openLab(name, { stateDir });
    expect(lab.pods.map((p) => p.key)).toContain('app/late');
    const logs = await podman(['logs', containerOf('n1')]);
    const adds = (logs.stdout + logs.stderr).split('\n').filter((l) => l.includes('"command":"ADD"') && l.includes('app/late'));
    expect(adds.some((l) => !l.includes('failed')), `the container's ADD lines for app/late: ${adds.join('\n')}`).toBe(true);
    await table();
    phase('pod added through the container', t0);
  }, 120_000);

  it('install-cni from the image installs a plugin that runs on the host and asks the agent in the container', async () => {
    const t0 = Date.now();
    const binDir = join(hostDirs, 'opt-cni-bin');
    const netDir = join(hostDirs, 'etc-cni-net.d');
    const cfgDir = join(hostDirs, 'etc-kube-flannel');
    for (const d of [binDir, netDir, cfgDir]) mkdirSync(d);
    // The ConfigMap volume of the install-cni init container.
    for (const [k, v] of Object.entries(deployment.flannelConfig.data!)) writeFileSync(join(cfgDir, k), v);
    const mountsOf = (c: typeof deployment.installCni, paths: Record<string, string>) =>
      (c.volumeMounts ?? []).flatMap((m) => {
        const host = paths[m.mountPath!.replace(/\/$/, '')];
        if (!host) throw new Error(`init container ${c.name} mounts ${m.mountPath}, which the test does not provide`);
        return ['-v', `${host}:${m.mountPath}`];
      });
    const initFlags = (c: typeof deployment.installCni) => ['--rm', '--label', label, '--network', 'none', ...securityFlags(c), '--entrypoint', JSON.stringify(c.command ?? []), TEST_IMAGE, ...(c.args ?? [])];

    // install-policyctl-cni, with its command and mounts from the DaemonSet; it needs no capability.
    const install = await podman(['run', ...mountsOf(deployment.installPolicyCni, { '/opt/cni/bin': binDir }), ...initFlags(deployment.installPolicyCni)], { context: 'install-policyctl-cni from the image' });
    expect(install.stdout).toMatch(/^installed \/opt\/cni\/bin\/policyctl-cni /);
    const wrapper = join(binDir, 'policyctl-cni');
    expect(statSync(wrapper).mode & 0o111).not.toBe(0);
    const [version] = readdirSync(join(binDir, 'policyctl-cni.d'));
    const versionDir = join(binDir, 'policyctl-cni.d', version!);
    expect(readdirSync(versionDir).sort()).toEqual(['cache', 'node', 'package.json', 'plugin.mjs', 'policyctl-cni', 'policyctl-cni.mjs']);
    // The compile cache was warmed at install, inside the init container, for the path the host runs.
    expect(readdirSync(join(versionDir, 'cache')).length).toBeGreaterThan(0);
    // What the runtime runs is a relative link to the image's prebuilt front end (the image has
    // no compiler: a missing /app/lib/policyctl-cni would have left the sh wrapper of the Node
    // plugin alone). Relative, so the host's mount point of /opt/cni/bin does not matter.
    expect(lstatSync(wrapper).isSymbolicLink()).toBe(true);
    expect(readlinkSync(wrapper)).toBe(`policyctl-cni.d/${version}/policyctl-cni`);
    // A static ELF executable: no program interpreter, so it runs whatever the host's libc.
    const frontEnd = readFileSync(join(versionDir, 'policyctl-cni'));
    expect(elfInterpreter(frontEnd)).toBeNull();
    expect(statSync(join(versionDir, 'policyctl-cni')).mode & 0o111).not.toBe(0);

    // install-cni copies the ConfigMap's conflist (flannel's image does it in the cluster; no
    // registry serves it here, so the same command runs in ours, which has cp).
    await podman(['run', ...mountsOf(deployment.installCni, { '/etc/cni/net.d': netDir, '/etc/kube-flannel': cfgDir }), ...initFlags(deployment.installCni)], { context: 'install-cni (the conflist copy) in the image' });
    const conflists = readdirSync(netDir);
    expect(conflists).toEqual(['10-flannel.conflist']);
    const conflist = JSON.parse(readFileSync(join(netDir, conflists[0]!), 'utf8')) as { cniVersion: string; plugins: Array<{ type: string; socket?: string }> };
    expect(conflist.plugins.at(-1)).toMatchObject({ type: 'policyctl-cni', socket: '/run/policyctl/cni.sock' });
    expect(readdirSync(binDir)).toContain('policyctl-cni');

    // The installed plugin, run on this machine as the runtime runs it: the front end, through
    // the link, in the node's network namespace (the socket is a file: any namespace reaches it).
    const n1 = findNode(lab, 'n1');
    const call = (argv: string[]) => (cmd: string, conf: object, env: Record<string, string> = {}) =>
      run(['ip', 'netns', 'exec', n1.netns, ...argv], {
        env: { CNI_COMMAND: cmd, CNI_IFNAME: 'eth0', CNI_PATH: binDir, ...env },
        input: JSON.stringify({ cniVersion: conflist.cniVersion, name: 'cbr0', type: 'policyctl-cni', timeoutSeconds: 10, socket: n1.cniSocket, ...conf }),
        reject: false,
      });
    const plugin = call([wrapper]);
    // The Node plugin beside it, with the image's Node: the front end's fallback.
    const nodePlugin = call([join(versionDir, 'node'), join(versionDir, 'policyctl-cni.mjs')]);
    for (const p of [plugin, nodePlugin]) {
      const v = await p('VERSION', {});
      expect(v.exitCode, v.stderr).toBe(0);
      expect(JSON.parse(v.stdout)).toMatchObject({ supportedVersions: expect.arrayContaining(['1.0.0']) });
    }
    // CHECK of a pod of node n1 against n1's agent (the container), through the shared folder.
    const web = findPod(lab, 'app/web');
    const checkArgs = (pod: typeof web) =>
      [{ prevResult: { cniVersion: conflist.cniVersion, ips: [{ address: `${pod.ip}/24` }] } }, {
        CNI_CONTAINERID: pod.containerId,
        CNI_NETNS: `/var/run/netns/${pod.netns}`,
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name}`,
      }] as const;
    for (const p of [plugin, nodePlugin]) {
      const ok = await p('CHECK', ...checkArgs(web));
      expect(ok.exitCode, `${ok.stdout}${ok.stderr}`).toBe(0);
      // A pod of node n2 asked of n1's agent: the answer is the agent's refusal, not a transport error.
      const other = await p('CHECK', ...checkArgs(findPod(lab, 'app/db')));
      expect(other.exitCode).not.toBe(0);
      expect(JSON.parse(other.stdout).msg).not.toMatch(/does not exist|ECONNREFUSED|ENOENT/);
    }
    // No agent on the socket: the front end runs the Node plugin beside it (found through
    // /proc/self/exe, past the link), whose CNI error names the missing socket.
    const gone = join(hostDirs, 'no-agent', 'cni.sock');
    const [front, fallback] = await Promise.all([plugin, nodePlugin].map((p) => p('CHECK', { ...checkArgs(web)[0], socket: gone }, checkArgs(web)[1])));
    for (const r of [front!, fallback!]) {
      expect(r.exitCode).not.toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ code: 11, msg: expect.stringContaining(`${gone} does not exist`) });
    }
    expect(front!.stdout).toBe(fallback!.stdout);
    phase('install-cni and the installed plugin', t0);
  }, 120_000);

  it('SIGTERM to the container (PID 1) stops the agent and leaves every rule and set in place', async () => {
    const t0 = Date.now();
    const before = await Promise.all(lab.nodes.map((n) => kernelState(n.netns)));
    expect(before.every((s) => s.ours.length > 0 && s.sets.length > 0)).toBe(true);
    const denied = byKey(await table()).filter((r) => !r.allowed);
    expect(denied.length).toBeGreaterThan(0);
    await Promise.all(
      lab.nodes.map(async (n) => {
        await podman(['kill', '--signal', 'TERM', containerOf(n.name)]);
        const code = (await podman(['wait', containerOf(n.name)], { timeoutMs: 30_000 })).stdout.trim();
        expect(code, `exit code of the agent container of ${n.name}`).toBe('0');
        const logs = await podman(['logs', containerOf(n.name)]);
        expect(logs.stdout + logs.stderr).toContain('"signal":"SIGTERM"');
      }),
    );
    const after = await Promise.all(lab.nodes.map((n) => kernelState(n.netns)));
    expect(after).toEqual(before);
    // And they still act: what was denied stays denied with no agent running.
    const now = byKey((await probeLab(lab)).results);
    expect(denied.filter((r) => now.find((x) => key(x) === key(r))?.allowed !== false)).toEqual([]);
    phase('SIGTERM', t0);
  }, 120_000);

  it('agent --cleanup from the image removes every chain, jump and set of ours, and nothing else', async () => {
    const t0 = Date.now();
    await Promise.all(
      lab.nodes.map(async (n) => {
        const before = await kernelState(n.netns);
        expect(await cleanupFromImage(n.netns)).toMatch(/removed \d+ chains, \d+ hooks and \d+ ipsets of ours/);
        const after = await kernelState(n.netns);
        expect(after).toEqual({ ours: [], foreign: before.foreign, sets: [] });
        expect(after.foreign.join('\n')).toContain('FLANNEL-FWD'); // flannel's and kube-proxy's rules stay
      }),
    );
    phase('cleanup', t0);
  }, 60_000);

  it('on a node whose rules are in the legacy backend, the image programs legacy iptables with NET_ADMIN and NET_RAW only', async () => {
    const t0 = Date.now();
    legacyNs = createNetns('pt');
    const ns = legacyNs;
    ns.sh('sysctl -q -w net.bridge.bridge-nf-call-iptables=1');
    // Someone else's rule in legacy iptables (kube-proxy on a legacy node): the agent must pick legacy.
    ns.sh("iptables-legacy -A FORWARD -m comment --comment 'legacy node' -j ACCEPT");
    const src = join(hostDirs, 'legacy-source');
    const run_ = join(hostDirs, 'legacy-run');
    const status = join(hostDirs, 'legacy-status');
    for (const d of [src, run_, status]) mkdirSync(d);
    const objects = (parse(CLUSTER) as { items: Array<{ kind: string; spec?: { nodeName?: string } }> }).items.filter((o) => o.kind !== 'Pod' || o.spec?.nodeName === 'n1');
    writeFileSync(join(src, 'cluster.yaml'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
    writeFileSync(join(src, 'policies.yaml'), POLICIES);
    const container = `pctl-${name}-legacy`;
    await startAgentContainer({
      container,
      netns: ns.name,
      node: 'n1',
      socketDir: run_,
      extraArgs: ['--manifests', '/source', '--status-file', '/status/agent.json', '--resync-interval', '2s'],
      mounts: ['-v', `${src}:/source:ro`, '-v', `${status}:/status`],
    });
    const end = Date.now() + 30_000;
    let last = '';
    while (Date.now() < end) {
      try {
        last = readFileSync(join(status, 'agent.json'), 'utf8');
        if ((JSON.parse(last) as { ready: boolean }).ready) break;
      } catch {
        /* not written yet */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const logs = async () => {
      const l = await podman(['logs', container]);
      return l.stdout + l.stderr;
    };
    expect((JSON.parse(last || '{}') as { ready?: boolean }).ready, `agent status: ${last}\n${await logs()}`).toBe(true);
    expect(await logs()).toContain('"backend":"legacy"');
    const legacy = await kernelState(ns.name, 'legacy');
    expect(legacy.ours.length).toBeGreaterThan(0);
    expect(legacy.foreign).toContain('-A FORWARD -m comment --comment "legacy node" -j ACCEPT');
    expect(ns.sh('iptables-legacy -S FORWARD').split('\n')[1]).toContain('-j PCTL-FORWARD');
    expect(legacy.sets).toContain('PCTL-programmed');
    expect((await kernelState(ns.name, 'nft')).ours).toEqual([]);
    // SIGTERM leaves the legacy rules; --cleanup from the image removes them.
    await podman(['kill', '--signal', 'TERM', container]);
    expect((await podman(['wait', container], { timeoutMs: 30_000 })).stdout.trim()).toBe('0');
    expect(await kernelState(ns.name, 'legacy')).toEqual(legacy);
    expect(await cleanupFromImage(ns.name)).toMatch(/removed \d+ chains/);
    expect(await kernelState(ns.name, 'legacy')).toEqual({ ours: [], foreign: legacy.foreign, sets: [] });
    phase('legacy backend', t0);
  }, 120_000);
});

const key = (r: ReachResult) => `${r.from}|${r.to}|${r.port}/${r.protocol}`;
const byKey = (rs: ReachResult[]) => [...rs].sort((a, b) => (key(a) < key(b) ? -1 : 1));

/**
 * The program interpreter (PT_INTERP) an ELF executable names, null for a static one; throws when
 * the bytes are not a 64-bit little-endian ELF executable.
 */
function elfInterpreter(elf: Buffer): string | null {
  if (elf.subarray(0, 4).toString('latin1') !== '\x7fELF') throw new Error('not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error(`not a 64-bit little-endian ELF file (class ${elf[4]}, data ${elf[5]})`);
  const type = elf.readUInt16LE(16);
  if (type !== 2 && type !== 3) throw new Error(`not an ELF executable (e_type ${type})`);
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== 3) continue; // PT_INTERP
    const offset = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 32));
    return elf.subarray(offset, offset + size).toString('latin1').replace(/\0+$/, '');
  }
  return null;
}
