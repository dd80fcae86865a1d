// What the agent needs from a source of cluster objects (a folder of manifests, the kube API).

import type { Model } from '../model/store.ts';

export interface SourceStatus {
  /** Every initial list is done: the model describes the whole cluster (invariant synced-before-write, docs/design.md). */
  readonly synced: boolean;
  /** The source is connected and current; false while it is retrying (the model is kept). */
  readonly healthy: boolean;
  readonly detail: string;
  /** What holds without making the source unhealthy (a kind the cluster does not serve, e.g.). */
  readonly notes?: readonly string[];
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
  /** Counters for metrics, when the source keeps any. */
  stats?(): SourceStats;
}

/** What a source counts; the agent exports it as metrics. */
export interface SourceStats {
  /** Objects in the model that were read with validation issues, by kind (a gauge). */
  readonly objectsWithIssues: Readonly<Record<string, number>>;
  /** Exceptions caught in the source's handlers and listeners (monotonic). */
  readonly handlerErrors: number;
  /** Errors that interrupted reading, by resource; each is followed by a retry (monotonic). */
  readonly errors: Readonly<Record<string, number>>;
  /** Restarts of a resource with a fresh list, by reason (monotonic). */
  readonly restarts: Readonly<Record<string, number>>;
  /** Watch events received, by resource (monotonic). */
  readonly events: Readonly<Record<string, number>>;
}
