// The Kubernetes API as a model source: a list and a watch of Namespaces, Nodes, Pods,
// NetworkPolicies and ClusterNetworkPolicies each (what an informer does, without its cache: the
// model and one small entry per object are the only copy), made fault tolerant.
//
// Invariants:
// - Synced (docs/design.md, invariant synced-before-write): `status().synced` turns true, and `start()` resolves, only
//   after every resource was listed successfully once. Until then the source retries with
//   backoff for ever and says in `status()` what fails; the agent awaits `start()` and so
//   writes nothing while the cluster is half known.
// - The model is kept when the API server goes away: errors only ever cause retries. Objects
//   leave the model only through a DELETED event or a successful LIST that no longer has them.
// - Records are keyed by UID: an object recreated under the same name (which a relist, keyed by
//   namespace/name, sees as a change) is a removal of the old record plus an insertion of the
//   new one.
// - Every LIST reconciles the model by difference with what the server returned (upsert what
//   changed, remove what is gone), whoever triggered it: the initial list, the relist after
//   410 Gone, a watchdog restart, the periodic resync. A missed event therefore
//   lasts at most one resync period.
// - No handler throws into the watch stream: every handler is wrapped; a failure is logged,
//   counted and answered with a fresh relist of that resource.
// - Every object goes through `normalize`; an invalid NetworkPolicy is still upserted (it
//   isolates and allows nothing) and is logged once per resourceVersion with the field path and
//   the value received.
// - After `stop()` no timer, request or watch of this source remains.
//
// ClusterNetworkPolicies are custom resources: a cluster without their CRD answers 404. The
// resource then counts as listed (with none: the source syncs, invariant synced-before-write
// holds for what the cluster has), the log says once that they are not enforced, and the list
// is tried again with backoff (up to `backoffMaxMs`) until the CRD appears; a watch answering
// 404 later (the CRD removed, and with it every instance) empties them from the model the same
// way. Any other failure of that resource is an error like any other.
//
// Memory (the agent keeps only what enforcement needs, docs/design.md layer `src/watchers`):
// no object is held whole. A LIST is read page by page (500 objects) and each page is
// normalized as it arrives, its raw objects dropped before the next page is read; a watch event
// is normalized in the watch's line handler. What stays is the model's record (for a pod: its
// namespace, name, uid, labels, node, addresses, phase, hostNetwork and container ports) and,
// per object, the entry below (uid, resourceVersion, validation issues), which is all a relist
// or an event needs to be compared with. The replicas of a workload share one label map and one
// port list, repeated strings are shared, and arrays are as long as their content (`shared`).
// There is no informer cache besides (client-node's informer keeps one of its own, and loading
// client-node costs more memory than the model of a 10k-pod cluster: see kube-client.ts). A real
// Pod with its managedFields weighs kilobytes, and holding the raw objects of a 10k-pod LIST at
// once took the agent to 400 MB.
//
// Liveness ("is this watch alive?"): a resource is alive when its watch delivered a line (an
// event, or a BOOKMARK, which this source asks for) or a LIST succeeded. A watch that merely
// reconnects does not count: a server whose watch cache is wedged (the double's `stall()`)
// accepts watches and then says nothing. The API server sends a watcher a BOOKMARK about every
// minute and one 2 s before the watch's deadline; each watch asks for a deadline of a quarter
// of `watchdogMs` (30 s by default; the idle timeout of a stream is never below the bookmark
// interval), so a healthy watch on a quiet resource delivers a line about every 30 s
// and is resumed at once from its resourceVersion after each deadline. Hence the bound
// (`watchdogMs`, `--stale-watch`, default 2 minutes, four deadlines): a resource silent past
// half of it (two missed bookmarks) makes `status()` unhealthy, naming the resource and the
// age (the agent's /readyz turns not ready: the kernel may be enforcing stale labels); a
// resource silent for the whole bound is restarted with a fresh LIST (a LIST without
// resourceVersion is a consistent read from etcd, which is exactly what a wedged watch cache
// cannot give).
//
// Errors: a watch that the server ends (its deadline) or that goes idle is resumed at once from
// its resourceVersion; a 410 Gone (an ERROR event or the response) relists. Any other error
// stops the resource's loop, which is started again (resuming the watch from the last
// resourceVersion, or relisting when that expired) after an exponential, jittered backoff
// (`backoffMinMs` doubling to `backoffMaxMs`), for ever. The backoff resets once the restarted
// loop shows life.

import type { Logger } from 'pino';
import { normalize as defaultNormalize, type NormalizeResult } from '../model/normalize.ts';
import { Model } from '../model/store.ts';
import { sameRecord, type ObjectRecord, type PodRecord, type ValidationIssue } from '../model/types.ts';
import { ListError, errorText, listRaw, serverOf, watchStream, type KubeAccess, type KubernetesObject } from './kube-client.ts';
import type { ModelSource, SourceStats, SourceStatus } from './source.ts';

export type ResourceName = 'namespaces' | 'nodes' | 'pods' | 'networkpolicies' | 'clusternetworkpolicies';

interface ResourceSpec {
  readonly name: ResourceName;
  readonly kind: ObjectRecord['kind'];
  readonly apiVersion: string;
  readonly path: string;
  /** A custom resource: a 404 means its CRD is not installed (none exist), not a failure. */
  readonly crd?: true;
  /** The kind in the plural, for messages. */
  readonly kinds: string;
}

/** Namespaces and Nodes first: a pod's namespace labels are known by the time its pods are. */
const RESOURCES: readonly ResourceSpec[] = [
  { name: 'namespaces', kind: 'Namespace', kinds: 'Namespaces', apiVersion: 'v1', path: '/api/v1/namespaces' },
  { name: 'nodes', kind: 'Node', kinds: 'Nodes', apiVersion: 'v1', path: '/api/v1/nodes' },
  { name: 'pods', kind: 'Pod', kinds: 'Pods', apiVersion: 'v1', path: '/api/v1/pods' },
  { name: 'networkpolicies', kind: 'NetworkPolicy', kinds: 'NetworkPolicies', apiVersion: 'networking.k8s.io/v1', path: '/apis/networking.k8s.io/v1/networkpolicies' },
  {
    name: 'clusternetworkpolicies',
    kind: 'ClusterNetworkPolicy',
    kinds: 'ClusterNetworkPolicies',
    apiVersion: 'policy.networking.k8s.io/v1alpha2',
    path: '/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies',
    crd: true,
  },
];

export interface KubeSourceOptions {
  /** A kubeconfig context (`loadKubeConfig`, or @kubernetes/client-node's KubeConfig). */
  readonly kubeConfig: KubeAccess;
  readonly logger?: Logger;
  /** Watch only this Node object (the agent's own); absent: every Node (the CLI). */
  readonly nodeName?: string;
  /**
   * One-shot: `start()` lists every resource once and rejects on the first failure; no watch,
   * no timer. For the CLI (list everything, then stop).
   */
  readonly once?: boolean;
  /** Period of the full relist that reconciles the model with the server (0: never). Default 10 min. */
  readonly resyncMs?: number;
  /**
   * The stale-watch bound: a resource silent (no event, no bookmark, no successful list) past
   * half of it makes the source unhealthy; silent this long, it is restarted with a fresh list.
   * Each watch asks the server for a deadline of a quarter of it (at least 3 s). Default 2 min.
   */
  readonly watchdogMs?: number;
  /** Retry delay after the first failure; doubles per consecutive failure. Default 200 ms. */
  readonly backoffMinMs?: number;
  /** Cap of the retry delay. Default 30 s. */
  readonly backoffMaxMs?: number;
  /** Timeout of one LIST request. Default 60 s. */
  readonly listTimeoutMs?: number;
  /** LIST page size (0: no pagination). Default 500. */
  readonly pageSize?: number;
  /** How raw objects become records (tests substitute a failing one). Default `normalize`. */
  readonly normalize?: (obj: unknown) => NormalizeResult;
}

/** One object the source read with validation issues (the agent logs and counts them). */
export interface ObjectIssues {
  /** kubectl-style reference, e.g. `networkpolicy/ns/name`. */
  readonly ref: string;
  readonly kind: ObjectRecord['kind'];
  readonly resourceVersion: string;
  readonly issues: readonly ValidationIssue[];
}

/** Counters for metrics; monotonic unless named otherwise. */
export interface KubeSourceStats extends SourceStats {
  /** Watch events applied (add/update/delete), per resource. */
  readonly events: Readonly<Record<ResourceName, number>>;
  /** Successful LISTs, per resource. */
  readonly lists: Readonly<Record<ResourceName, number>>;
  /** Errors that stopped a resource's list/watch loop (each followed by a retry), per resource. */
  readonly errors: Readonly<Record<ResourceName, number>>;
  /** Fresh restarts (stop + a new loop that lists first), by reason. */
  readonly restarts: Readonly<Record<'watchdog' | 'resync' | 'handler-error', number>>;
  /** LISTs of a custom resource answered 404 (its CRD not installed), per resource. */
  readonly absent: Readonly<Record<ResourceName, number>>;
  /** Exceptions caught in handlers and listeners (never thrown into client-node). */
  readonly handlerErrors: number;
  /** Objects currently in the model with validation issues, per kind (a gauge). */
  readonly objectsWithIssues: Readonly<Record<ObjectRecord['kind'], number>>;
}

/** `absent`: a custom resource the server does not serve (404); polled with backoff. */
type State = 'idle' | 'starting' | 'watching' | 'backoff' | 'absent';

interface Entry {
  readonly uid: string;
  readonly rv: string;
  readonly record: ObjectRecord | undefined;
  /** NO_ISSUES (shared) when valid. */
  readonly issues: readonly ValidationIssue[];
  /** kubectl-style reference, kept only with issues (it is printed with them). */
  readonly ref?: string;
}

const NO_ISSUES: readonly ValidationIssue[] = Object.freeze([]);

/**
 * A bounded map that keeps one instance of equal values (the most recently used `max` keys).
 * The replicas of a workload carry equal labels and container ports, and namespaces and node
 * names repeat: 50k pods would otherwise hold 50k copies of each. Replicas arrive together (a
 * LIST is in name order, and a rollout's events come in a burst), so a small bound finds them.
 */
class Interner<T> {
  private readonly m = new Map<string, T>();
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  /** The instance kept for `key`, else `value` (kept from now on). */
  get(key: string, value: T): T {
    const hit = this.m.get(key);
    if (hit !== undefined) {
      this.m.delete(key);
      this.m.set(key, hit);
      return hit;
    }
    this.m.set(key, value);
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value!);
    return value;
  }
}

/** One object of a LIST, normalized as its page arrived (the raw object is not kept). */
interface Listed {
  readonly key: string;
  readonly uid: string;
  readonly rv: string;
  /** Absent when the model already holds this uid at this resourceVersion (nothing to do). */
  readonly result?: NormalizeResult;
  readonly error?: unknown;
}

interface Watched {
  readonly spec: ResourceSpec;
  readonly fieldSelector: string | undefined;
  /** namespace/name -> what the model holds for it. */
  readonly entries: Map<string, Entry>;
  /** Aborts the current list/watch loop (a restart or stop() replaces it). */
  abort: AbortController;
  /** Where the watch resumes: the last LIST's or event's resourceVersion ('' = list first). */
  watchRv: string;
  state: State;
  listed: boolean;
  /** Consecutive failures without a sign of life in between. */
  failures: number;
  error: string | undefined;
  retryAt: number;
  timer: NodeJS.Timeout | undefined;
  lastAlive: number;
  /** resourceVersion of the last LIST or event applied to the model. */
  rv: string;
  starting: Promise<void> | undefined;
  /** A relist after a handler error is scheduled. */
  restartPending: boolean;
  /** A custom resource whose last LIST (or watch) answered 404: its CRD is not installed. */
  absent: boolean;
  /** Consecutive 404s (the poll's backoff). */
  absentPolls: number;
}

const zero = <K extends string>(keys: readonly K[]): Record<K, number> => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
const NAMES = RESOURCES.map((r) => r.name);

export class KubeSource implements ModelSource {
  readonly model = new Model();
  private readonly kc: KubeAccess;
  private readonly log: Logger | undefined;
  private readonly once: boolean;
  private readonly resyncMs: number;
  private readonly watchdogMs: number;
  private readonly backoffMinMs: number;
  private readonly backoffMaxMs: number;
  private readonly listTimeoutMs: number;
  private readonly pageSize: number;
  private readonly normalizeFn: (obj: unknown) => NormalizeResult;
  private readonly watched: Watched[];
  private readonly listeners: (() => void)[] = [];
  private readonly interned = {
    strings: new Interner<string>(4096),
    labels: new Interner<PodRecord['labels']>(4096),
    ports: new Interner<PodRecord['ports']>(1024),
  };
  private synced = false;
  private stopped = false;
  private started = false;
  private syncWaiter: (() => void) | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private readonly counters = {
    events: zero(NAMES),
    lists: zero(NAMES),
    errors: zero(NAMES),
    restarts: { watchdog: 0, resync: 0, 'handler-error': 0 },
    handlerErrors: 0,
    absent: zero(NAMES),
  };

  constructor(o: KubeSourceOptions) {
    this.kc = o.kubeConfig;
    this.log = o.logger;
    this.once = o.once ?? false;
    this.resyncMs = o.resyncMs ?? 600_000;
    this.watchdogMs = o.watchdogMs ?? 120_000;
    this.backoffMinMs = o.backoffMinMs ?? 200;
    this.backoffMaxMs = o.backoffMaxMs ?? 30_000;
    this.listTimeoutMs = o.listTimeoutMs ?? 60_000;
    this.pageSize = o.pageSize ?? 500;
    this.normalizeFn = o.normalize ?? defaultNormalize;
    this.watched = RESOURCES.map((spec) => ({
      spec,
      fieldSelector: spec.name === 'nodes' && o.nodeName !== undefined ? `metadata.name=${o.nodeName}` : undefined,
      entries: new Map(),
      abort: new AbortController(),
      watchRv: '',
      state: 'idle',
      listed: false,
      failures: 0,
      error: undefined,
      retryAt: 0,
      timer: undefined,
      lastAlive: 0,
      rv: '',
      starting: undefined,
      restartPending: false,
      absent: false,
      absentPolls: 0,
    }));
  }

  // ------------------------------------------------------------------ ModelSource

  /** Resolves once every resource was listed (never rejects, except in `once` mode); resolves at stop(). */
  async start(): Promise<void> {
    if (this.started) throw new Error('KubeSource.start() was already called');
    this.started = true;
    if (this.once) return this.listOnce();
    const done = new Promise<void>((resolve) => (this.syncWaiter = resolve));
    this.log?.info({ server: serverOf(this.kc), resources: NAMES }, 'listing and watching the API server');
    for (const w of this.watched) this.launch(w);
    const tick = Math.max(20, Math.min(this.watchdogMs / 4, 15_000));
    this.watchdogTimer = setInterval(() => this.checkWatchdog(), tick);
    this.watchdogTimer.unref();
    if (this.resyncMs > 0) {
      this.resyncTimer = setInterval(() => this.resyncAll(), this.resyncMs);
      this.resyncTimer.unref();
    }
    return done;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.watchdogTimer);
    clearInterval(this.resyncTimer);
    const pending: Promise<void>[] = [];
    for (const w of this.watched) {
      clearTimeout(w.timer);
      this.retire(w);
      if (w.starting) pending.push(w.starting);
    }
    this.syncWaiter?.();
    this.syncWaiter = undefined;
    // Loops end at once when aborted (their requests are destroyed); the cap is a safety net.
    let cap: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(pending), new Promise<void>((r) => (cap = setTimeout(r, 2000)))]);
    clearTimeout(cap);
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /**
   * The resourceVersion each resource's content in the model reflects, e.g.
   * `namespaces=1003,nodes=1001,pods=1042,networkpolicies=1040` (and
   * `clusternetworkpolicies=...` while their CRD is installed). Each model change comes from an
   * event or a LIST with a newer resourceVersion of its resource, or from a CRD going away, so
   * this changes whenever the content does (and sometimes when it does not: an event that
   * changes no record).
   */
  revision(): string {
    return this.watched
      .filter((w) => !w.absent)
      .map((w) => `${w.spec.name}=${w.rv}`)
      .join(',');
  }

  status(): SourceStatus {
    const server = serverOf(this.kc);
    const failing = this.watched.filter((w) => w.error !== undefined);
    const now = Date.now();
    const failures = failing.map((w) => {
      const retry = w.state === 'backoff' ? `; retry ${w.failures + 1} in ${Math.max(0, Math.round((w.retryAt - now) / 100) / 10)}s` : '; retrying now';
      return `${w.spec.name}: ${w.error}${retry}`;
    });
    if (this.stopped) return { synced: this.synced, healthy: false, detail: 'stopped' };
    const absent = this.watched.filter((w) => w.absent).map((w) => `${w.spec.name} not served (CRD not installed): ${w.spec.kinds} are not enforced`);
    if (!this.synced) {
      const waiting = this.watched.filter((w) => !w.listed).map((w) => w.spec.name);
      const detail = failing.length
        ? `cannot list from the API server ${server}, nothing is enforced until every resource is listed (waiting for ${waiting.join(', ')}): ${failures.join('; ')}`
        : `listing ${waiting.join(', ')} from ${server}`;
      return { synced: false, healthy: failing.length === 0, detail };
    }
    if (failing.length) {
      return { synced: true, healthy: false, detail: `API server ${server} lost, enforcing the last known state: ${failures.join('; ')}` };
    }
    // Past half the bound a watch has missed two bookmarks: what the model says of that
    // resource may be stale (the watchdog relists it at the full bound).
    const silent = this.watched
      .filter((w) => w.state === 'watching' && now - w.lastAlive > this.watchdogMs / 2)
      .map((w) => `${w.spec.name}: no event or bookmark for ${seconds(now - w.lastAlive)} s`);
    if (silent.length) {
      return {
        synced: true,
        healthy: false,
        detail: `watch silent past half the stale-watch bound of ${seconds(this.watchdogMs)} s (it is relisted at the bound), enforcing what it last said: ${silent.join('; ')}`,
      };
    }
    const watching = this.watched.filter((w) => !w.absent).map((w) => w.spec.name);
    return { synced: true, healthy: true, detail: [`watching ${watching.join(', ')} at ${server}`, ...absent].join('; '), ...(absent.length ? { notes: absent } : {}) };
  }

  invalidPolicies(): number {
    let n = 0;
    for (const p of this.model.allPolicies()) if (p.issues.length > 0) n++;
    return n;
  }

  // ------------------------------------------------------------------ extras

  /** The objects in the model that have validation issues, in resource and key order. */
  issues(): ObjectIssues[] {
    const out: ObjectIssues[] = [];
    for (const w of this.watched) {
      for (const k of [...w.entries.keys()].sort()) {
        const e = w.entries.get(k)!;
        if (e.issues.length) out.push({ ref: e.ref ?? k, kind: w.spec.kind, resourceVersion: e.rv, issues: e.issues });
      }
    }
    return out;
  }

  stats(): KubeSourceStats {
    const objectsWithIssues = { Namespace: 0, Node: 0, Pod: 0, NetworkPolicy: 0, ClusterNetworkPolicy: 0 };
    for (const w of this.watched) for (const e of w.entries.values()) if (e.issues.length) objectsWithIssues[w.spec.kind]++;
    const c = this.counters;
    return { events: { ...c.events }, lists: { ...c.lists }, errors: { ...c.errors }, restarts: { ...c.restarts }, absent: { ...c.absent }, handlerErrors: c.handlerErrors, objectsWithIssues };
  }

  /**
   * Relist every resource now and reconcile the model (what the periodic resync does). A
   * resource waiting for its retry is left to it (a resync must not defeat the backoff).
   */
  resyncAll(): void {
    for (const w of this.watched) if (w.state === 'watching' || w.state === 'starting') this.restartFresh(w, 'resync');
  }

  // ------------------------------------------------------------------ one-shot

  private async listOnce(): Promise<void> {
    const server = serverOf(this.kc);
    const lists = await Promise.all(
      this.watched.map(async (w) => {
        try {
          return await this.list(w);
        } catch (e) {
          // A custom resource whose CRD is not installed: there are none.
          if (w.spec.crd && isNotFound(e)) {
            w.absent = true;
            return { resourceVersion: '', items: [] };
          }
          throw new Error(`cannot list ${w.spec.name} from the API server ${server}: ${errorText(e)}`, { cause: e });
        }
      }),
    );
    for (let i = 0; i < lists.length; i++) this.reconcile(this.watched[i]!, lists[i]!.items, lists[i]!.resourceVersion);
    for (const w of this.watched) w.listed = true;
    this.synced = true;
  }

  // ------------------------------------------------------------------ list and watch

  /** Start this resource afresh: a new loop that lists first. */
  private launch(w: Watched): void {
    w.abort = new AbortController();
    w.watchRv = '';
    void this.startLoop(w, w.abort);
  }

  /** Stop the current loop; its late callbacks (AbortError included) are ignored. */
  private retire(w: Watched): void {
    w.abort.abort();
  }

  /** (Re)start the loop: a first list, or a watch resumed from its last resourceVersion. */
  private async startLoop(w: Watched, abort: AbortController): Promise<void> {
    if (abort.signal.aborted || this.stopped) return;
    w.state = 'starting';
    const p = this.loop(w, abort).catch((e: unknown) => this.guard(w, abort, 'error', () => this.onError(w, abort, e)));
    w.starting = p;
    await p;
    if (w.starting === p) w.starting = undefined;
  }

  /**
   * List (when there is no resourceVersion to resume from), then watch, resuming after each
   * stream the server ends, for as long as nothing fails; returns when aborted, throws what
   * failed (the caller retries with backoff).
   */
  private async loop(w: Watched, abort: AbortController): Promise<void> {
    const signal = abort.signal;
    const timeoutSeconds = String(Math.max(3, Math.round(this.watchdogMs / 4000)));
    const idleTimeoutMs = Math.max(90_000, this.watchdogMs);
    let quickEnds = 0;
    for (;;) {
      if (signal.aborted || this.stopped) return;
      if (!w.watchRv) {
        const rv = await this.relist(w, signal);
        if (rv === undefined) return;
        w.watchRv = rv || '0';
      }
      const opened = Date.now();
      let lines = 0;
      try {
        await watchStream(this.kc, w.spec.path, {
          query: { resourceVersion: w.watchRv, allowWatchBookmarks: 'true', timeoutSeconds, ...(w.fieldSelector ? { fieldSelector: w.fieldSelector } : {}) },
          signal,
          idleTimeoutMs,
          onOpen: () => this.connected(w, abort),
          onEvent: (type, obj) => {
            lines++;
            this.onEvent(w, abort, type, obj);
          },
        });
      } catch (e) {
        if (signal.aborted || this.stopped) return;
        // Idle past the bound of a healthy stream: resume silently (the watchdog judges).
        if (e instanceof Error && e.name === 'TimeoutError') continue;
        if ((e as { statusCode?: unknown }).statusCode === 410) {
          w.watchRv = '';
          continue;
        }
        throw e;
      }
      // Ended by the server: its deadline (resume at once, as client-go does), or an ERROR 410
      // event (relist). A stream that ends at once without a line is retried with a growing
      // delay, so a server that does so cannot make this a tight loop of requests.
      if (Date.now() - opened < 1000 && lines === 0) {
        quickEnds++;
        await delay(Math.min(30_000, 1000 * 2 ** Math.min(quickEnds - 1, 5)), signal);
      } else quickEnds = 0;
    }
  }

  /**
   * LIST and reconcile; the resourceVersion to watch from, or undefined when aborted. A method
   * of its own so that the listed items die with its frame (the loop that awaits it runs for as
   * long as the watch does).
   */
  private async relist(w: Watched, signal: AbortSignal): Promise<string | undefined> {
    const l = await this.list(w, signal);
    if (signal.aborted) return undefined;
    try {
      this.applyList(w, l.items, l.resourceVersion);
    } catch (e) {
      this.counters.handlerErrors++;
      throw new ListError(`applying the list failed: ${errorText(e)}`, undefined, { cause: e });
    }
    return l.resourceVersion;
  }

  /** The server accepted a watch: after a (re)start, the resource is connected again. */
  private connected(w: Watched, abort: AbortController): void {
    if (abort.signal.aborted || w.state === 'watching') return;
    w.state = 'watching';
    w.lastAlive = Date.now();
    this.recovered(w);
  }

  /** One event of the current watch: applied to the model, guarded (a throw relists). */
  private onEvent(w: Watched, abort: AbortController, type: string, o: KubernetesObject): void {
    if (abort.signal.aborted) return;
    this.onLine(w, abort, type);
    const rv = o.metadata?.resourceVersion;
    if (type === 'ERROR') {
      // 410 Gone: the resourceVersion is too old; the stream ends, and the loop relists.
      if ((o as { code?: unknown }).code === 410) w.watchRv = '';
      return;
    }
    if (type === 'ADDED' || type === 'MODIFIED') this.guard(w, abort, type === 'ADDED' ? 'add' : 'update', () => this.onUpsert(w, o));
    else if (type === 'DELETED') this.guard(w, abort, 'delete', () => this.onDelete(w, o));
    if (rv) w.watchRv = rv;
  }

  /** A request of this resource succeeded again after an error. */
  private recovered(w: Watched): void {
    if (w.error === undefined) return;
    this.log?.info({ resource: w.spec.name, after: w.error }, `${w.spec.name}: the API server answers again`);
    w.error = undefined;
  }

  private onError(w: Watched, abort: AbortController, e: unknown): void {
    if (abort.signal.aborted || this.stopped) return; // our own stop() (AbortError) or a retired loop
    if (w.spec.crd && isNotFound(e)) return this.onAbsent(w);
    w.failures++;
    this.counters.errors[w.spec.name]++;
    const phase = e instanceof ListError ? 'list failed' : 'watch failed';
    const text = `${phase}: ${errorText(e)}`;
    const first = w.error === undefined;
    w.error = text;
    w.state = 'backoff';
    const delay = this.backoff(w.failures);
    w.retryAt = Date.now() + delay;
    const fields = { resource: w.spec.name, err: text, attempt: w.failures, retryInMs: delay };
    if (first) this.log?.error(fields, `${w.spec.name}: ${text}; ${this.synced ? 'enforcing the last known state' : 'nothing is enforced until the initial lists are done'}; retrying with backoff`);
    else this.log?.warn(fields, `${w.spec.name}: still failing: ${text}`);
    clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = undefined;
      void this.startLoop(w, abort);
    }, delay);
    w.timer.unref();
  }

  /**
   * The server does not serve this custom resource (404 on its LIST, or on a watch: the CRD was
   * removed, and with it every instance). None exist: the model drops what it held of them, the
   * resource counts as listed (the source can sync without the CRD), and the list is tried
   * again with backoff until the CRD appears. Said once per absence, not per poll.
   */
  private onAbsent(w: Watched): void {
    this.retire(w);
    this.counters.absent[w.spec.name]++;
    const first = !w.absent;
    w.absent = true;
    w.absentPolls++;
    w.error = undefined;
    w.failures = 0;
    w.state = 'absent';
    this.reconcile(w, [], '');
    if (first) {
      this.log?.warn(
        { resource: w.spec.name, apiVersion: w.spec.apiVersion },
        `${w.spec.name}: the API server does not serve ${w.spec.apiVersion} ${w.spec.name} (its CRD is not installed): ${w.spec.kinds} are not enforced; checking again with backoff up to ${Math.round(this.backoffMaxMs / 1000)} s`,
      );
    }
    if (!w.listed) {
      w.listed = true;
      this.checkSynced();
    }
    const delay = this.backoff(w.absentPolls);
    w.retryAt = Date.now() + delay;
    clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = undefined;
      if (!this.stopped && w.state === 'absent') this.launch(w);
    }, delay);
    w.timer.unref();
  }

  /** min * 2^(n-1), capped, times a jitter in [0.75, 1.25) (capped again). */
  private backoff(failures: number): number {
    const base = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(failures - 1, 30));
    return Math.round(Math.min(this.backoffMaxMs, base * (0.75 + Math.random() * 0.5)));
  }

  /** A line from the current watch: an event, a BOOKMARK or an ERROR event. */
  private onLine(w: Watched, abort: AbortController, type: string): void {
    if (abort.signal.aborted) return;
    if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED') this.counters.events[w.spec.name]++;
    this.alive(w);
  }

  /** A sign of life: a watch line or a successful list. */
  private alive(w: Watched): void {
    w.lastAlive = Date.now();
    w.failures = 0;
  }

  /** Replace the loop with a new one that starts with a full list. */
  private restartFresh(w: Watched, reason: 'watchdog' | 'resync' | 'handler-error'): void {
    if (this.stopped) return;
    this.counters.restarts[reason]++;
    const silentMs = Date.now() - w.lastAlive;
    if (reason === 'watchdog') this.log?.warn({ resource: w.spec.name, silentSeconds: Math.round(silentMs / 100) / 10 }, `${w.spec.name}: no event or bookmark for ${seconds(silentMs)} s; restarting the watch with a fresh list`);
    else if (reason === 'handler-error') this.log?.warn({ resource: w.spec.name }, `${w.spec.name}: an event could not be applied; relisting`);
    else this.log?.debug({ resource: w.spec.name }, `${w.spec.name}: periodic resync (full list)`);
    clearTimeout(w.timer);
    w.timer = undefined;
    this.retire(w);
    this.launch(w);
  }

  private checkWatchdog(): void {
    const now = Date.now();
    for (const w of this.watched) {
      if (w.state === 'watching' && now - w.lastAlive > this.watchdogMs) this.restartFresh(w, 'watchdog');
    }
  }

  /**
   * Run a handler so that it never throws into the watch stream: an exception is logged,
   * counted, and answered with a fresh relist of the resource (the model may have missed that
   * change).
   */
  private guard(w: Watched, abort: AbortController, what: string, fn: () => void): void {
    if (abort.signal.aborted && what !== 'error') return;
    try {
      fn();
    } catch (e) {
      this.counters.handlerErrors++;
      this.log?.error({ resource: w.spec.name, handler: what, err: errorText(e) }, `${w.spec.name}: ${what} handler failed: ${errorText(e)}; the resource will be relisted`);
      if (!this.stopped && !abort.signal.aborted && !w.restartPending) {
        // Not from inside the stream's handler: restart on the next turn, once per burst.
        w.restartPending = true;
        setImmediate(() => {
          w.restartPending = false;
          if (!abort.signal.aborted && !this.stopped) this.restartFresh(w, 'handler-error');
        });
      }
    }
  }

  // ------------------------------------------------------------------ model updates

  /**
   * LIST a resource, normalizing each page as it arrives (the raw objects are dropped page by
   * page; see Memory above).
   */
  private async list(w: Watched, signal?: AbortSignal): Promise<{ resourceVersion: string; items: Listed[] }> {
    const items: Listed[] = [];
    const l = await listRaw(this.kc, w.spec.path, {
      kind: w.spec.kind,
      apiVersion: w.spec.apiVersion,
      pageSize: this.pageSize,
      timeoutMs: this.listTimeoutMs,
      ...(w.fieldSelector ? { fieldSelector: w.fieldSelector } : {}),
      ...(signal ? { signal } : {}),
      onItems: (page) => {
        for (const o of page) {
          const key = keyOf(o);
          const uid = o.metadata?.uid || key;
          const rv = o.metadata?.resourceVersion ?? '';
          if (this.isCurrent(w, key, uid, rv)) {
            items.push({ key, uid, rv });
            continue;
          }
          try {
            items.push({ key, uid, rv, result: this.normalizeFn(o) });
          } catch (e) {
            items.push({ key, uid, rv, error: e });
          }
        }
      },
    });
    return { resourceVersion: l.resourceVersion, items };
  }

  private applyList(w: Watched, items: readonly Listed[], rv: string): void {
    this.reconcile(w, items, rv);
    this.counters.lists[w.spec.name]++;
    this.alive(w);
    this.recovered(w);
    if (w.absent) {
      w.absent = false;
      w.absentPolls = 0;
      this.log?.info({ resource: w.spec.name, objects: items.length }, `${w.spec.name}: the API server serves ${w.spec.apiVersion} ${w.spec.name} now (its CRD is installed): ${items.length} listed, watching them`);
    }
    if (!w.listed) {
      w.listed = true;
      this.checkSynced();
    }
  }

  /** Bring this resource's part of the model to exactly `items`, by difference. */
  private reconcile(w: Watched, items: readonly Listed[], rv: string): void {
    const seen = new Set<string>();
    let changed = false;
    for (const l of items) {
      seen.add(l.key);
      if (l.result === undefined && l.error === undefined) continue; // the model holds it already
      try {
        if (l.error !== undefined) throw l.error;
        if (this.apply(w, l.key, l.uid, l.rv, l.result!)) changed = true;
      } catch (e) {
        // One object that cannot be applied must not hold up the others; what the model held
        // for it stays (it was seen, so it is not removed).
        this.counters.handlerErrors++;
        this.log?.error({ resource: w.spec.name, object: l.key, err: errorText(e) }, `${w.spec.name}: cannot apply ${l.key}: ${errorText(e)}; keeping what the model held for it`);
      }
    }
    for (const [k, e] of [...w.entries]) {
      if (seen.has(k)) continue;
      w.entries.delete(k);
      if (e.record) {
        this.model.remove(e.record.uid, e.record.kind);
        changed = true;
      }
    }
    w.rv = rv;
    if (changed) this.notify();
  }

  /** An added or modified object of a watch event: normalized and applied. */
  private onUpsert(w: Watched, o: KubernetesObject): void {
    const res = this.normalizeFn(o.kind ? o : { ...o, kind: w.spec.kind, apiVersion: w.spec.apiVersion });
    const key = keyOf(o);
    const changed = this.apply(w, key, o.metadata?.uid || key, o.metadata?.resourceVersion ?? '', res);
    w.rv = o.metadata?.resourceVersion ?? w.rv;
    if (changed) this.notify();
  }

  private onDelete(w: Watched, o: KubernetesObject): void {
    const k = keyOf(o);
    const cur = w.entries.get(k);
    const uid = o.metadata?.uid;
    // A DELETED of an older incarnation (same name, other uid) leaves the current one alone.
    if (cur && (uid === undefined || uid === cur.uid)) {
      w.entries.delete(k);
      if (cur.record) this.model.remove(cur.record.uid, cur.record.kind);
      w.rv = o.metadata?.resourceVersion ?? w.rv;
      if (cur.record) this.notify();
    }
  }

  /** The model already holds this uid at this resourceVersion. */
  private isCurrent(w: Watched, key: string, uid: string, rv: string): boolean {
    const cur = w.entries.get(key);
    return cur !== undefined && cur.uid === uid && rv !== '' && cur.rv === rv;
  }

  /** Store the normalized object under its name `k`, replacing the record of another uid; returns whether the model changed. */
  private apply(w: Watched, k: string, uid: string, rv: string, res: NormalizeResult): boolean {
    if (this.isCurrent(w, k, uid, rv)) return false;
    const cur = w.entries.get(k);
    let changed = false;
    if (cur?.record && (cur.uid !== uid || !res.record)) {
      // Recreated under the same name: the old record goes, by its own UID.
      this.model.remove(cur.record.uid, cur.record.kind);
      changed = true;
    }
    const keep = cur && cur.uid === uid && res.record && sameRecord(cur.record, res.record);
    // The entry and the model share one record (an equal new one is dropped).
    const record = keep ? cur.record : res.record && this.shared(res.record);
    if (record && !keep) {
      this.model.upsert(record);
      changed = true;
    }
    w.entries.set(k, res.issues.length ? { uid, rv, record, issues: res.issues, ref: res.ref } : { uid, rv, record, issues: NO_ISSUES });
    if (res.issues.length) this.reportIssues(w, res, rv);
    return changed;
  }

  /**
   * The record as the model keeps it: a pod's labels, ports and repeated strings are the
   * instances other pods share, and every array is exactly as long as its content (an array
   * built by push reserves 16 slots: 150 bytes for a pod's one address).
   */
  private shared(r: ObjectRecord): ObjectRecord {
    if (r.kind !== 'Pod') return compact(r);
    const { strings, labels, ports } = this.interned;
    return {
      ...r,
      namespace: strings.get(r.namespace, r.namespace),
      labels: labels.get(JSON.stringify(r.labels), r.labels),
      ports: ports.get(JSON.stringify(r.ports), compact(r.ports)),
      ips: compact(r.ips),
      ...(r.nodeName !== undefined ? { nodeName: strings.get(r.nodeName, r.nodeName) } : {}),
      ...(r.phase !== undefined ? { phase: strings.get(r.phase, r.phase) } : {}),
    };
  }

  /** Logged once per resourceVersion: upsert runs once per new resourceVersion of an object. */
  private reportIssues(w: Watched, res: NormalizeResult, rv: string): void {
    if (!this.log) return;
    const policy = w.spec.kind === 'NetworkPolicy' || w.spec.kind === 'ClusterNetworkPolicy';
    const r = res.record;
    const where = r && r.kind !== 'Node' && r.kind !== 'Namespace' && r.kind !== 'ClusterNetworkPolicy' ? { namespace: r.namespace, name: r.name } : { name: r?.name };
    for (const i of res.issues) {
      const fields = { object: res.ref, ...where, resourceVersion: rv, field: i.field, value: i.value };
      const line = `${res.ref}: ${i.field ? `${i.field}: ` : ''}${i.message}${i.value !== '' ? ` (got ${i.value})` : ''}`;
      if (w.spec.kind === 'NetworkPolicy') this.log.error(fields, `invalid NetworkPolicy ${line}; enforced fail-closed: it isolates the pods it selects and allows nothing`);
      else if (policy) this.log.error(fields, `invalid ClusterNetworkPolicy ${line}; enforced fail-closed: it denies all traffic, in each direction it has rules for, of the pods its subject selects`);
      else this.log.warn(fields, `invalid ${w.spec.kind} ${line}`);
    }
  }

  private checkSynced(): void {
    if (this.synced || !this.watched.every((w) => w.listed)) return;
    this.synced = true;
    this.log?.info({ server: serverOf(this.kc), revision: this.revision(), invalidPolicies: this.invalidPolicies() }, 'initial lists done: the model describes the whole cluster');
    this.syncWaiter?.();
    this.syncWaiter = undefined;
  }

  private notify(): void {
    for (const l of this.listeners) {
      try {
        l();
      } catch (e) {
        this.counters.handlerErrors++;
        this.log?.error({ err: errorText(e) }, `a change listener failed: ${errorText(e)}`);
      }
    }
  }
}

/** A 404 from the API server: on a LIST (ListError) or a watch (client-node's statusCode). */
function isNotFound(e: unknown): boolean {
  if (e instanceof ListError) return e.code === 404;
  return typeof e === 'object' && e !== null && (e as { statusCode?: unknown }).statusCode === 404;
}

/** Milliseconds as seconds for messages: one decimal under 10 s. */
function seconds(ms: number): string {
  return (ms / 1000).toFixed(ms < 10_000 ? 1 : 0);
}

/** A copy of plain objects and arrays with every array exactly as long as its content. */
function compact<T>(v: T): T {
  if (Array.isArray(v)) return v.map(compact) as T;
  if (v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) out[k] = compact((v as Record<string, unknown>)[k]);
    return out as T;
  }
  return v;
}

/** Resolves after `ms`, or at once when `signal` aborts (its timer cleared). */
function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

function keyOf(o: KubernetesObject): string {
  const ns = o.metadata?.namespace;
  return ns ? `${ns}/${o.metadata?.name ?? ''}` : (o.metadata?.name ?? '');
}
