// The few pieces of @kubernetes/client-node the kube source needs, wrapped where its defaults do
// not fit an enforcer:
//
// - `loadKubeConfig`: a kubeconfig file, the default one (KUBECONFIG, ~/.kube/config) or the
//   in-cluster service account, with an optional context; errors name what is missing.
// - `listRaw`: a LIST that returns the objects exactly as the API server sent them (JSON), with
//   pagination and a timeout. The generated typed clients deserialize into model classes, which
//   drops unknown fields and maps a malformed field into something else (a string where a
//   list of rules is expected becomes a list of empty rules, i.e. "allow everything"):
//   normalize must see what the server stored, as it does for watch events (raw JSON too).
// - `ObservedWatch`: client-node's `Watch` that asks for BOOKMARKs, reports every line it
//   receives (the informer's liveness signal), lets the owner replace each object before the
//   informer caches it, and aborts its stream when the owner's signal fires, also when the
//   abort comes while the request was still connecting.
// - `abortableDelay`: the informer's reconnect delay, cancelled (timer cleared) on abort.

import { existsSync } from 'node:fs';
import { IsomorphicFetchHttpLibrary, KubeConfig, RequestContext, HttpMethod, Watch } from '@kubernetes/client-node';
import type { KubernetesObject } from '@kubernetes/client-node';

export interface KubeConfigOptions {
  /** A kubeconfig file. */
  readonly kubeconfig?: string;
  /** A context of that kubeconfig (default: its current-context). */
  readonly context?: string;
  /**
   * Use the pod's service account (KUBERNETES_SERVICE_HOST/PORT and the mounted token) when no
   * kubeconfig file is given. Outside a pod (no KUBERNETES_SERVICE_HOST) the default kubeconfig
   * is used instead.
   */
  readonly inCluster?: boolean;
}

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Whether `loadFromDefault` finds a cluster: KUBECONFIG, ~/.kube/config, or a pod's service
 * account (otherwise it silently falls back to http://localhost:8080).
 */
export function defaultKubeconfigPresent(env: NodeJS.ProcessEnv = process.env, home = env.HOME): boolean {
  return Boolean(env.KUBECONFIG) || (home !== undefined && home !== '' && existsSyncSafe(`${home}/.kube/config`)) || existsSyncSafe(SERVICE_ACCOUNT_TOKEN);
}

function existsSyncSafe(p: string): boolean {
  try {
    return existsSync(p);
  } catch {
    return false;
  }
}

export function loadKubeConfig(o: KubeConfigOptions = {}): KubeConfig {
  const kc = new KubeConfig();
  if (o.kubeconfig) {
    try {
      kc.loadFromFile(o.kubeconfig);
    } catch (e) {
      throw new Error(`cannot read kubeconfig ${o.kubeconfig}: ${errorText(e)}`);
    }
  } else if (o.inCluster && process.env.KUBERNETES_SERVICE_HOST) {
    kc.loadFromCluster();
  } else {
    try {
      kc.loadFromDefault();
    } catch (e) {
      throw new Error(`cannot read the default kubeconfig (KUBECONFIG or ~/.kube/config): ${errorText(e)}`);
    }
  }
  if (o.context !== undefined) {
    if (!kc.getContextObject(o.context)) {
      const have = kc.getContexts().map((c) => c.name);
      throw new Error(`context ${JSON.stringify(o.context)} is not in the kubeconfig (it has: ${have.join(', ') || 'none'})`);
    }
    kc.setCurrentContext(o.context);
  }
  if (!kc.getCurrentCluster()) {
    throw new Error(`the kubeconfig has no cluster for context ${JSON.stringify(kc.getCurrentContext())}`);
  }
  return kc;
}

/** The API server URL of the current context (for messages). */
export function serverOf(kc: KubeConfig): string {
  return kc.getCurrentCluster()?.server ?? '(no cluster)';
}

/** An error's message with its network cause (`fetch failed (ECONNREFUSED)`), on one line. */
export function errorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e.name === 'AbortError') return 'aborted';
  if (e.name === 'TimeoutError') return 'timed out';
  const cause = (e as { cause?: unknown }).cause;
  const code = cause && typeof cause === 'object' ? (cause as { code?: unknown }).code : undefined;
  const status = (e as { statusCode?: unknown }).statusCode;
  const parts = [e.message];
  if (typeof code === 'string') parts.push(`(${code})`);
  else if (typeof status === 'number' && !e.message.includes(String(status))) parts.push(`(HTTP ${status})`);
  return parts.join(' ');
}

/** A LIST that failed: the HTTP status (when the server answered) and the Status message. */
export class ListError extends Error {
  /** HTTP status code, absent for network errors and timeouts. */
  readonly code: number | undefined;
  constructor(message: string, code?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ListError';
    this.code = code;
  }
}

export interface RawList {
  readonly resourceVersion: string;
  /** Items as sent, with `kind` and `apiVersion` filled in (list items carry neither). */
  readonly items: KubernetesObject[];
}

export interface ListOptions {
  readonly kind: string;
  readonly apiVersion: string;
  readonly fieldSelector?: string;
  readonly labelSelector?: string;
  /** Page size (`limit`); 0 lists in one response. */
  readonly pageSize?: number;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

const http = new IsomorphicFetchHttpLibrary();

/**
 * LIST `path` as raw JSON, page by page (a consistent snapshot: continue pages are served at the
 * first page's revision). An expired continue token (410) restarts the list once without
 * pagination, as client-go's pager does.
 */
export async function listRaw(kc: KubeConfig, path: string, o: ListOptions): Promise<RawList> {
  try {
    return await listPages(kc, path, o, o.pageSize ?? 500);
  } catch (e) {
    if (e instanceof ListError && e.code === 410 && (o.pageSize ?? 500) > 0) return listPages(kc, path, o, 0);
    throw e;
  }
}

async function listPages(kc: KubeConfig, path: string, o: ListOptions, pageSize: number): Promise<RawList> {
  const items: KubernetesObject[] = [];
  let resourceVersion = '';
  let cont = '';
  const server = serverOf(kc);
  do {
    const url = new URL(server.replace(/\/+$/, '') + path);
    if (o.fieldSelector) url.searchParams.set('fieldSelector', o.fieldSelector);
    if (o.labelSelector) url.searchParams.set('labelSelector', o.labelSelector);
    if (pageSize > 0) url.searchParams.set('limit', String(pageSize));
    if (cont) url.searchParams.set('continue', cont);
    const page = await getJson(kc, url.toString(), o);
    const meta = (page.metadata ?? {}) as { resourceVersion?: string; continue?: string };
    if (!cont) resourceVersion = meta.resourceVersion ?? '';
    const pageItems = Array.isArray(page.items) ? (page.items as KubernetesObject[]) : [];
    for (const it of pageItems) {
      if (it && typeof it === 'object') items.push({ ...it, kind: it.kind ?? o.kind, apiVersion: it.apiVersion ?? o.apiVersion });
    }
    cont = typeof meta.continue === 'string' ? meta.continue : '';
  } while (cont);
  return { resourceVersion, items };
}

async function getJson(kc: KubeConfig, url: string, o: ListOptions): Promise<Record<string, unknown>> {
  const what = `list ${new URL(url).pathname}`;
  const ctx = new RequestContext(url, HttpMethod.GET);
  ctx.setHeaderParam('Accept', 'application/json');
  const signals = [AbortSignal.timeout(o.timeoutMs ?? 60_000), ...(o.signal ? [o.signal] : [])];
  ctx.setSignal(AbortSignal.any(signals));
  let text: string;
  let status: number;
  try {
    await kc.applySecurityAuthentication(ctx);
    const res = await http.send(ctx).toPromise();
    status = res.httpStatusCode;
    text = await res.body.text();
  } catch (e) {
    throw new ListError(`${what}: ${errorText(e)}`, undefined, { cause: e });
  } finally {
    // The kubeconfig makes one connection pool per request (TLS options): close it, so no
    // idle keep-alive socket outlives the list.
    void ctx.getDispatcher()?.close().catch(() => {});
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (status !== 200) {
    const msg = body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string' ? (body as { message: string }).message : text.slice(0, 200);
    throw new ListError(`${what}: HTTP ${status}: ${msg}`, status);
  }
  if (!body || typeof body !== 'object') throw new ListError(`${what}: the response is not a JSON object`, status);
  return body as Record<string, unknown>;
}

/** Liveness hooks of one informer's watch. */
export interface WatchObserver {
  /** The owner stopped this informer: abort its streams, open no new one. */
  readonly signal: AbortSignal;
  /** A line arrived (an event, a BOOKMARK or an ERROR event): the stream is alive. */
  readonly onLine: (type: string) => void;
  /**
   * What the informer gets (and caches) instead of the object of an ADDED, MODIFIED or DELETED
   * event. Must not throw: Watch drops a line whose handler throws, silently.
   */
  readonly transform?: (type: string, obj: KubernetesObject) => KubernetesObject;
}

/**
 * client-node's Watch, plus: BOOKMARK events requested (the informer already handles them: they
 * advance its resourceVersion), every received line reported, and the stream aborted on the
 * owner's signal. ListWatch's own stop() cannot abort a watch whose response headers have not
 * arrived yet (it only holds the controller once `watch()` returns); this does.
 */
export class ObservedWatch extends Watch {
  private readonly observer: WatchObserver;

  constructor(kc: KubeConfig, observer: WatchObserver) {
    super(kc);
    this.observer = observer;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const { signal, onLine, transform } = this.observer;
    if (signal.aborted) {
      // Stopped while the informer was between requests: open nothing.
      const c = new AbortController();
      c.abort();
      return c;
    }
    let controller: AbortController | undefined;
    const onAbort = () => controller?.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      controller = await super.watch(
        path,
        { ...queryParams, allowWatchBookmarks: true },
        (phase, obj, raw) => {
          onLine(phase);
          const event = phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED';
          callback(phase, transform && event && obj && typeof obj === 'object' ? transform(phase, obj as KubernetesObject) : obj, raw);
        },
        (err) => {
          signal.removeEventListener('abort', onAbort);
          done(err);
        },
      );
    } catch (e) {
      // Watch throws (instead of calling done) when authentication fails before the request
      // (an exec plugin, an unreadable token file). From the informer's own reconnect that
      // would be an unhandled rejection and a silently dead informer: report it as an error.
      signal.removeEventListener('abort', onAbort);
      const c = new AbortController();
      c.abort();
      done(e);
      return c;
    }
    if (signal.aborted) controller.abort();
    return controller;
  }
}

/** A delay for ListWatch's reconnect backoff that clears its timer on abort (and then never resolves). */
export function abortableDelay(signal: AbortSignal): (ms: number) => Promise<void> {
  return (ms) =>
    new Promise<void>((resolve) => {
      if (signal.aborted) return;
      const onAbort = () => clearTimeout(t);
      const t = setTimeout(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal.addEventListener('abort', onAbort, { once: true });
    });
}
