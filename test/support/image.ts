// The policyctl image for the real-kernel tests (test/e2e/image.test.ts): built by
// scripts/build-image.sh, run by podman as root (scripts/containers.conf, through
// CONTAINERS_CONF: the machine's own container configuration is not edited) the way the
// DaemonSet in deploy/ runs it: its command, environment, capabilities and hostPath mounts are
// read from the manifests, so the test follows them when they change.
//
// Containers only ever join a network namespace a test created (`--network ns:/run/netns/X`):
// podman's own networks would add bridges and NAT rules to the machine's namespace.

import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, type RunResult } from '../../src/lab/exec.ts';
import { parseManifestFile, type ConfigMap, type Container, type K8sObject, type PodSpec } from '../deploy/checks.ts';

export const REPO = join(import.meta.dirname, '..', '..');
const DEPLOY = join(REPO, 'deploy');
const CONTAINERS_CONF = process.env['CONTAINERS_CONF'] ?? join(REPO, 'scripts', 'containers.conf');

/** The tag the tests build (its layers are shared with the user's tag: a second build is a cache hit). */
export const TEST_IMAGE = 'localhost/policyctl:e2e';

export function podman(args: readonly string[], opts: { context?: string; reject?: boolean; timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  return run(['podman', ...args], {
    env: { CONTAINERS_CONF },
    context: opts.context ?? 'podman',
    ...(opts.reject !== undefined ? { reject: opts.reject } : {}),
    timeoutMs: opts.timeoutMs ?? 60_000,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
  });
}

export interface Built {
  readonly seconds: number;
  /** The script's last line: "image TAG: size N MB (base ...)". */
  readonly summary: string;
}

/** scripts/build-image.sh --tag TEST_IMAGE (installs podman when missing; the first build on a machine builds the local base). */
export async function buildImage(): Promise<Built> {
  const t0 = Date.now();
  const r = await run(['bash', join(REPO, 'scripts', 'build-image.sh'), '--tag', TEST_IMAGE], {
    env: { CONTAINERS_CONF },
    context: 'building the image with scripts/build-image.sh',
    timeoutMs: 20 * 60_000,
  });
  const summary = r.stdout.trim().split('\n').at(-1) ?? '';
  return { seconds: (Date.now() - t0) / 1000, summary };
}

// ---------------------------------------------------------------------------------------------
// What the DaemonSet runs, from deploy/*.yaml.

export interface Deployment {
  readonly pod: PodSpec;
  readonly agent: Container;
  /** The init container that runs `policyctl install-cni` from our image. */
  readonly installPolicyCni: Container;
  /** The init container that copies the ConfigMap's cni-conf.json to the host's conflist. */
  readonly installCni: Container;
  readonly flannelConfig: ConfigMap;
}

export function loadDeployment(): Deployment {
  const objects: K8sObject[] = readdirSync(DEPLOY)
    .filter((f) => /\.ya?ml$/.test(f))
    .flatMap((f) => parseManifestFile(`deploy/${f}`, readFileSync(join(DEPLOY, f), 'utf8')).docs.map((d) => d.object));
  const ds = objects.find((o) => o.kind === 'DaemonSet' && o.metadata?.name === 'policyctl') as { spec?: { template?: { spec?: PodSpec } } } | undefined;
  const pod = ds?.spec?.template?.spec;
  if (!pod) throw new Error(`deploy/*.yaml: no DaemonSet policyctl with a pod template (kinds seen: ${objects.map((o) => o.kind).join(', ')})`);
  const find = (list: Container[] | undefined, name: string, what: string): Container => {
    const c = list?.find((x) => x.name === name);
    if (!c) throw new Error(`DaemonSet policyctl has no ${what} ${JSON.stringify(name)} (has ${(list ?? []).map((x) => x.name).join(', ')})`);
    return c;
  };
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata?.name === 'policyctl-flannel-cfg') as ConfigMap | undefined;
  if (!cm?.data?.['cni-conf.json']) throw new Error('deploy/*.yaml: no ConfigMap policyctl-flannel-cfg with cni-conf.json');
  return {
    pod,
    agent: find(pod.containers, 'policyctl', 'container'),
    installPolicyCni: find(pod.initContainers, 'install-policyctl-cni', 'init container'),
    installCni: find(pod.initContainers, 'install-cni', 'init container'),
    flannelConfig: cm,
  };
}

/**
 * podman flags for a container's securityContext, as the kubelet would run it: capabilities as
 * given (all dropped when the manifest drops none: the test runs with less, never more), never
 * privileged, no-new-privileges when allowPrivilegeEscalation is false, and a read-only root
 * filesystem without podman's extra tmpfs mounts when readOnlyRootFilesystem is true.
 */
export function securityFlags(c: Container): string[] {
  const sc = c.securityContext ?? {};
  if (sc.privileged) throw new Error(`container ${c.name} is privileged in the DaemonSet; the image test runs unprivileged only`);
  return [
    ...(sc.capabilities?.drop ?? ['ALL']).flatMap((cap) => ['--cap-drop', cap]),
    ...(sc.capabilities?.add ?? []).flatMap((cap) => ['--cap-add', cap]),
    ...(sc.allowPrivilegeEscalation === false ? ['--security-opt', 'no-new-privileges'] : []),
    ...(sc.readOnlyRootFilesystem === true ? ['--read-only', '--read-only-tmpfs=false'] : []),
  ];
}

/**
 * `-v` flags for the container's hostPath mounts as the DaemonSet declares them. `override`
 * maps a container path to another host path (the lab's per-node socket folder for
 * /run/policyctl: two lab nodes share one machine). FileOrCreate and DirectoryOrCreate are
 * created when missing, as the kubelet does; an untyped hostPath that does not exist (no
 * /lib/modules on a machine whose netfilter is built in) is left out and reported.
 */
export function hostPathMounts(d: Deployment, c: Container, override: Record<string, string> = {}): { flags: string[]; skipped: string[] } {
  const flags: string[] = [];
  const skipped: string[] = [];
  for (const m of c.volumeMounts ?? []) {
    const vol = d.pod.volumes?.find((v) => v.name === m.name);
    if (!vol?.hostPath?.path || !m.mountPath) continue;
    const host = override[m.mountPath] ?? vol.hostPath.path;
    if (!existsSync(host)) {
      if (vol.hostPath.type === 'FileOrCreate') writeFileSync(host, '', { mode: 0o600 });
      else {
        skipped.push(`${m.mountPath} (hostPath ${host} does not exist here)`);
        continue;
      }
    }
    flags.push('-v', `${host}:${m.mountPath}${m.readOnly ? ':ro' : ''}`);
  }
  return { flags, skipped };
}

/** `-e` flags for the container's literal environment values (downward-API ones are the test's to supply). */
export function envFlags(c: Container): string[] {
  return (c.env ?? []).filter((e) => e.name && e.value !== undefined).flatMap((e) => ['-e', `${e.name}=${e.value}`]);
}

/** Ids of the containers carrying a label (all states). */
export async function containersLabelled(label: string): Promise<string[]> {
  const r = await podman(['ps', '-a', '-q', '--filter', `label=${label}`], { context: `listing containers labelled ${label}` });
  return r.stdout.split('\n').filter(Boolean);
}

/** Removes every container carrying the label (running ones are killed first). */
export async function removeContainers(label: string): Promise<void> {
  const ids = await containersLabelled(label);
  if (ids.length > 0) await podman(['rm', '-f', '--time', '0', ...ids], { context: `removing the test's containers ${ids.join(', ')}` });
}
