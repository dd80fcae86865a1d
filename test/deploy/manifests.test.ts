// deploy/ is never applied or built here (no cluster, no container engine), so these tests
// read the manifests and the Dockerfile and check the fields a real node depends on. Every
// check is a function in ./checks.ts returning problems; the mutation table at the end shows
// that each one rejects a broken copy, so a check that silently passes everything would fail.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import {
  type ClusterRole,
  type ClusterRoleBinding,
  type ConfigMap,
  type Container,
  type DaemonSet,
  type K8sObject,
  type PodSpec,
  AGENT_CONTAINER,
  FLANNEL_CONFIGMAP,
  FLANNEL_CONTAINER,
  checkAgentContainer,
  checkBinding,
  checkDaemonSet,
  checkDockerfile,
  checkDockerignore,
  checkFlannel,
  checkImageVersion,
  checkKinds,
  checkPolicyCni,
  checkRbac,
  dockerStages,
  entrypointOf,
  imageInstructions,
  only,
  parseDockerfile,
  parseManifestFile,
  splitHostPort,
} from './checks.ts';

const root = new URL('../../', import.meta.url).pathname;
const deployDir = join(root, 'deploy');

// kustomization.yaml is kustomize's, not a Kubernetes object (test/deploy/kustomize.test.ts).
const manifestFiles = readdirSync(deployDir)
  .filter((f) => /\.ya?ml$/.test(f) && f !== 'kustomization.yaml')
  .sort();
const loaded = manifestFiles.map((f) => parseManifestFile(`deploy/${f}`, readFileSync(join(deployDir, f), 'utf8')));
const objects: K8sObject[] = loaded.flatMap((l) => l.docs.map((d) => d.object));
const dockerfile = readFileSync(join(deployDir, 'Dockerfile'), 'utf8');
const dockerignore = readFileSync(join(deployDir, 'Dockerfile.dockerignore'), 'utf8');
const entrypoint = entrypointOf(parseDockerfile(dockerfile)) ?? [];
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

// Accessors for a copy of the objects, for the mutation tests.
const ds = (m: K8sObject[]) => only<DaemonSet>(m, 'DaemonSet')!;
const pod = (m: K8sObject[]): PodSpec => ds(m).spec!.template!.spec!;
const container = (m: K8sObject[], name: string): Container => pod(m).containers!.find((c) => c.name === name)!;
const agent = (m: K8sObject[]) => container(m, AGENT_CONTAINER);
const flannel = (m: K8sObject[]) => container(m, FLANNEL_CONTAINER);
const role = (m: K8sObject[]) => only<ClusterRole>(m, 'ClusterRole')!;
const binding = (m: K8sObject[]) => only<ClusterRoleBinding>(m, 'ClusterRoleBinding')!;
const flannelCfg = (m: K8sObject[]) => m.find((o): o is ConfigMap => o.kind === 'ConfigMap' && o.metadata?.name === FLANNEL_CONFIGMAP)!;
const mount = (c: Container, path: string) => c.volumeMounts!.find((v) => v.mountPath === path)!;
const setArg = (c: Container, flag: string, value: string) => {
  const i = c.args!.indexOf(flag);
  c.args![i + 1] = value;
};

/** Every check over the manifest objects, with the inputs the tests use. */
const manifestChecks: Record<string, (m: K8sObject[]) => string[]> = {
  kinds: checkKinds,
  binding: checkBinding,
  rbac: checkRbac,
  daemonSet: checkDaemonSet,
  agent: (m) => checkAgentContainer(m, entrypoint),
  flannel: checkFlannel,
  policyCni: checkPolicyCni,
  imageVersion: (m) => checkImageVersion(m, version),
};

describe('deploy/*.yaml', () => {
  it('has manifest files and every document parses without errors or warnings', () => {
    expect(manifestFiles).toContain('policyctl-canal.yaml');
    expect(loaded.flatMap((l) => l.problems)).toEqual([]);
    expect(objects.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'ServiceAccount']);
  });

  for (const [name, check] of Object.entries(manifestChecks)) {
    it(`passes the ${name} check`, () => {
      expect(check(objects)).toEqual([]);
    });
  }

  it('grants the service account read access to the four sources and nothing that writes but flannel’s node status', () => {
    const rules = role(objects).rules!;
    const writes = rules.filter((r) => r.verbs!.some((v) => !['get', 'list', 'watch'].includes(v)));
    expect(writes).toEqual([{ apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] }]);
  });

  it('runs the agent with the node name from the downward API and health on the probed port', () => {
    const c = agent(objects);
    expect([...c.command!, ...c.args!]).toEqual(['node', '/app/bin/policyctl.js', 'agent', '--node', '$(NODE_NAME)', '--kube', '--health-addr', ':9102', '--cni-socket', '/run/policyctl/cni.sock', '--set-bridge-nf']);
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(c.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 9102 });
    expect(c.ports).toContainEqual({ name: 'metrics', containerPort: 9102, protocol: 'TCP' });
  });

  it('reads the flannel ConfigMap the way flanneld and the CNI runtime will', () => {
    const data = flannelCfg(objects).data!;
    expect(JSON.parse(data['net-conf.json']!)).toEqual({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
    const conflist = JSON.parse(data['cni-conf.json']!) as { cniVersion: string; plugins: { type: string; delegate?: unknown }[] };
    expect(conflist.cniVersion).toBe('1.0.0');
    expect(conflist.plugins.map((p) => p.type)).toEqual(['flannel', 'portmap', 'policyctl-cni']);
    expect(conflist.plugins[0]!.delegate).toEqual({ hairpinMode: true, isDefaultGateway: true });
    expect(conflist.plugins[2]).toEqual({ type: 'policyctl-cni', socket: '/run/policyctl/cni.sock', timeoutSeconds: 10 });
  });

  it('installs policyctl-cni with the policyctl CLI the image holds', async () => {
    const init = pod(objects).initContainers!.find((c) => c.name === 'install-policyctl-cni')!;
    expect([...init.command!, ...init.args!]).toEqual(['node', '/app/bin/policyctl.js', 'install-cni', '--bin-dir', '/opt/cni/bin']);
    let help = '';
    const io = { out: (t: string) => void (help += t), err: (t: string) => void (help += t), readStdin: async () => '' };
    expect(await main(['install-cni', '--help'], io)).toBe(0);
    expect(help).toContain('--bin-dir');
  });
});

describe('the DaemonSet and the agent CLI agree', () => {
  // Flags the manifest passes that `policyctl agent` does not define yet. Remove a flag from
  // here once `policyctl agent --help` lists it.
  const PENDING_FLAGS = new Set<string>([]);

  it('every flag passed to policyctl agent is one the CLI defines', async () => {
    let help = '';
    const io = { out: (s: string) => void (help += s), err: (s: string) => void (help += s), readStdin: async () => '' };
    expect(await main(['agent', '--help'], io)).toBe(0);
    const known = new Set([...help.matchAll(/^\s+(?:-\w, )?(--[a-z][\w-]*)/gm)].map((m) => m[1]));
    expect(known).toContain('--node'); // the help text was read at all
    const flags = agent(objects).args!.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]!);
    expect(flags.filter((f) => !known.has(f) && !PENDING_FLAGS.has(f))).toEqual([]);
  });
});

describe('deploy/Dockerfile', () => {
  it('passes the Dockerfile check', () => {
    expect(checkDockerfile(dockerfile)).toEqual([]);
  });

  it('is what the DaemonSet runs: its ENTRYPOINT is the policyctl container command', () => {
    expect(entrypoint).toEqual(['node', '/app/bin/policyctl.js', 'agent']);
    expect(agent(objects).command).toEqual(entrypoint);
  });

  it('has an allow-list ignore file covering every COPY', () => {
    expect(checkDockerignore(dockerignore, dockerfile)).toEqual([]);
  });

  it('joins continuation lines and skips comments', () => {
    const ins = parseDockerfile('# c\nFROM node:24-bookworm-slim\nRUN a \\\n  # inner\n  && b\nENTRYPOINT ["node", "x"]\n');
    expect(ins).toEqual([
      { keyword: 'FROM', args: 'node:24-bookworm-slim' },
      { keyword: 'RUN', args: 'a  && b' },
      { keyword: 'ENTRYPOINT', args: '["node", "x"]' },
    ]);
  });
});

describe('Dockerfile stages', () => {
  const multi = [
    'ARG BASE=node:24-bookworm-slim',
    'FROM ${BASE} AS build',
    'RUN cc -o /out/x x.c',
    'ENTRYPOINT ["not", "this"]',
    'FROM --platform=linux/amd64 ${BASE} AS app',
    'WORKDIR /app',
    'COPY --from=build /out/x /app/lib/x',
    'ENTRYPOINT ["node", "x"]',
    'FROM app',
    'ENV A=1',
  ].join('\n');

  it('splits stages and takes the image from the last one and the stages it is built on', () => {
    const { globalArgs, stages } = dockerStages(parseDockerfile(multi));
    expect(globalArgs).toEqual([{ keyword: 'ARG', args: 'BASE=node:24-bookworm-slim' }]);
    expect(stages.map((s) => [s.index, s.name, s.base, s.instructions.length])).toEqual([
      [0, 'build', '${BASE}', 2],
      [1, 'app', '${BASE}', 3],
      [2, undefined, 'app', 1],
    ]);
    // The build stage's ENTRYPOINT is not the image's; the last stage inherits app's.
    expect(imageInstructions(parseDockerfile(multi)).map((i) => i.keyword)).toEqual(['WORKDIR', 'COPY', 'ENTRYPOINT', 'ENV']);
    expect(entrypointOf(parseDockerfile(multi))).toEqual(['node', 'x']);
    expect(entrypointOf(parseDockerfile(multi.replace(/\nFROM app\nENV A=1$/, '\nFROM ${BASE}')))).toBeUndefined();
  });

  it('checks the image, not a build stage: its base, its packages and its sources', () => {
    const problems = checkDockerfile(multi);
    // The build stage installs nothing and copies nothing; what the image lacks is named.
    expect(problems).toContainEqual('no RUN apt-get install in the image');
    expect(problems).toContainEqual('the image does not COPY src');
    expect(problems).not.toContainEqual(expect.stringMatching(/base image/));
    // An image built on a stage whose base is not Node 24 is caught through the chain.
    expect(checkDockerfile(multi.replace('FROM --platform=linux/amd64 ${BASE} AS app', 'FROM debian:bookworm AS app'))).toContainEqual(expect.stringMatching(/base image must be Node 24 .*debian:bookworm/));
  });

  it('lets COPY --from sources through the ignore file check, and folders under a re-included one', () => {
    const text = 'FROM node:24\nCOPY src/cni/shim/ ./x/\nCOPY --from=0 /out/x /y\n';
    expect(checkDockerignore('*\n!src/\n', text)).toEqual([]);
    expect(checkDockerignore('*\n!source/\n', text)).toEqual(['the Dockerfile copies src/cni/shim, which the ignore file does not re-include']);
  });
});

describe('helpers', () => {
  it('splits HOST:PORT addresses', () => {
    expect(splitHostPort(':9102')).toEqual({ host: '', port: 9102 });
    expect(splitHostPort('0.0.0.0:80')).toEqual({ host: '0.0.0.0', port: 80 });
    expect(splitHostPort('[::]:9102')).toEqual({ host: '[::]', port: 9102 });
    expect(splitHostPort('9102')).toBeUndefined();
    expect(splitHostPort(':70000')).toBeUndefined();
  });

  it('reports YAML syntax errors and non-mapping documents', () => {
    expect(parseManifestFile('x.yaml', 'a: [1,\n').problems).not.toEqual([]);
    expect(parseManifestFile('x.yaml', '---\n- 1\n').problems).toEqual([expect.stringMatching(/expected a mapping/)]);
    expect(parseManifestFile('x.yaml', '---\nkind: A\n---\n').docs).toHaveLength(1);
  });
});

// Each row breaks one thing in a deep copy and names the check that must notice it, with a
// pattern its problem must match. The unbroken objects pass every check (tests above).
interface Mutation {
  name: string;
  check: keyof typeof manifestChecks;
  mutate: (m: K8sObject[]) => void;
  expect: RegExp;
}

const mutations: Mutation[] = [
  // kinds
  { name: 'the ServiceAccount is missing', check: 'kinds', mutate: (m) => void m.splice(m.findIndex((o) => o.kind === 'ServiceAccount'), 1), expect: /expected one ServiceAccount, found 0/ },
  { name: 'the DaemonSet uses a removed apiVersion', check: 'kinds', mutate: (m) => void (ds(m).apiVersion = 'extensions/v1beta1'), expect: /apiVersion must be apps\/v1/ },
  { name: 'the ConfigMap is in another namespace', check: 'kinds', mutate: (m) => void (flannelCfg(m).metadata!.namespace = 'default'), expect: /namespace must be kube-system/ },
  // binding
  { name: 'the binding names another service account', check: 'binding', mutate: (m) => void (binding(m).subjects![0]!.name = 'flannel'), expect: /subjects do not include ServiceAccount kube-system\/policyctl/ },
  { name: 'the binding refers to another role', check: 'binding', mutate: (m) => void (binding(m).roleRef!.name = 'cluster-admin'), expect: /roleRef must be ClusterRole "policyctl"/ },
  { name: 'the DaemonSet runs as the default account', check: 'binding', mutate: (m) => void delete pod(m).serviceAccountName, expect: /sets no serviceAccountName/ },
  // rbac
  { name: 'a wildcard verb', check: 'rbac', mutate: (m) => void (role(m).rules![0]!.verbs = ['*']), expect: /wildcard/ },
  { name: 'a wildcard resource', check: 'rbac', mutate: (m) => void role(m).rules!.push({ apiGroups: [''], resources: ['*'], verbs: ['get'] }), expect: /wildcard/ },
  { name: 'read access to secrets', check: 'rbac', mutate: (m) => void role(m).rules![0]!.resources!.push('secrets'), expect: /secrets/ },
  { name: 'watch on networkpolicies dropped', check: 'rbac', mutate: (m) => void (role(m).rules![2]!.verbs = ['get', 'list']), expect: /missing watch on networking\.k8s\.io\/networkpolicies/ },
  { name: 'networkpolicies in the wrong API group', check: 'rbac', mutate: (m) => void (role(m).rules![2]!.apiGroups = ['extensions']), expect: /missing get, list, watch on networking\.k8s\.io\/networkpolicies/ },
  { name: 'watch on clusternetworkpolicies dropped', check: 'rbac', mutate: (m) => void (role(m).rules!.find((r) => r.resources?.includes('clusternetworkpolicies'))!.verbs = ['get', 'list']), expect: /missing watch on policy\.networking\.k8s\.io\/clusternetworkpolicies/ },
  { name: 'a write verb the agent does not need', check: 'rbac', mutate: (m) => void role(m).rules![0]!.verbs!.push('delete'), expect: /more than needed: delete on \/pods/ },
  { name: 'flannel cannot patch node status', check: 'rbac', mutate: (m) => void role(m).rules!.splice(1, 1), expect: /missing patch on \/nodes\/status/ },
  // daemonSet
  { name: 'hostNetwork off', check: 'daemonSet', mutate: (m) => void (pod(m).hostNetwork = false), expect: /hostNetwork must be true/ },
  { name: 'no priority class', check: 'daemonSet', mutate: (m) => void delete pod(m).priorityClassName, expect: /priorityClassName must be system-node-critical/ },
  { name: 'NoExecute taints not tolerated', check: 'daemonSet', mutate: (m) => void (pod(m).tolerations = pod(m).tolerations!.filter((t) => t.effect !== 'NoExecute')), expect: /do not cover every NoExecute taint/ },
  { name: 'a NoSchedule toleration narrowed to one key', check: 'daemonSet', mutate: (m) => void (pod(m).tolerations![0]!.key = 'node-role.kubernetes.io/control-plane'), expect: /do not cover every NoSchedule taint/ },
  { name: 'a mount of an undefined volume', check: 'daemonSet', mutate: (m) => void agent(m).volumeMounts!.push({ name: 'nope', mountPath: '/x' }), expect: /mounts "nope" at \/x, which is not a defined volume/ },
  { name: 'the selector does not match the template', check: 'daemonSet', mutate: (m) => void (ds(m).spec!.selector!.matchLabels = { app: 'other' }), expect: /selector app=other does not match/ },
  { name: 'an unpinned image', check: 'daemonSet', mutate: (m) => void (flannel(m).image = 'docker.io/flannel/flannel:latest'), expect: /no pinned tag/ },
  { name: 'surge-only rolling update', check: 'daemonSet', mutate: (m) => void (ds(m).spec!.updateStrategy = { type: 'OnDelete' }), expect: /updateStrategy must be RollingUpdate/ },
  // agent
  { name: 'NET_RAW dropped', check: 'agent', mutate: (m) => void (agent(m).securityContext!.capabilities!.add = ['NET_ADMIN']), expect: /lacks capability NET_RAW/ },
  { name: 'privileged', check: 'agent', mutate: (m) => void (agent(m).securityContext!.privileged = true), expect: /must not be privileged/ },
  { name: 'writable root filesystem', check: 'agent', mutate: (m) => void delete agent(m).securityContext!.readOnlyRootFilesystem, expect: /must set readOnlyRootFilesystem: true, got undefined/ },
  { name: 'privilege escalation allowed', check: 'agent', mutate: (m) => void (agent(m).securityContext!.allowPrivilegeEscalation = true), expect: /must set allowPrivilegeEscalation: false, got true/ },
  { name: 'SYS_ADMIN added', check: 'agent', mutate: (m) => void agent(m).securityContext!.capabilities!.add!.push('SYS_ADMIN'), expect: /beyond NET_ADMIN and NET_RAW: \["SYS_ADMIN"\]/ },
  { name: '/lib/modules writable', check: 'agent', mutate: (m) => void (mount(agent(m), '/lib/modules').readOnly = false), expect: /must mount \/lib\/modules read-only/ },
  { name: 'the xtables lock as a directory', check: 'agent', mutate: (m) => void (pod(m).volumes!.find((v) => v.name === 'xtables-lock')!.hostPath!.type = 'DirectoryOrCreate'), expect: /must have type FileOrCreate/ },
  { name: 'the xtables lock not mounted', check: 'agent', mutate: (m) => void (agent(m).volumeMounts = agent(m).volumeMounts!.filter((v) => v.mountPath !== '/run/xtables.lock')), expect: /does not mount \/run\/xtables\.lock/ },
  { name: 'the readiness probe on another port', check: 'agent', mutate: (m) => void (agent(m).readinessProbe!.httpGet!.port = 9103), expect: /readinessProbe port 9103 is not the --health-addr port 9102/ },
  { name: 'the readiness probe on /healthz', check: 'agent', mutate: (m) => void (agent(m).readinessProbe!.httpGet!.path = '/healthz'), expect: /readinessProbe path must be \/readyz/ },
  { name: 'health served on another port than declared', check: 'agent', mutate: (m) => setArg(agent(m), '--health-addr', ':9200'), expect: /declares no TCP port 9200/ },
  { name: 'health bound to loopback', check: 'agent', mutate: (m) => setArg(agent(m), '--health-addr', '127.0.0.1:9102'), expect: /does not listen on all addresses/ },
  { name: 'NODE_NAME from the pod name', check: 'agent', mutate: (m) => void (agent(m).env!.find((e) => e.name === 'NODE_NAME')!.valueFrom!.fieldRef!.fieldPath = 'metadata.name'), expect: /must come from fieldRef spec\.nodeName/ },
  { name: '--node given a variable that is not defined', check: 'agent', mutate: (m) => setArg(agent(m), '--node', '$(MY_NODE)'), expect: /refers to \$\(MY_NODE\), which its env does not define/ },
  { name: '--node given a literal', check: 'agent', mutate: (m) => setArg(agent(m), '--node', 'node-1'), expect: /--node must be \$\(NODE_NAME\)/ },
  { name: 'the command drifts from the image', check: 'agent', mutate: (m) => void (agent(m).command = ['node', 'bin/policyctl.js', 'agent']), expect: /differs from the image's ENTRYPOINT/ },
  { name: 'no memory limit', check: 'agent', mutate: (m) => void delete agent(m).resources!.limits, expect: /no memory limit/ },
  // flannel
  { name: 'flannel without --kube-subnet-mgr', check: 'flannel', mutate: (m) => void (flannel(m).args = ['--ip-masq']), expect: /not run with --kube-subnet-mgr/ },
  { name: 'the vxlan backend', check: 'flannel', mutate: (m) => void (flannelCfg(m).data!['net-conf.json'] = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'), expect: /Backend\.Type must be host-gw, got "vxlan"/ },
  { name: 'hairpinMode off', check: 'flannel', mutate: (m) => void (flannelCfg(m).data!['cni-conf.json'] = flannelCfg(m).data!['cni-conf.json']!.replace('"hairpinMode": true', '"hairpinMode": false')), expect: /hairpinMode must be true, got false/ },
  { name: 'isDefaultGateway missing', check: 'flannel', mutate: (m) => void (flannelCfg(m).data!['cni-conf.json'] = flannelCfg(m).data!['cni-conf.json']!.replace('"isDefaultGateway": true', '"ipMasq": false')), expect: /isDefaultGateway must be true/ },
  { name: 'the conflist is not JSON', check: 'flannel', mutate: (m) => void (flannelCfg(m).data!['cni-conf.json'] += ','), expect: /cni-conf\.json is not JSON/ },
  { name: 'the conflist installed as .conf', check: 'flannel', mutate: (m) => void (pod(m).initContainers!.find((c) => c.name === 'install-cni')!.args![2] = '/etc/cni/net.d/10-flannel.conf'), expect: /install-cni must copy .* to \/etc\/cni\/net\.d\/10-flannel\.conflist/ },
  // policyCni
  { name: 'policyctl-cni not last in the chain', check: 'policyCni', mutate: (m) => void (flannelCfg(m).data!['cni-conf.json'] = JSON.stringify({ ...JSON.parse(flannelCfg(m).data!['cni-conf.json']!), plugins: [...(JSON.parse(flannelCfg(m).data!['cni-conf.json']!) as { plugins: unknown[] }).plugins].reverse() })), expect: /the last plugin must be policyctl-cni/ },
  { name: 'a cniVersion whose DEL has no prevResult', check: 'policyCni', mutate: (m) => void (flannelCfg(m).data!['cni-conf.json'] = flannelCfg(m).data!['cni-conf.json']!.replace('"1.0.0"', '"0.3.1"')), expect: /cniVersion must be 0\.4\.0 or later/ },
  { name: 'no timeout', check: 'policyCni', mutate: (m) => void (flannelCfg(m).data!['cni-conf.json'] = flannelCfg(m).data!['cni-conf.json']!.replace('"timeoutSeconds": 10', '"timeoutSeconds": 0')), expect: /timeoutSeconds must be a positive number/ },
  { name: 'the agent serves another socket', check: 'policyCni', mutate: (m) => setArg(agent(m), '--cni-socket', '/var/run/x.sock'), expect: /is not the conflist's socket/ },
  { name: 'the socket folder not shared with the host', check: 'policyCni', mutate: (m) => void (agent(m).volumeMounts = agent(m).volumeMounts!.filter((v) => v.mountPath !== '/run/policyctl')), expect: /does not mount \/run\/policyctl/ },
  { name: 'the plugin installed after the conflist', check: 'policyCni', mutate: (m) => void pod(m).initContainers!.push(pod(m).initContainers!.splice(pod(m).initContainers!.findIndex((c) => c.name === 'install-policyctl-cni'), 1)[0]!), expect: /must run before install-cni/ },
  { name: 'the plugin from another image', check: 'policyCni', mutate: (m) => void (pod(m).initContainers!.find((c) => c.name === 'install-policyctl-cni')!.image = 'registry.example.com/policyctl:0.0.1'), expect: /must run the policyctl image/ },
  { name: 'the flannel config from another ConfigMap', check: 'flannel', mutate: (m) => void (pod(m).volumes!.find((v) => v.name === 'flannel-cfg')!.configMap!.name = 'kube-flannel-cfg'), expect: /must come from ConfigMap policyctl-flannel-cfg/ },
  // image version
  { name: 'an image tag behind package.json', check: 'imageVersion', mutate: (m) => void (agent(m).image = 'registry.example.com/policyctl:0.0.9'), expect: /not tagged with package\.json's version/ },
];

describe('each check rejects a broken copy', () => {
  it.each(mutations)('$check: $name', ({ check, mutate, expect: pattern }) => {
    const copy = structuredClone(objects);
    mutate(copy);
    const problems = manifestChecks[check]!(copy);
    expect(problems).toContainEqual(expect.stringMatching(pattern));
  });

  const dockerMutations: [string, (s: string) => string, RegExp][] = [
    ['a Node 22 base', (s) => s.replace(/^ARG BASE=\S*/m, 'ARG BASE=node:22-bookworm-slim'), /base image must be Node 24/],
    ['a base that only looks like Node 24', (s) => s.replace(/^ARG BASE=\S*/m, 'ARG BASE=docker.io/library/node:240'), /base image must be Node 24/],
    ['a base argument without a default', (s) => s.replace(/^ARG BASE=\S*/m, 'ARG BASE'), /build argument BASE, which has no default/],
    ['a fixed Node 22 base', (s) => replaceLast(s, /^FROM .*$/gm, 'FROM node:22-bookworm-slim'), /base image must be Node 24/],
    ['a build stage on a base argument without a default', (s) => s.replace(/^FROM \$\{BASE\} AS /m, 'FROM ${BUILDER} AS '), /build argument BUILDER, which has no default/],
    ['no ipset', (s) => s.replace(/^\s*ipset \\\n/m, ''), /does not install ipset/],
    ['no iptables', (s) => s.replace(/^\s*iptables \\\n/m, ''), /does not install iptables/],
    ['recommends installed in the build stage', (s) => s.replace(' --no-install-recommends', ''), /--no-install-recommends \(stage cni-front-end\)/],
    ['recommends installed in the image', (s) => replaceLast(s, / --no-install-recommends/g, ''), /--no-install-recommends$/],
    ['the compiler installed in the image', (s) => s.replace(/^(\s*)iptables \\\n/m, '$1iptables \\\n$1gcc \\\n'), /the image installs gcc: build native code in a build stage/],
    ['apt lists kept', (s) => s.replace(' && rm -rf /var/lib/apt/lists/*', ''), /remove \/var\/lib\/apt\/lists/],
    ['dev dependencies installed', (s) => s.replace('npm ci --omit=dev', 'npm ci'), /npm ci --omit=dev/],
    ['src not copied', (s) => s.replace(/^COPY src\/ .*$/m, ''), /does not COPY src/],
    ['a shell-form entrypoint', (s) => s.replace(/^ENTRYPOINT .*$/m, 'ENTRYPOINT node /app/bin/policyctl.js agent'), /exec form/],
    ['the CNI front end not copied into the image', (s) => s.replace(/^COPY --from=.*$/m, ''), /no COPY to \/app\/lib\/policyctl-cni/],
    ['the CNI front end copied elsewhere', (s) => s.replace(/^(COPY --from=\S+ \S+) \S+$/m, '$1 /app/policyctl-cni'), /no COPY to \/app\/lib\/policyctl-cni/],
    ['COPY --from a stage that is not there', (s) => s.replace(/ AS cni-front-end$/m, ' AS shim'), /COPY --from=cni-front-end names no earlier stage/],
    ['the CNI front end built without build.sh', (s) => s.replace(/sh src\/cni\/shim\/build\.sh (\S+)/, 'cc -O2 -o $1 src/cni/shim/policyctl-cni.c'), /must build the front end with src\/cni\/shim\/build\.sh/],
  ];
  function replaceLast(s: string, re: RegExp, by: string): string {
    const last = [...s.matchAll(re)].at(-1);
    return last ? s.slice(0, last.index) + by + s.slice(last.index + last[0].length) : s;
  }
  it.each(dockerMutations)('Dockerfile: %s', (_name, mutate, pattern) => {
    const mutated = mutate(dockerfile);
    expect(mutated).not.toBe(dockerfile);
    expect(checkDockerfile(mutated)).toContainEqual(expect.stringMatching(pattern));
  });

  it('the ignore file check notices a COPY source that is not re-included', () => {
    expect(checkDockerignore(dockerignore.replace('!src/\n', ''), dockerfile)).toContainEqual(expect.stringMatching(/copies src, which the ignore file does not re-include/));
    expect(checkDockerignore(dockerignore.replace('!src/\n', ''), dockerfile)).toContainEqual(expect.stringMatching(/copies src\/cni\/shim, which the ignore file does not re-include/));
    expect(checkDockerignore(dockerignore.replace(/^\*$/m, 'node_modules'), dockerfile)).toContainEqual(expect.stringMatching(/must start with "\*"/));
  });

  it('the mutation table covers every manifest check', () => {
    expect(new Set(mutations.map((m) => m.check))).toEqual(new Set(Object.keys(manifestChecks)));
  });
});
