// A small client for the Kubernetes API, just what the kube source needs, on node:http(s):
//
// - `loadKubeConfig`: a kubeconfig file, the default one (KUBECONFIG, ~/.kube/config) or the
//   in-cluster service account, with an optional context; errors name what is missing. Tokens,
//   token files (re-read, for rotated service account tokens), client certificates, basic auth,
//   CA files or data, insecure-skip-tls-verify and tls-server-name are handled here; a user
//   that needs an exec plugin or an auth provider is handed to @kubernetes/client-node's
//   KubeConfig, loaded only then.
// - `listRaw`: a LIST that returns the objects exactly as the API server sent them (JSON), with
//   pagination and a timeout; with `onItems`, each page is handed over as it arrives and not
//   kept, so a big resource is never held raw in memory all at once. Typed clients deserialize
//   into model classes, which drops unknown fields and maps a malformed field into something
//   else (a string where a list of rules is expected becomes a list of empty rules, i.e. "allow
//   everything"): normalize must see what the server stored, as it does for watch events.
// - `watchStream`: one WATCH request, its events handed over line by line as JSON, ended by
//   the server (its deadline), an idle timeout, an error or the caller's signal.
//
// Why not @kubernetes/client-node at run time: importing it loads its generated API (every
// model and API class), about 55 MB of the agent's resident memory before it holds a single
// object, more than the whole model of a 10k-pod cluster (the agent's memory targets, README
// "Performance"). The agent reads three kinds of request; this file is what they need.
// Anything with the KubeConfig shape below works too: client-node's own KubeConfig (tests
// build one from the API server double) is used through it unchanged.

import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { errorText } from '../util/error-text.ts';

/** The one error-text helper (src/util/error-text.ts), re-exported for this module's users. */
export { errorText };

/** An object as the API server sends it (the fields the kube source reads). */
export interface KubernetesObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; uid?: string; resourceVersion?: string; [field: string]: unknown };
  [field: string]: unknown;
}

/**
 * Where the API server is and how to authenticate to it: the shape of both the lean config
 * below and @kubernetes/client-node's KubeConfig.
 */
export interface KubeAccess {
  getCurrentCluster(): { readonly server: string } | null;
  /** Sets TLS options (ca, cert, key, rejectUnauthorized, servername) and auth headers on `opts`. */
  applyToHTTPSOptions(opts: https.RequestOptions): Promise<void>;
}

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

const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const SERVICE_ACCOUNT_TOKEN = `${SERVICE_ACCOUNT_DIR}/token`;
/** A token file is read again after this long (kubelet rotates projected service account tokens). */
const TOKEN_FILE_TTL_MS = 60_000;

/**
 * Whether a default kubeconfig is there to be read: KUBECONFIG, ~/.kube/config, or a pod's
 * service account.
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

export interface ClusterInfo {
  readonly name: string;
  readonly server: string;
  readonly caFile?: string;
  readonly caData?: string;
  readonly skipTLSVerify: boolean;
  readonly tlsServerName?: string;
}

interface UserInfo {
  readonly name: string;
  readonly token?: string;
  readonly tokenFile?: string;
  readonly certFile?: string;
  readonly certData?: string;
  readonly keyFile?: string;
  readonly keyData?: string;
  readonly username?: string;
  readonly password?: string;
  readonly impersonate?: string;
  /** An exec plugin or an auth provider: authenticated through client-node's KubeConfig. */
  readonly delegated: boolean;
}

/** A kubeconfig context resolved to its cluster and user. */
export class LeanKubeConfig implements KubeAccess {
  private token: { value: string; readAt: number } | undefined;
  private delegate: Promise<KubeAccess> | undefined;

  private readonly context: string;
  private readonly contexts: readonly string[];
  private readonly cluster: ClusterInfo;
  private readonly user: UserInfo | undefined;
  /** Where the context was read: client-node loads the same files for a delegated user. */
  private readonly files: readonly string[];

  constructor(context: string, contexts: readonly string[], cluster: ClusterInfo, user: UserInfo | undefined, files: readonly string[]) {
    this.context = context;
    this.contexts = contexts;
    this.cluster = cluster;
    this.user = user;
    this.files = files;
  }

  getCurrentContext(): string {
    return this.context;
  }

  getContexts(): { name: string }[] {
    return this.contexts.map((name) => ({ name }));
  }

  getCurrentCluster(): ClusterInfo {
    return this.cluster;
  }

  async applyToHTTPSOptions(opts: https.RequestOptions): Promise<void> {
    const c = this.cluster;
    const u = this.user;
    if (u?.delegated) return (await this.delegated()).applyToHTTPSOptions(opts);
    if (c.skipTLSVerify) opts.rejectUnauthorized = false;
    if (c.tlsServerName) opts.servername = c.tlsServerName;
    const ca = fileOrData(c.caFile, c.caData);
    if (ca) opts.ca = ca;
    if (!u) return;
    const cert = fileOrData(u.certFile, u.certData);
    if (cert) opts.cert = cert;
    const key = fileOrData(u.keyFile, u.keyData);
    if (key) opts.key = key;
    const headers = (opts.headers ??= {}) as Record<string, string>;
    if (u.impersonate) headers['Impersonate-User'] = u.impersonate;
    const token = u.token ?? this.tokenFromFile();
    if (token) headers['Authorization'] = `Bearer ${token}`;
    else if (u.username !== undefined) opts.auth = `${u.username}:${u.password ?? ''}`;
  }

  private tokenFromFile(): string | undefined {
    const file = this.user?.tokenFile;
    if (!file) return undefined;
    const now = Date.now();
    if (!this.token || now - this.token.readAt > TOKEN_FILE_TTL_MS) {
      try {
        this.token = { value: readFileSync(file, 'utf8').trim(), readAt: now };
      } catch (e) {
        throw new Error(`cannot read the token file ${file}: ${errorText(e)}`, { cause: e });
      }
    }
    return this.token.value;
  }

  private delegated(): Promise<KubeAccess> {
    this.delegate ??= (async () => {
      const { KubeConfig } = await import('@kubernetes/client-node');
      const kc = new KubeConfig();
      kc.loadFromFile(this.files[0]!);
      for (const f of this.files.slice(1)) {
        const more = new KubeConfig();
        more.loadFromFile(f);
        kc.mergeConfig(more);
      }
      kc.setCurrentContext(this.context);
      return kc;
    })();
    return this.delegate;
  }
}

function fileOrData(file: string | undefined, data: string | undefined): Buffer | undefined {
  if (file) return readFileSync(file);
  if (data) return Buffer.from(data, 'base64');
  return undefined;
}

type Yaml = Record<string, unknown>;
const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

/** The named entries of a kubeconfig list (`clusters`, `users`, `contexts`): first one of a name wins. */
function named(docs: readonly { doc: Yaml; dir: string }[], list: string, field: string): Map<string, { value: Yaml; dir: string }> {
  const out = new Map<string, { value: Yaml; dir: string }>();
  for (const { doc, dir } of docs) {
    const items = doc[list];
    if (!Array.isArray(items)) continue;
    for (const it of items as Yaml[]) {
      const name = str(it?.['name']);
      const value = it?.[field];
      if (name !== undefined && value && typeof value === 'object' && !out.has(name)) out.set(name, { value: value as Yaml, dir });
    }
  }
  return out;
}

/** Read kubeconfig files (merged in order, as kubectl merges KUBECONFIG) and resolve one context. */
function fromFiles(files: readonly string[], context: string | undefined): LeanKubeConfig {
  const docs = files.map((file) => {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`cannot read kubeconfig ${file}: ${errorText(e)}`, { cause: e });
    }
    if (!doc || typeof doc !== 'object') throw new Error(`cannot read kubeconfig ${file}: not a kubeconfig (got ${JSON.stringify(doc)})`);
    return { doc: doc as Yaml, dir: dirname(file) };
  });
  const contexts = named(docs, 'contexts', 'context');
  const name = context ?? docs.map((d) => str(d.doc['current-context'])).find((c) => c !== undefined);
  if (name === undefined) throw new Error(`the kubeconfig ${files.join(':')} has no current-context (give --context; it has: ${[...contexts.keys()].join(', ') || 'none'})`);
  const ctx = contexts.get(name);
  if (!ctx) throw new Error(`context ${JSON.stringify(name)} is not in the kubeconfig (it has: ${[...contexts.keys()].join(', ') || 'none'})`);
  const path = (p: unknown, dir: string) => {
    const s = str(p);
    return s === undefined ? undefined : isAbsolute(s) ? s : join(dir, s);
  };
  const clusterName = str(ctx.value['cluster']);
  const cl = clusterName === undefined ? undefined : named(docs, 'clusters', 'cluster').get(clusterName);
  const server = str(cl?.value['server']);
  if (!cl || server === undefined) throw new Error(`the kubeconfig has no cluster for context ${JSON.stringify(name)} (cluster ${JSON.stringify(clusterName ?? null)})`);
  if (cl.value['proxy-url'] !== undefined) throw new Error(`cluster ${JSON.stringify(clusterName)} of the kubeconfig sets proxy-url, which policyctl does not support (got ${JSON.stringify(cl.value['proxy-url'])})`);
  const cluster: ClusterInfo = {
    name: clusterName!,
    server,
    ...opt('caFile', path(cl.value['certificate-authority'], cl.dir)),
    ...opt('caData', str(cl.value['certificate-authority-data'])),
    skipTLSVerify: cl.value['insecure-skip-tls-verify'] === true,
    ...opt('tlsServerName', str(cl.value['tls-server-name'])),
  };
  const userName = str(ctx.value['user']);
  const us = userName === undefined ? undefined : named(docs, 'users', 'user').get(userName);
  let user: UserInfo | undefined;
  if (us) {
    const u = us.value;
    const provider = u['auth-provider'] as Yaml | undefined;
    user = {
      name: userName!,
      ...opt('token', str(u['token'])),
      ...opt('tokenFile', path(u['tokenFile'], us.dir)),
      ...opt('certFile', path(u['client-certificate'], us.dir)),
      ...opt('certData', str(u['client-certificate-data'])),
      ...opt('keyFile', path(u['client-key'], us.dir)),
      ...opt('keyData', str(u['client-key-data'])),
      ...opt('username', str(u['username'])),
      ...opt('password', str(u['password'])),
      ...opt('impersonate', str(u['as'])),
      delegated: u['exec'] !== undefined || (provider !== undefined && provider !== null),
    };
  }
  return new LeanKubeConfig(name, [...contexts.keys()], cluster, user, files);
}

function opt<K extends string, V>(key: K, value: V | undefined): { [k in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [k in K]?: V };
}

/** The pod's service account (as client-go's rest.InClusterConfig). */
function inClusterConfig(env: NodeJS.ProcessEnv): LeanKubeConfig {
  const host = env.KUBERNETES_SERVICE_HOST!;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const cluster: ClusterInfo = { name: 'inCluster', server, caFile: `${SERVICE_ACCOUNT_DIR}/ca.crt`, skipTLSVerify: false };
  const user: UserInfo = { name: 'inClusterUser', tokenFile: SERVICE_ACCOUNT_TOKEN, delegated: false };
  return new LeanKubeConfig('inClusterContext', ['inClusterContext'], cluster, user, []);
}

export function loadKubeConfig(o: KubeConfigOptions = {}): LeanKubeConfig {
  if (o.kubeconfig) return fromFiles([o.kubeconfig], o.context);
  const env = process.env;
  if (o.inCluster && env.KUBERNETES_SERVICE_HOST) {
    if (o.context !== undefined) throw new Error(`--context ${JSON.stringify(o.context)} needs a kubeconfig file: in a pod the service account is used`);
    return inClusterConfig(env);
  }
  const files = (env.KUBECONFIG ?? '').split(':').filter((f) => f !== '');
  if (files.length === 0 && env.HOME && existsSyncSafe(join(env.HOME, '.kube', 'config'))) files.push(join(env.HOME, '.kube', 'config'));
  if (files.length > 0) {
    try {
      return fromFiles(files, o.context);
    } catch (e) {
      throw new Error(`cannot read the default kubeconfig (KUBECONFIG or ~/.kube/config): ${errorText(e)}`, { cause: e });
    }
  }
  if (env.KUBERNETES_SERVICE_HOST && existsSyncSafe(SERVICE_ACCOUNT_TOKEN) && o.context === undefined) return inClusterConfig(env);
  throw new Error('cannot read the default kubeconfig (KUBECONFIG or ~/.kube/config): none is set or present, and this is not a pod with a service account');
}

/** The API server URL of the current context (for messages). */
export function serverOf(kc: KubeAccess): string {
  return kc.getCurrentCluster()?.server ?? '(no cluster)';
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

/** A WATCH that failed: the HTTP status when the server refused it, else the network error. */
export class WatchError extends Error {
  /** HTTP status code, absent for network errors. */
  readonly statusCode: number | undefined;
  constructor(message: string, statusCode?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WatchError';
    this.statusCode = statusCode;
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP

interface Opened {
  readonly req: http.ClientRequest;
  readonly res: http.IncomingMessage;
}

/**
 * One GET to the API server; resolves with the response once its headers arrived. A new
 * connection per request (no pool outlives it), TLS and auth as the kubeconfig says.
 */
async function open(kc: KubeAccess, path: string, query: Record<string, string | undefined>, signal: AbortSignal): Promise<Opened> {
  const url = new URL(serverOf(kc).replace(/\/+$/, '') + path);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' }, agent: false };
  await kc.applyToHTTPSOptions(opts);
  signal.throwIfAborted();
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise<Opened>((resolve, reject) => {
    const req = mod.request(url, { ...opts, signal }, (res) => resolve({ req, res }));
    req.on('error', reject);
    req.end();
  });
}

/** A response's whole body as text (a LIST page, or an error Status). */
function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
    res.on('aborted', () => reject(new Error('terminated: the connection closed before the response was complete')));
  });
}

/** The message of a Status body, else the start of the text. */
function statusMessage(text: string): string {
  try {
    const body = JSON.parse(text) as { message?: unknown };
    if (typeof body.message === 'string') return body.message;
  } catch {
    /* not JSON */
  }
  return text.slice(0, 200);
}

export interface RawList {
  readonly resourceVersion: string;
  /** Items as sent, with `kind` and `apiVersion` filled in (list items carry neither); empty with `onItems`. */
  readonly items: KubernetesObject[];
}

export interface ListOptions {
  readonly kind: string;
  readonly apiVersion: string;
  readonly fieldSelector?: string;
  readonly labelSelector?: string;
  /** Page size (`limit`); 0 lists in one response. */
  readonly pageSize?: number;
  /** Timeout of each page's request. Default 60 s. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /**
   * Called with each page's items (kind and apiVersion filled in) as the page arrives; they are
   * then not kept, and the result's `items` is empty. A throw aborts the list.
   */
  readonly onItems?: (items: KubernetesObject[]) => void;
}

/**
 * LIST `path` as raw JSON, page by page (a consistent snapshot: continue pages are served at the
 * first page's revision). An expired continue token (410) restarts the list once without
 * pagination, as client-go's pager does.
 */
export async function listRaw(kc: KubeAccess, path: string, o: ListOptions): Promise<RawList> {
  try {
    return await listPages(kc, path, o, o.pageSize ?? 500);
  } catch (e) {
    if (e instanceof ListError && e.code === 410 && (o.pageSize ?? 500) > 0) return listPages(kc, path, o, 0);
    throw e;
  }
}

async function listPages(kc: KubeAccess, path: string, o: ListOptions, pageSize: number): Promise<RawList> {
  const items: KubernetesObject[] = [];
  let resourceVersion = '';
  let cont = '';
  do {
    const page = await getPage(kc, path, o, {
      ...(o.fieldSelector ? { fieldSelector: o.fieldSelector } : {}),
      ...(o.labelSelector ? { labelSelector: o.labelSelector } : {}),
      ...(pageSize > 0 ? { limit: String(pageSize) } : {}),
      ...(cont ? { continue: cont } : {}),
    });
    const meta = (page.metadata ?? {}) as { resourceVersion?: string; continue?: string };
    if (!cont) resourceVersion = meta.resourceVersion ?? '';
    const pageItems = Array.isArray(page.items) ? (page.items as KubernetesObject[]) : [];
    const typed: KubernetesObject[] = [];
    for (const it of pageItems) {
      if (!it || typeof it !== 'object') continue;
      // Items of a list carry no kind or apiVersion: filled in place (the page is ours alone).
      it.kind ??= o.kind;
      it.apiVersion ??= o.apiVersion;
      typed.push(it);
    }
    if (o.onItems) o.onItems(typed);
    else items.push(...typed);
    cont = typeof meta.continue === 'string' ? meta.continue : '';
  } while (cont);
  return { resourceVersion, items };
}

async function getPage(kc: KubeAccess, path: string, o: ListOptions, query: Record<string, string>): Promise<Record<string, unknown>> {
  const what = `list ${path}`;
  const signal = AbortSignal.any([AbortSignal.timeout(o.timeoutMs ?? 60_000), ...(o.signal ? [o.signal] : [])]);
  let text: string;
  let status: number;
  try {
    const { res } = await open(kc, path, query, signal);
    status = res.statusCode ?? 0;
    text = await readBody(res);
  } catch (e) {
    throw new ListError(`${what}: ${errorText(signal.aborted ? (signal.reason ?? e) : e)}`, undefined, { cause: e });
  }
  if (status !== 200) throw new ListError(`${what}: HTTP ${status}: ${statusMessage(text)}`, status);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!body || typeof body !== 'object') throw new ListError(`${what}: the response is not a JSON object`, status);
  return body as Record<string, unknown>;
}

/**
 * One GET of `path` (e.g. a pod proxy path, `/api/v1/namespaces/NS/pods/NAME:PORT/proxy/drops`):
 * the body when the server answers 200, else an error with the status and the Status message.
 */
export async function getText(kc: KubeAccess, path: string, query: Record<string, string | undefined> = {}, timeoutMs = 10_000): Promise<string> {
  const signal = AbortSignal.timeout(timeoutMs);
  let status: number;
  let text: string;
  try {
    const { res } = await open(kc, path, query, signal);
    status = res.statusCode ?? 0;
    text = await readBody(res);
  } catch (e) {
    throw new Error(`GET ${path}: ${errorText(signal.aborted ? (signal.reason ?? e) : e)}`, { cause: e });
  }
  if (status !== 200) throw new Error(`GET ${path}: HTTP ${status}: ${statusMessage(text)}`);
  return text;
}

export interface WatchOptions {
  /** Query parameters besides `watch` (resourceVersion, allowWatchBookmarks, timeoutSeconds, fieldSelector). */
  readonly query: Record<string, string | undefined>;
  /** Ends the watch (the promise then rejects with an AbortError). */
  readonly signal: AbortSignal;
  /** No byte for this long (a bookmark included): the watch ends with a TimeoutError. */
  readonly idleTimeoutMs: number;
  /** The server accepted the watch (HTTP 200, headers received). */
  readonly onOpen?: () => void;
  /** Each event, in order: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR, with its object. */
  readonly onEvent: (type: string, object: KubernetesObject) => void;
}

/**
 * One WATCH request on `path`. Resolves when the server ends the stream cleanly (its deadline,
 * timeoutSeconds); rejects with a WatchError carrying the HTTP status when the server refuses
 * the watch, a WatchError "terminated" when the connection breaks mid-stream, a TimeoutError
 * after `idleTimeoutMs` without a byte, or the signal's AbortError. A line that is not JSON is
 * skipped (a cut connection ends the stream right after it).
 */
export async function watchStream(kc: KubeAccess, path: string, o: WatchOptions): Promise<void> {
  const local = new AbortController();
  const signal = AbortSignal.any([o.signal, local.signal]);
  let idle: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(idle);
    idle = setTimeout(() => local.abort(new DOMException(`no data for ${Math.round(o.idleTimeoutMs / 1000)} s`, 'TimeoutError')), o.idleTimeoutMs);
    idle.unref();
  };
  arm();
  try {
    let opened: Opened;
    try {
      opened = await open(kc, path, { ...o.query, watch: 'true' }, signal);
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      throw new WatchError(errorText(e), undefined, { cause: e });
    }
    const { res } = opened;
    if (res.statusCode !== 200) {
      const text = await readBody(res).catch(() => '');
      throw new WatchError(`HTTP ${res.statusCode}: ${statusMessage(text)}`, res.statusCode);
    }
    o.onOpen?.();
    arm();
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      let ended = false;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        arm();
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim() === '') continue;
          let ev: { type?: unknown; object?: unknown };
          try {
            ev = JSON.parse(line) as typeof ev;
          } catch {
            continue;
          }
          if (typeof ev.type !== 'string' || !ev.object || typeof ev.object !== 'object') continue;
          try {
            o.onEvent(ev.type, ev.object as KubernetesObject);
          } catch (e) {
            // Never out of the stream's event handler (that would be an uncaught exception).
            ended = true;
            res.destroy();
            reject(e);
            return;
          }
        }
      });
      res.on('end', () => {
        ended = true;
        resolve();
      });
      const broken = (e?: unknown) => {
        if (ended) return;
        ended = true;
        if (signal.aborted) reject(signal.reason);
        else reject(new WatchError('terminated', undefined, e !== undefined ? { cause: e } : undefined));
      };
      res.on('error', broken);
      res.on('aborted', () => broken());
      res.on('close', () => broken());
    });
  } finally {
    clearTimeout(idle);
    local.abort();
  }
}
