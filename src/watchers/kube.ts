// The Kubernetes API as a model source: client-node informers (ListWatch) on Namespaces, Nodes,
// Pods and NetworkPolicies, made fault tolerant.
//
// Invariants:
// - Synced (docs/design.md, invariant synced-before-write): `status().synced` turns true, and `start()` resolves, only
//   after every resource was listed successfully once. Until then the source retries with
//   backoff for ever and says in `status()` what fails; the agent awaits `start()` and so
//   writes nothing while the cluster is half known.
// - The model is kept when the API server goes away: errors only ever cause retries. Objects
//   leave the model only through a DELETED event or a successful LIST that no longer has them.
// - Records are keyed by UID: an object recreated under the same name (which the informer,
//   keyed by namespace/name, reports as an update) is a removal of the old record plus an
//   insertion of the new one.
// - Every LIST reconciles the model by difference with what the server returned (upsert what
//   changed, remove what is gone), whoever triggered it: the initial list, the informer's own
//   relist after 410 Gone, a watchdog restart, the periodic resync. A missed event therefore
//   lasts at most one resync period.
// - Nothing this source runs throws into client-node: every handler is wrapped; a failure is
//   logged, counted and answered with a fresh relist of that resource.
// - Every object goes through `normalize`; an invalid NetworkPolicy is still upserted (it
//   isolates and allows nothing) and is logged once per resourceVersion with the field path and
//   the value received.
// - After `stop()` no timer, request or watch of this source remains (a watch whose response
//   headers never arrive is the exception: client-node gives no handle on it before its 30 s
//   request timeout; it is aborted when that returns).
//
// Memory: the informer caches what it is given. It is given stubs (kind, name, namespace, uid,
// resourceVersion), not the objects: a real Pod with its managedFields weighs kilobytes, and
// ten thousand of them would not fit the agent's memory limit. Objects are normalized as they
// arrive (lists: in the list function; events: in the watch's line handler, the result kept
// with the stub); only the records stay.
//
// Liveness ("is this watch alive?"): a resource is alive when its watch delivered a line (an
// event, or a BOOKMARK, which this source asks for) or a LIST succeeded, within `watchdogMs`.
// A watch that merely reconnects does not count: a server whose watch cache is wedged (the
// double's `stall()`) accepts watches and then says nothing. A resource that stays silent for
// `watchdogMs` is restarted with a fresh LIST; on a truly quiet resource this costs one LIST
// per period and changes nothing in the model. (A real API server sends a watcher its first
// bookmark about a minute after it connects, while client-node's Watch reconnects after 30 s
// without data: so in practice only events keep a real watch "alive", and a resource with no
// change for `watchdogMs` -- typically the agent's own Node, or namespaces -- is relisted once
// per period. A LIST without resourceVersion is a consistent read from etcd, which is exactly
// what a wedged watch cache cannot give.)
//
// Errors: client-node's informer stops on any error but 410 (which it answers with a relist)
// and its own request timeout (a silent reconnect). This source restarts a stopped informer
// with `start()` (which resumes the watch from the last resourceVersion, or relists when that
// expired), after an exponential, jittered backoff (`backoffMinMs` doubling to `backoffMaxMs`),
// for ever. The backoff resets once the restarted informer shows life.

import type { KubeConfig, KubernetesListObject, KubernetesObject } from '@kubernetes/client-node';
import { ListWatch } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { normalize as defaultNormalize, type NormalizeResult } from '../model/normalize.ts';
import { Model } from '../model/store.ts';
import { sameRecord, type ObjectRecord, type ValidationIssue } from '../model/types.ts';
import { ListError, ObservedWatch, abortableDelay, errorText, listRaw, serverOf } from './kube-client.ts';
import type { ModelSource, SourceStats, SourceStatus } from './source.ts';

export type ResourceName = 'namespaces' | 'nodes' | 'pods' | 'networkpolicies';

interface ResourceSpec {
  readonly name: ResourceName;
  readonly kind: ObjectRecord['kind'];
  readonly apiVersion: string;
  readonly path: string;
}

/** Namespaces and Nodes first: a pod's namespace labels are known by the time its pods are. */
const RESOURCES: readonly ResourceSpec[] = [
  { name: 'namespaces', kind: 'Namespace', apiVersion: 'v1', path: '/api/v1/namespaces' },
  { name: 'nodes', kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes' },
  { name: 'pods', kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods' },
  { name: 'networkpolicies', kind: 'NetworkPolicy', apiVersion: 'networking.k8s.io/v1', path: '/apis/networking.k8s.io/v1/networkpolicies' },
];

export interface KubeSourceOptions {
  readonly kubeConfig: KubeConfig;
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
  /** A resource silent (no event, no bookmark, no successful list) this long is restarted with a fresh list. Default 5 min. */
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
  /** Errors that stopped an informer (each followed by a retry), per resource. */
  readonly errors: Readonly<Record<ResourceName, number>>;
  /** Fresh restarts (stop + new informer + list), by reason. */
  readonly restarts: Readonly<Record<'watchdog' | 'resync' | 'handler-error', number>>;
  /** Exceptions caught in handlers and listeners (never thrown into client-node). */
  readonly handlerErrors: number;
  /** Objects currently in the model with validation issues, per kind (a gauge). */
  readonly objectsWithIssues: Readonly<Record<ObjectRecord['kind'], number>>;
}

type State = 'idle' | 'starting' | 'watching' | 'backoff';

interface Entry {
  readonly uid: string;
  readonly rv: string;
  readonly record: ObjectRecord | undefined;
  readonly issues: readonly ValidationIssue[];
  readonly ref: string;
}

interface Watched {
  readonly spec: ResourceSpec;
  readonly fieldSelector: string | undefined;
  /** namespace/name -> what the model holds for it. */
  readonly entries: Map<string, Entry>;
  informer: ListWatch<KubernetesObject> | undefined;
  abort: AbortController;
  state: State;
  listed: boolean;
  /** Consecutive failures without a sign of life in between. */
  failures: number;
  /** Increases on every error of the current informer (start() compares it). */
  errorSeq: number;
  error: string | undefined;
  retryAt: number;
  timer: NodeJS.Timeout | undefined;
  lastAlive: number;
  /** resourceVersion of the last LIST or event applied to the model. */
  rv: string;
  starting: Promise<void> | undefined;
  /** A relist after a handler error is scheduled. */
  restartPending: boolean;
}

const zero = <K extends string>(keys: readonly K[]): Record<K, number> => Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
const NAMES = RESOURCES.map((r) => r.name);

export class KubeSource implements ModelSource {
  readonly model = new Model();
  private readonly kc: KubeConfig;
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
  /** Normalized content of watch events, by the stub the informer passes to the handlers. */
  private readonly prepared = new WeakMap<object, { result?: NormalizeResult; error?: unknown }>();
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
  };

  constructor(o: KubeSourceOptions) {
    this.kc = o.kubeConfig;
    this.log = o.logger;
    this.once = o.once ?? false;
    this.resyncMs = o.resyncMs ?? 600_000;
    this.watchdogMs = o.watchdogMs ?? 300_000;
    this.backoffMinMs = o.backoffMinMs ?? 200;
    this.backoffMaxMs = o.backoffMaxMs ?? 30_000;
    this.listTimeoutMs = o.listTimeoutMs ?? 60_000;
    this.pageSize = o.pageSize ?? 500;
    this.normalizeFn = o.normalize ?? defaultNormalize;
    this.watched = RESOURCES.map((spec) => ({
      spec,
      fieldSelector: spec.name === 'nodes' && o.nodeName !== undefined ? `metadata.name=${o.nodeName}` : undefined,
      entries: new Map(),
      informer: undefined,
      abort: new AbortController(),
      state: 'idle',
      listed: false,
      failures: 0,
      errorSeq: 0,
      error: undefined,
      retryAt: 0,
      timer: undefined,
      lastAlive: 0,
      rv: '',
      starting: undefined,
      restartPending: false,
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
    // In-flight starts end quickly once aborted; a watch still connecting to a server that
    // never answers is bounded by client-node's request timeout: do not wait for that.
    let cap: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(pending), new Promise<void>((r) => (cap = setTimeout(r, 2000)))]);
    clearTimeout(cap);
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /**
   * The resourceVersion each resource's content in the model reflects, e.g.
   * `namespaces=1003,nodes=1001,pods=1042,networkpolicies=1040`. Each model change comes from
   * an event or a LIST with a newer resourceVersion of its resource, so this changes whenever
   * the content does (and sometimes when it does not: an event that changes no record).
   */
  revision(): string {
    return this.watched.map((w) => `${w.spec.name}=${w.rv}`).join(',');
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
    return { synced: true, healthy: true, detail: `watching ${NAMES.join(', ')} at ${server}` };
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
        if (e.issues.length) out.push({ ref: e.ref, kind: w.spec.kind, resourceVersion: e.rv, issues: e.issues });
      }
    }
    return out;
  }

  stats(): KubeSourceStats {
    const objectsWithIssues = { Namespace: 0, Node: 0, Pod: 0, NetworkPolicy: 0, ClusterNetworkPolicy: 0 }; // CNPs are not watched yet
    for (const w of this.watched) for (const e of w.entries.values()) if (e.issues.length) objectsWithIssues[w.spec.kind]++;
    const c = this.counters;
    return { events: { ...c.events }, lists: { ...c.lists }, errors: { ...c.errors }, restarts: { ...c.restarts }, handlerErrors: c.handlerErrors, objectsWithIssues };
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
          throw new Error(`cannot list ${w.spec.name} from the API server ${server}: ${errorText(e)}`, { cause: e });
        }
      }),
    );
    for (let i = 0; i < lists.length; i++) this.reconcile(this.watched[i]!, lists[i]!.items, lists[i]!.resourceVersion);
    for (const w of this.watched) w.listed = true;
    this.synced = true;
  }

  // ------------------------------------------------------------------ informers

  /** A new informer for this resource (fresh cache: its start() lists). */
  private launch(w: Watched): void {
    const abort = new AbortController();
    w.abort = abort;
    const watch = new ObservedWatch(this.kc, {
      signal: abort.signal,
      onLine: (type) => this.onLine(w, abort, type),
      transform: (type, obj) => this.stub(w, obj, type !== 'DELETED'),
    });
    const listFn = async (): Promise<KubernetesListObject<KubernetesObject>> => {
      const l = await this.list(w, abort.signal);
      if (abort.signal.aborted) throw new Error('stopped');
      // The model follows the list here, by difference; the informer's add/update/delete
      // callbacks for the same items then find nothing to do.
      try {
        this.applyList(w, l.items, l.resourceVersion);
      } catch (e) {
        this.counters.handlerErrors++;
        throw new ListError(`applying the list failed: ${errorText(e)}`, undefined, { cause: e });
      }
      return { apiVersion: 'v1', kind: 'List', metadata: { resourceVersion: l.resourceVersion }, items: l.items.map((o) => this.stub(w, o, false)) };
    };
    const inf = new ListWatch<KubernetesObject>(w.spec.path, watch, listFn, false, undefined, w.fieldSelector, { delayFn: abortableDelay(abort.signal) });
    inf.on('add', (o) => this.guard(w, abort, 'add', () => this.onUpsert(w, o)));
    inf.on('update', (o) => this.guard(w, abort, 'update', () => this.onUpsert(w, o)));
    inf.on('delete', (o) => this.guard(w, abort, 'delete', () => this.onDelete(w, o)));
    inf.on('error', (e) => this.guard(w, abort, 'error', () => this.onError(w, abort, e)));
    w.informer = inf;
    void this.startInformer(w, abort);
  }

  /** Stop the current informer; its late callbacks (AbortError included) are ignored. */
  private retire(w: Watched): void {
    w.abort.abort();
    const inf = w.informer;
    w.informer = undefined;
    if (inf) void inf.stop().catch(() => {});
  }

  /** (Re)start the current informer: a first list, or a watch resumed from its last resourceVersion. */
  private async startInformer(w: Watched, abort: AbortController): Promise<void> {
    const inf = w.informer;
    if (!inf || abort.signal.aborted || this.stopped) return;
    w.state = 'starting';
    const seq = w.errorSeq;
    const p = inf.start().catch((e: unknown) => this.onError(w, abort, e));
    w.starting = p;
    await p;
    if (w.starting === p) w.starting = undefined;
    if (abort.signal.aborted || this.stopped || w.errorSeq !== seq) return;
    // The list (if any) and the watch's response headers arrived: connected.
    w.state = 'watching';
    w.lastAlive = Date.now();
    this.recovered(w);
  }

  /** A request of this resource succeeded again after an error. */
  private recovered(w: Watched): void {
    if (w.error === undefined) return;
    this.log?.info({ resource: w.spec.name, after: w.error }, `${w.spec.name}: the API server answers again`);
    w.error = undefined;
  }

  private onError(w: Watched, abort: AbortController, e: unknown): void {
    if (abort.signal.aborted || this.stopped) return; // our own stop() (AbortError) or a retired informer
    w.errorSeq++;
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
      void this.startInformer(w, abort);
    }, delay);
    w.timer.unref();
  }

  /** min * 2^(n-1), capped, times a jitter in [0.75, 1.25) (capped again). */
  private backoff(failures: number): number {
    const base = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(failures - 1, 30));
    return Math.round(Math.min(this.backoffMaxMs, base * (0.75 + Math.random() * 0.5)));
  }

  /** A line from the current informer's watch: an event, a BOOKMARK or an ERROR event. */
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

  /** Replace the informer with a new one that starts with a full list. */
  private restartFresh(w: Watched, reason: 'watchdog' | 'resync' | 'handler-error'): void {
    if (this.stopped) return;
    this.counters.restarts[reason]++;
    const silentS = Math.round((Date.now() - w.lastAlive) / 100) / 10;
    if (reason === 'watchdog') this.log?.warn({ resource: w.spec.name, silentSeconds: silentS }, `${w.spec.name}: no event or bookmark for ${silentS}s; restarting the watch with a fresh list`);
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
   * Run a callback of the informer (or our list reconciliation) so that it never throws into
   * client-node: an exception is logged, counted, and answered with a fresh relist of the
   * resource (the model may have missed that change).
   */
  private guard(w: Watched, abort: AbortController, what: string, fn: () => void): void {
    if (abort.signal.aborted && what !== 'error') return;
    try {
      fn();
    } catch (e) {
      this.counters.handlerErrors++;
      this.log?.error({ resource: w.spec.name, handler: what, err: errorText(e) }, `${w.spec.name}: ${what} handler failed: ${errorText(e)}; the resource will be relisted`);
      if (!this.stopped && !abort.signal.aborted && !w.restartPending) {
        // Not from inside the informer's callback: restart on the next turn, once per burst.
        w.restartPending = true;
        setImmediate(() => {
          w.restartPending = false;
          if (!abort.signal.aborted && !this.stopped) this.restartFresh(w, 'handler-error');
        });
      }
    }
  }

  // ------------------------------------------------------------------ model updates

  private async list(w: Watched, signal?: AbortSignal): Promise<{ resourceVersion: string; items: KubernetesObject[] }> {
    return listRaw(this.kc, w.spec.path, {
      kind: w.spec.kind,
      apiVersion: w.spec.apiVersion,
      pageSize: this.pageSize,
      timeoutMs: this.listTimeoutMs,
      ...(w.fieldSelector ? { fieldSelector: w.fieldSelector } : {}),
      ...(signal ? { signal } : {}),
    });
  }

  private applyList(w: Watched, items: readonly KubernetesObject[], rv: string): void {
    this.reconcile(w, items, rv);
    this.counters.lists[w.spec.name]++;
    this.alive(w);
    this.recovered(w);
    if (!w.listed) {
      w.listed = true;
      this.checkSynced();
    }
  }

  /** Bring this resource's part of the model to exactly `items`, by difference. */
  private reconcile(w: Watched, items: readonly KubernetesObject[], rv: string): void {
    const seen = new Set<string>();
    let changed = false;
    for (const o of items) {
      seen.add(keyOf(o));
      try {
        if (this.upsert(w, o)) changed = true;
      } catch (e) {
        // One object that cannot be applied must not hold up the others; what the model held
        // for it stays (it was seen, so it is not removed).
        this.counters.handlerErrors++;
        this.log?.error({ resource: w.spec.name, object: keyOf(o), err: errorText(e) }, `${w.spec.name}: cannot apply ${keyOf(o)}: ${errorText(e)}; keeping what the model held for it`);
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

  /**
   * What the informer caches for an object: its identity only. With `normalized`, the object
   * is normalized now (a watch event) and the result kept for the add/update handler.
   */
  private stub(w: Watched, o: KubernetesObject, normalized: boolean): KubernetesObject {
    const m = o.metadata ?? {};
    const stub: KubernetesObject = {
      apiVersion: w.spec.apiVersion,
      kind: w.spec.kind,
      metadata: { name: m.name ?? '', ...(m.namespace ? { namespace: m.namespace } : {}), ...(m.uid ? { uid: m.uid } : {}), ...(m.resourceVersion ? { resourceVersion: m.resourceVersion } : {}) },
    };
    if (normalized) {
      try {
        this.prepared.set(stub, { result: this.normalizeFn(o.kind ? o : { ...o, kind: w.spec.kind, apiVersion: w.spec.apiVersion }) });
      } catch (e) {
        this.prepared.set(stub, { error: e });
      }
    }
    return stub;
  }

  /** An add or update from the informer: a watch event (normalized in `stub`) or a list item (already applied). */
  private onUpsert(w: Watched, o: KubernetesObject): void {
    const p = this.prepared.get(o);
    if (!p) return; // a list item: the list function applied the whole list
    this.prepared.delete(o);
    if (p.error !== undefined) throw p.error;
    const changed = this.apply(w, o, p.result!);
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

  /** Insert or replace one object of a list; returns whether the model changed. */
  private upsert(w: Watched, raw: KubernetesObject): boolean {
    if (this.current(w, raw)) return false;
    return this.apply(w, raw, this.normalizeFn(raw.kind ? raw : { ...raw, kind: w.spec.kind, apiVersion: w.spec.apiVersion }));
  }

  /** The model already holds this uid at this resourceVersion. */
  private current(w: Watched, o: KubernetesObject): boolean {
    const cur = w.entries.get(keyOf(o));
    const rv = o.metadata?.resourceVersion ?? '';
    return cur !== undefined && cur.uid === (o.metadata?.uid || keyOf(o)) && rv !== '' && cur.rv === rv;
  }

  /** Store the normalized object under its name, replacing the record of another uid; returns whether the model changed. */
  private apply(w: Watched, o: KubernetesObject, res: NormalizeResult): boolean {
    if (this.current(w, o)) return false;
    const k = keyOf(o);
    const uid = o.metadata?.uid || k;
    const rv = o.metadata?.resourceVersion ?? '';
    const cur = w.entries.get(k);
    let changed = false;
    if (cur?.record && (cur.uid !== uid || !res.record)) {
      // Recreated under the same name: the old record goes, by its own UID.
      this.model.remove(cur.record.uid, cur.record.kind);
      changed = true;
    }
    const keep = cur && cur.uid === uid && res.record && sameRecord(cur.record, res.record);
    if (res.record && !keep) {
      this.model.upsert(res.record);
      changed = true;
    }
    w.entries.set(k, { uid, rv, record: res.record, issues: res.issues, ref: res.ref });
    if (res.issues.length) this.reportIssues(w, res, rv);
    return changed;
  }

  /** Logged once per resourceVersion: upsert runs once per new resourceVersion of an object. */
  private reportIssues(w: Watched, res: NormalizeResult, rv: string): void {
    if (!this.log) return;
    const policy = w.spec.kind === 'NetworkPolicy';
    const r = res.record;
    const where = r && r.kind !== 'Node' && r.kind !== 'Namespace' && r.kind !== 'ClusterNetworkPolicy' ? { namespace: r.namespace, name: r.name } : { name: r?.name };
    for (const i of res.issues) {
      const fields = { object: res.ref, ...where, resourceVersion: rv, field: i.field, value: i.value };
      const line = `${res.ref}: ${i.field ? `${i.field}: ` : ''}${i.message}${i.value !== '' ? ` (got ${i.value})` : ''}`;
      if (policy) this.log.error(fields, `invalid NetworkPolicy ${line}; enforced fail-closed: it isolates the pods it selects and allows nothing`);
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

function keyOf(o: KubernetesObject): string {
  const ns = o.metadata?.namespace;
  return ns ? `${ns}/${o.metadata?.name ?? ''}` : (o.metadata?.name ?? '');
}
