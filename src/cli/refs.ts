// kubectl-style object names: `pod/ns/name`, `pod/name` with -n, `ns/name`, or `name` with -n.

import { normalizeIPv4 } from '../model/cidr.ts';
import { printable } from '../model/issues.ts';
import type { Model } from '../model/store.ts';
import type { PodRecord } from '../model/types.ts';
import type { Endpoint } from '../semantics/evaluate.ts';
import { CliError, EXIT } from './io.ts';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
}

export function parsePodRef(text: string, defaultNamespace: string): PodRef {
  let rest = text;
  const kind = /^(pod|pods|po)\//.exec(rest);
  if (kind) rest = rest.slice(kind[0].length);
  else if (/^[a-z]+\//.test(rest) && rest.split('/').length === 3) {
    throw new CliError(`expected a pod, got ${JSON.stringify(text)} (write pod/NAMESPACE/NAME)`, EXIT.usage);
  }
  const parts = rest.split('/');
  if (parts.length === 1 && parts[0]) return { namespace: defaultNamespace, name: parts[0] };
  if (parts.length === 2 && parts[0] && parts[1]) return { namespace: parts[0], name: parts[1] };
  throw new CliError(`not a pod name: ${JSON.stringify(text)} (write pod/NAMESPACE/NAME, or pod/NAME with -n NAMESPACE)`, EXIT.usage);
}

export function findPod(model: Model, ref: PodRef): PodRecord {
  const p = model.findPod(ref.namespace, ref.name);
  if (p) return p;
  const others = [...model.allPods()].filter((q) => q.name === ref.name).map((q) => printable(`pod/${q.namespace}/${q.name}`));
  const hint = others.length ? `; did you mean ${others.join(', ')}?` : '';
  throw new CliError(`${printable(`pod/${ref.namespace}/${ref.name}`)} not found${hint}`);
}

/** A flow endpoint: a pod reference, or a plain IPv4 address. */
export function parseEndpoint(model: Model, text: string, defaultNamespace: string): Endpoint {
  const ip = normalizeIPv4(text);
  if (ip) return { kind: 'ip', ip };
  return { kind: 'pod', pod: findPod(model, parsePodRef(text, defaultNamespace)) };
}
