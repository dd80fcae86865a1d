// Where the CLI's model comes from: manifest files today (the kube API source plugs in here).
// Diagnostics go to stderr; invalid objects never stop the command (they are loaded fail-closed).

import { buildModel, formatDiagnostic, loadManifests } from '../manifests/load.ts';
import type { Model } from '../model/store.ts';
import { CliError, EXIT, type Io } from './io.ts';

export interface SourceOptions {
  readonly files: readonly string[];
  readonly strict: boolean;
}

export interface Source {
  readonly model: Model;
  /** Number of error diagnostics (invalid objects, unreadable files, YAML errors). */
  readonly errors: number;
}

export async function loadSource(o: SourceOptions, io: Io): Promise<Source> {
  if (o.files.length === 0) throw new CliError('no objects to read: give -f FILE, -f FOLDER or -f - (standard input)', EXIT.usage);
  const result = await loadManifests([...o.files], { stdin: () => io.readStdin() });
  for (const d of result.diagnostics) io.err(`${d.severity}: ${formatDiagnostic(d)}\n`);
  const errors = result.diagnostics.filter((d) => d.severity === 'error').length;
  const invalid = result.objects.flatMap((o) => (o.record.kind === 'NetworkPolicy' && o.record.issues.length > 0 ? [`${o.record.namespace}/${o.record.name}`] : []));
  if (invalid.length) {
    io.err(`note: invalid NetworkPolicies ${invalid.join(', ')} are enforced fail-closed: each isolates the pods it selects and allows nothing\n`);
  }
  if (result.objects.length === 0 && errors > 0) throw new CliError(`no object could be loaded from ${o.files.join(', ')}`);
  return { model: buildModel(result), errors };
}
