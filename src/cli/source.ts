// Where the CLI's model comes from: manifest files (-f), or the cluster (one LIST of every
// resource through the kube source, then stop). Diagnostics go to stderr; invalid objects never
// stop the command (they are loaded fail-closed).

import { buildModel, formatDiagnostic, loadManifests } from '../manifests/load.ts';
import { escapeLine, printable } from '../model/issues.ts';
import type { Model } from '../model/store.ts';
import { clusterPriorityTies } from '../semantics/cluster-ties.ts';
import { defaultKubeconfigPresent, loadKubeConfig } from '../watchers/kube-client.ts';
import { KubeSource } from '../watchers/kube.ts';
import { CliError, EXIT, type Io } from './io.ts';
import { errorText } from '../util/error-text.ts';

export interface SourceOptions {
  readonly files: readonly string[];
  readonly strict: boolean;
  /** A kubeconfig file (default: KUBECONFIG, then ~/.kube/config). Used when no -f is given. */
  readonly kubeconfig?: string;
  /** A context of the kubeconfig (default: its current-context). */
  readonly context?: string;
}

export interface Source {
  readonly model: Model;
  /** Number of error diagnostics (invalid objects, unreadable files, YAML errors). */
  readonly errors: number;
}

export async function loadSource(o: SourceOptions, io: Io): Promise<Source> {
  const cluster = o.kubeconfig !== undefined || o.context !== undefined;
  if (o.files.length > 0 && cluster) throw new CliError('give -f (manifests) or --kubeconfig/--context (a cluster), not both', EXIT.usage);
  if (o.files.length === 0) return loadCluster(o, io);
  const result = await loadManifests([...o.files], { stdin: () => io.readStdin() });
  for (const d of result.diagnostics) io.err(`${d.severity}: ${formatDiagnostic(d)}\n`);
  const errors = result.diagnostics.filter((d) => d.severity === 'error').length;
  const invalid = result.objects.flatMap((o) => (o.record.kind === 'NetworkPolicy' && o.record.issues.length > 0 ? [`${o.record.namespace}/${o.record.name}`] : []));
  noteInvalid(invalid, io);
  if (result.objects.length === 0 && errors > 0) throw new CliError(`no object could be loaded from ${o.files.join(', ')}`);
  const model = buildModel(result);
  noteClusterPolicies(model, io);
  return { model, errors };
}

function noteInvalid(invalid: readonly string[], io: Io): void {
  if (invalid.length) {
    io.err(`note: invalid NetworkPolicies ${invalid.map(printable).join(', ')} are enforced fail-closed: each isolates the pods it selects and allows nothing\n`);
  }
}

/**
 * What the model's ClusterNetworkPolicies need said once: the invalid ones (each fails closed,
 * denying all traffic of the directions it has rules for), and ties of one tier and priority
 * whose order the API leaves undefined.
 */
function noteClusterPolicies(model: Model, io: Io): void {
  const cnps = [...model.allClusterPolicies()].sort((a, b) => (a.name < b.name ? -1 : 1));
  const invalid = cnps.filter((c) => c.issues.length > 0).map((c) => c.name);
  if (invalid.length) {
    io.err(`note: invalid ClusterNetworkPolicies ${invalid.join(', ')} are enforced fail-closed: each denies all traffic, in each direction it has rules for, of the pods its subject selects (every pod when the subject is unreadable)\n`);
  }
  for (const tie of clusterPriorityTies(model)) io.err(`warning: ${tie.message}\n`);
}

/** Every Namespace, Node, Pod, NetworkPolicy and ClusterNetworkPolicy (where their CRD is installed) of the cluster, listed once. */
async function loadCluster(o: SourceOptions, io: Io): Promise<Source> {
  if (o.kubeconfig === undefined && !defaultKubeconfigPresent()) {
    throw new CliError('no objects to read: give -f FILE, -f FOLDER or -f - (standard input), or a cluster with --kubeconfig PATH (or KUBECONFIG, or ~/.kube/config)', EXIT.usage);
  }
  let src: KubeSource;
  try {
    const kc = loadKubeConfig({ ...(o.kubeconfig !== undefined ? { kubeconfig: o.kubeconfig } : {}), ...(o.context !== undefined ? { context: o.context } : {}) });
    src = new KubeSource({ kubeConfig: kc, once: true, listTimeoutMs: 30_000 });
    await src.start();
    await src.stop();
  } catch (e) {
    throw new CliError(errorText(e));
  }
  let errors = 0;
  for (const obj of src.issues()) {
    for (const i of obj.issues) {
      errors++;
      io.err(`error: ${escapeLine(`${printable(obj.ref)}: ${i.field ? `${printable(i.field)}: ` : ''}${i.message}${i.value !== '' ? ` (got ${i.value})` : ''}`)}\n`);
    }
  }
  noteInvalid(
    [...src.model.allPolicies()].filter((p) => p.issues.length > 0).map((p) => `${p.namespace}/${p.name}`).sort(),
    io,
  );
  noteClusterPolicies(src.model, io);
  return { model: src.model, errors };
}
