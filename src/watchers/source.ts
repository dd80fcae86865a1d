// What the agent needs from a source of cluster objects (a folder of manifests, the kube API).

import type { Model } from '../model/store.ts';

export interface SourceStatus {
  /** Every initial list is done: the model describes the whole cluster (invariant 6). */
  readonly synced: boolean;
  /** The source is connected and current; false while it is retrying (the model is kept). */
  readonly healthy: boolean;
  readonly detail: string;
}

export interface ModelSource {
  readonly model: Model;
  /** Starts reading; resolves when the initial content is in the model. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Called after the model changed (a burst may call it many times; the agent coalesces). */
  onChange(listener: () => void): void;
  /** Identity of the content the model reflects (a content hash for files, resourceVersions for the API). */
  revision(): string;
  status(): SourceStatus;
  /** Number of invalid NetworkPolicies in the model (enforced fail-closed). */
  invalidPolicies(): number;
}
