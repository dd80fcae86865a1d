// deploy/kustomization.yaml, rendered by `kubectl kustomize` (kubectl is on these machines;
// scripts/setup.sh installs Debian's kubernetes-client where it is not): the base renders exactly
// the objects of deploy/policyctl-canal.yaml, and an overlay that changes what clusters differ
// in (the image, the pod CIDR) renders a DaemonSet that still passes every manifest check of
// test/deploy/manifests.test.ts, with those two values changed and nothing else.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type ConfigMap,
  type DaemonSet,
  type K8sObject,
  AGENT_CONTAINER,
  FLANNEL_CONFIGMAP,
  checkAgentContainer,
  checkBinding,
  checkDaemonSet,
  checkFlannel,
  checkImageVersion,
  checkKinds,
  checkPolicyCni,
  checkRbac,
  entrypointOf,
  only,
  parseDockerfile,
  parseManifestFile,
} from './checks.ts';

const root = new URL('../../', import.meta.url).pathname;
const deployDir = join(root, 'deploy');
const entrypoint = entrypointOf(parseDockerfile(readFileSync(join(deployDir, 'Dockerfile'), 'utf8'))) ?? [];
const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;

/** kubectl's embedded kustomize version (`v5.5.0`), or undefined without kubectl. */
function kustomizeVersion(): string | undefined {
  try {
    const out = JSON.parse(execFileSync('kubectl', ['version', '--client', '-o', 'json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as { kustomizeVersion?: string };
    return out.kustomizeVersion ?? 'v2.0.3'; // kubectl before 1.21 does not say (Debian bookworm's 1.20 embeds v2.0.3)
  } catch {
    return undefined;
  }
}

const kustomize = kustomizeVersion();
const kustomizeMajor = Number(/^v(\d+)/.exec(kustomize ?? '')?.[1] ?? 0);
// Under CI=true a missing kubectl fails (scripts/setup.sh installs one), as a missing kernel tool does.
const run = kustomize !== undefined || process.env.CI === 'true';

function render(dir: string): K8sObject[] {
  const text = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const parsed = parseManifestFile(`kubectl kustomize ${dir}`, text);
  expect(parsed.problems).toEqual([]);
  return parsed.docs.map((d) => d.object);
}

const checks: Record<string, (m: K8sObject[]) => string[]> = {
  kinds: checkKinds,
  binding: checkBinding,
  rbac: checkRbac,
  daemonSet: checkDaemonSet,
  agent: (m) => checkAgentContainer(m, entrypoint),
  flannel: checkFlannel,
  policyCni: checkPolicyCni,
  imageVersion: (m) => checkImageVersion(m, version),
};

const byId = (m: K8sObject[]) => new Map(m.map((o) => [`${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`, o]));
const ds = (m: K8sObject[]) => only<DaemonSet>(m, 'DaemonSet')!;
const netConf = (m: K8sObject[]) => JSON.parse(m.find((o): o is ConfigMap => o.kind === 'ConfigMap' && o.metadata?.name === FLANNEL_CONFIGMAP)!.data!['net-conf.json']!) as { Network: string };

/** The overlay deploy/kustomization.yaml describes: the image and the pod CIDR. */
function overlay(dir: string, image: string, tag: string, cidr: string): string {
  return `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ${relative(dir, deployDir)}
images:
  - name: registry.example.com/policyctl
    newName: ${image}
    newTag: ${tag}
patches:
  - patch: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: policyctl-flannel-cfg
        namespace: kube-system
      data:
        net-conf.json: |
          {
            "Network": "${cidr}",
            "Backend": {
              "Type": "host-gw"
            }
          }
`;
}

describe.runIf(run)(`deploy/kustomization.yaml (kubectl kustomize, kustomize ${kustomize ?? 'missing'})`, () => {
  const tmp = mkdtempSync(join(tmpdir(), 'pctl-kustomize-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('kubectl is installed (scripts/setup.sh)', () => {
    expect(kustomize, 'kubectl version --client').toBeDefined();
  });

  it('the base renders exactly the objects of deploy/policyctl-canal.yaml, and they pass every manifest check', () => {
    const rendered = render(deployDir);
    const file = parseManifestFile('deploy/policyctl-canal.yaml', readFileSync(join(deployDir, 'policyctl-canal.yaml'), 'utf8')).docs.map((d) => d.object);
    expect(byId(rendered)).toEqual(byId(file));
    for (const [name, check] of Object.entries(checks)) expect(check(rendered), name).toEqual([]);
  });

  it.runIf(kustomizeMajor >= 4)('an overlay changes the image (agent and CNI installer) and the pod CIDR, and the result passes every check', () => {
    const dir = mkdtempSync(join(tmp, 'overlay-'));
    writeFileSync(join(dir, 'kustomization.yaml'), overlay(dir, 'registry.internal.example/platform/policyctl', version, '10.42.0.0/16'));
    const base = render(deployDir);
    const rendered = render(dir);
    for (const [name, check] of Object.entries(checks)) expect(check(rendered), name).toEqual([]);
    const pod = ds(rendered).spec!.template!.spec!;
    const image = `registry.internal.example/platform/policyctl:${version}`;
    expect(pod.containers!.find((c) => c.name === AGENT_CONTAINER)!.image).toBe(image);
    expect(pod.initContainers!.find((c) => c.name === 'install-policyctl-cni')!.image).toBe(image);
    expect(netConf(rendered)).toEqual({ Network: '10.42.0.0/16', Backend: { Type: 'host-gw' } });
    // Nothing else changed: the base with the same two values put back is the overlay's output.
    const expected = structuredClone(base);
    for (const c of [...ds(expected).spec!.template!.spec!.containers!, ...ds(expected).spec!.template!.spec!.initContainers!]) {
      if (c.image === `registry.example.com/policyctl:${version}`) c.image = image;
    }
    const cm = expected.find((o): o is ConfigMap => o.kind === 'ConfigMap')!;
    cm.data!['net-conf.json'] = JSON.stringify({ Network: '10.42.0.0/16', Backend: { Type: 'host-gw' } });
    const normalized = (m: K8sObject[]) => {
      const c = structuredClone(m);
      const map = c.find((o): o is ConfigMap => o.kind === 'ConfigMap')!;
      map.data!['net-conf.json'] = JSON.stringify(JSON.parse(map.data!['net-conf.json']!));
      return byId(c);
    };
    expect(normalized(rendered)).toEqual(normalized(expected));
  });

  it.runIf(kustomizeMajor >= 4)('an overlay whose image tag is not the package version fails the image check', () => {
    const dir = mkdtempSync(join(tmp, 'overlay-'));
    writeFileSync(join(dir, 'kustomization.yaml'), overlay(dir, 'registry.internal.example/policyctl', '0.0.1', '10.42.0.0/16'));
    expect(checkImageVersion(render(dir), version)).toContainEqual(expect.stringMatching(/not tagged with package\.json's version/));
  });
});
