// The agent's side of policyctl-cni (src/cni/plugin.ts): a unix socket on the node, one JSON
// request per connection (or one whole call forwarded by the native front end, which the agent
// runs through the plugin's own code: src/cni/shim-frame.ts), answered once the pod is enforced (ADD), once its address is gone
// from every set and from conntrack (DEL), or with the reason it is not.
//
// ADD: the pod's labels come from the model (the source's pod object: the API lists a pod
// before kubelet starts its sandbox; the server waits for it within the plugin's timeout). The
// address the plugin reports is authoritative for that pod until the API agrees (CniOverlay, a
// model adjuster): the pod becomes enforceable at once, the agent syncs, and the answer comes
// when a sync that includes it is in force.
// DEL: the overlay withholds the sandbox's addresses from the pod (even while the API still
// reports them); once that is in force, every conntrack entry from or to them is deleted; then
// the answer. The runtime runs DEL for this plugin before host-local releases the address.
//
// Invariants:
// - "ok" to ADD means: a successful sync that applied the model with this pod's address (and its
//   policies) has returned. Anything short of that is an error the runtime retries.
// - The socket is the node's root's only (folder created 0700, socket 0600).
// - A request never waits longer than the plugin said it would (`timeoutMs`, capped).

import { chmod, mkdir, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { CNI_ERROR, errorOutput, LATEST, runPlugin, type AgentReply, type AgentRequest, type PluginInput, type PluginOutput } from '../cni/plugin.ts';
import { encodeAnswer, readCall } from '../cni/shim-frame.ts';
import { CniOverlay } from '../model/cni-overlay.ts';
import type { PodRecord } from '../model/types.ts';
import { isEnforceable } from '../model/types.ts';
import { deleteAddressFlows } from '../sync/conntrack.ts';
import type { Runner } from '../sync/runner.ts';
import type { ModelSource } from '../watchers/source.ts';
import { errorText } from '../util/error-text.ts';

/** What the server needs of the Agent. */
export interface CniAgent {
  waitApplied(generation: number, timeoutMs: number): Promise<boolean>;
  status(): { readonly ready: boolean; readonly reasons: readonly string[]; readonly lastError?: string };
}

export interface CniServerOptions {
  readonly socketPath: string;
  /** This node's name: a pod the plugin reports gets it when its record has none yet. */
  readonly node: string;
  readonly source: Pick<ModelSource, 'model' | 'status'>;
  readonly agent: CniAgent;
  /** Runs `conntrack` in the node's namespace. */
  readonly runner: Runner;
  readonly logger: Logger;
  /** Cap on any request's wait, whatever the plugin asks. Default 120 s. */
  readonly maxTimeoutMs?: number;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const MAX_REQUEST_BYTES = 64 * 1024;
/** A forwarded call holds the whole network configuration (with prevResult): more room. */
const MAX_CALL_BYTES = 4 * 1024 * 1024;

class Refusal extends Error {
  readonly code: number;
  constructor(code: number, msg: string) {
    super(msg);
    this.code = code;
  }
}

const secs = (ms: number) => `${Math.round(ms / 100) / 10} s`;

export class CniServer {
  readonly overlay: CniOverlay;
  private readonly o: CniServerOptions;
  private server: Server | undefined;
  private readonly podWaiters = new Map<string, Set<() => void>>();
  private readonly disposers: (() => void)[] = [];
  private readonly sockets = new Set<Socket>();
  /** Requests received, by protocol: JSON from the Node plugin, whole calls from the native front end. */
  readonly received = { json: 0, call: 0 };

  constructor(o: CniServerOptions) {
    this.o = o;
    this.overlay = new CniOverlay(o.node);
    const model = o.source.model;
    this.disposers.push(model.addAdjuster(this.overlay.adjuster));
    this.disposers.push(
      model.subscribe((c) => {
        if (c.kind !== 'Pod') return;
        const r = (c.after ?? c.before) as PodRecord;
        this.overlay.sourceChanged(r.namespace, r.name, c.uid, c.after ? (model.sourceRecord(c.uid, 'Pod') as PodRecord | undefined) : undefined);
        const waiters = this.podWaiters.get(`${r.namespace}/${r.name}`);
        if (waiters) for (const w of waiters) w();
      }),
    );
  }

  /** Create the socket (its folder 0700 when missing, the socket 0600); a stale socket file is replaced. */
  async listen(): Promise<void> {
    const path = this.o.socketPath;
    if (Buffer.byteLength(path) > 107) throw new Error(`CNI socket path ${path} is too long for a unix socket (at most 107 bytes)`);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await rm(path, { force: true });
    // Half-open: the native front end ends its side once it has sent the call; the answer still
    // has to go back on this one (Node would otherwise end it at once).
    const server = createServer({ allowHalfOpen: true }, (sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.o.logger.error({ err: e, socket: path }, 'CNI socket error'));
    await chmod(path, 0o600);
    this.server = server;
    this.o.logger.info({ socket: path }, 'serving policyctl-cni');
  }

  /** Stop answering (a plugin then fails: no agent) and remove the socket file. */
  async close(): Promise<void> {
    for (const d of this.disposers.splice(0)) d();
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) {
      await new Promise<void>((r) => server.close(() => r()));
      await rm(this.o.socketPath, { force: true });
    }
  }

  private accept(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    let handled = false;
    sock.on('end', () => {
      // The caller stopped sending before a whole request came: nothing will complete it.
      if (!handled) {
        handled = true;
        sock.end();
      }
    });
    sock.on('data', (chunk: Buffer) => {
      if (handled) return;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      // The first byte tells the two protocols apart: "{" a JSON request (the Node plugin), "p" a
      // whole call forwarded by the native front end (src/cni/shim-frame.ts).
      if (buf[0] !== 0x7b) {
        let call: PluginInput | undefined;
        try {
          call = readCall(buf, MAX_CALL_BYTES);
        } catch (e) {
          handled = true;
          sock.end(encodeAnswer(errorOutput(LATEST, CNI_ERROR.decodeFailure, `policyctl-cni: the agent cannot read the call: ${(e as Error).message}`)));
          return;
        }
        if (!call) return;
        handled = true;
        this.received.call++;
        void this.run(call).then((out) => {
          if (!sock.destroyed) sock.end(encodeAnswer(out));
        });
        return;
      }
      const nl = buf.indexOf(10);
      if (nl < 0 && buf.length <= MAX_REQUEST_BYTES) return;
      handled = true;
      this.received.json++;
      let req: unknown;
      try {
        if (nl < 0) throw new Error(`request longer than ${MAX_REQUEST_BYTES} bytes`);
        req = JSON.parse(buf.toString('utf8', 0, nl));
      } catch (e) {
        sock.end(JSON.stringify({ ok: false, code: CNI_ERROR.decodeFailure, msg: `cannot read the request: ${(e as Error).message}` } satisfies AgentReply) + '\n');
        return;
      }
      void this.handle(req).then((reply) => {
        if (!sock.destroyed) sock.end(JSON.stringify(reply) + '\n');
      });
    });
  }

  /**
   * Run a whole CNI call here, as the Node plugin would in its own process, asking this server
   * directly (the front end connected to this socket: the configuration's `socket` names it).
   * Never throws.
   */
  run(call: PluginInput): Promise<PluginOutput> {
    return runPlugin(call, (_socket, req) => this.handle(req));
  }

  /** Answer one request (the socket's, or a test's). Never throws. */
  async handle(raw: unknown): Promise<AgentReply> {
    const t0 = performance.now();
    const log = this.o.logger;
    let req: AgentRequest;
    try {
      req = validate(raw);
    } catch (e) {
      return { ok: false, code: e instanceof Refusal ? e.code : CNI_ERROR.decodeFailure, msg: (e as Error).message };
    }
    const timeoutMs = Math.min(req.timeoutMs, this.o.maxTimeoutMs ?? 120_000);
    const deadline = Date.now() + timeoutMs;
    const who = req.namespace && req.name ? `pod ${req.namespace}/${req.name}` : `container ${req.containerId ?? '?'}`;
    try {
      let detail: string;
      switch (req.command) {
        case 'ADD':
          detail = await this.add(req, deadline, timeoutMs);
          break;
        case 'DEL':
          detail = await this.del(req, deadline, timeoutMs);
          break;
        case 'CHECK':
          detail = await this.check(req, deadline, timeoutMs);
          break;
        case 'STATUS': {
          const s = this.o.agent.status();
          if (!s.ready) return { ok: false, code: CNI_ERROR.notAvailable, msg: `not ready: ${s.reasons.join('; ')}` };
          return { ok: true };
        }
      }
      const ms = Math.round(performance.now() - t0);
      if (req.command !== 'CHECK') log.info({ command: req.command, pod: who, containerId: req.containerId, ips: req.ips, ms }, `CNI ${req.command}: ${detail}`);
      return { ok: true, detail };
    } catch (e) {
      const code = e instanceof Refusal ? e.code : CNI_ERROR.ioFailure;
      const msg = errorText(e);
      log.warn({ command: req.command, pod: who, containerId: req.containerId, ips: req.ips, code, ms: Math.round(performance.now() - t0) }, `CNI ${req.command} failed: ${msg}`);
      return { ok: false, code, msg };
    }
  }

  private async add(req: AgentRequest, deadline: number, timeoutMs: number): Promise<string> {
    const { namespace, name, containerId } = req as Required<Pick<AgentRequest, 'namespace' | 'name' | 'containerId'>>;
    const ips = req.ips ?? [];
    if (!namespace || !name || !containerId || ips.length === 0) throw new Refusal(CNI_ERROR.invalidEnvironment, 'ADD needs the pod namespace, name, container ID and at least one IPv4 address');
    const model = this.o.source.model;
    const pod = await this.waitForPod(namespace, name, req.uid, deadline);
    if (!pod) {
      const s = this.o.source.status();
      throw new Refusal(
        CNI_ERROR.tryAgainLater,
        s.synced ? `the agent's source (${s.detail}) has no pod ${namespace}/${name}${req.uid ? ` with UID ${req.uid}` : ''} after ${secs(timeoutMs)}` : `the agent's source is not synced yet (${s.detail}) after ${secs(timeoutMs)}`,
      );
    }
    if (pod.hostNetwork) throw new Refusal(CNI_ERROR.refused, `pod ${namespace}/${name} uses the host network: it has no address of its own to enforce`);
    if (pod.nodeName !== undefined && pod.nodeName !== this.o.node) throw new Refusal(CNI_ERROR.refused, `pod ${namespace}/${name} is bound to node ${pod.nodeName}, and this agent enforces node ${this.o.node}`);
    if (pod.phase === 'Succeeded' || pod.phase === 'Failed') throw new Refusal(CNI_ERROR.refused, `pod ${namespace}/${name} has finished (phase ${pod.phase})`);
    this.overlay.added(namespace, name, pod.uid, { containerId, ips });
    model.readjust(pod.uid, 'Pod');
    if (!(await this.o.agent.waitApplied(model.generation, deadline - Date.now()))) {
      throw new Refusal(CNI_ERROR.tryAgainLater, `the agent did not apply pod ${namespace}/${name} within ${secs(timeoutMs)}${this.lastError()}`);
    }
    const cur = model.getPod(pod.uid);
    if (!cur) throw new Refusal(CNI_ERROR.tryAgainLater, `pod ${namespace}/${name} left the source while it was being programmed`);
    const missing = ips.filter((ip) => !cur.ips.includes(ip));
    const conflicts = missing.length > 0 ? model.addressConflicts() : new Map<string, string[]>();
    const others = missing.flatMap((ip) => (conflicts.get(ip) ?? []).filter((u) => u !== pod.uid).map((u) => `${ip} by ${podName(model.getPod(u)) ?? `UID ${u}`}`));
    if (others.length > 0) throw new Refusal(CNI_ERROR.tryAgainLater, `address claimed by another pod too (${others.join(', ')}; a deleted pod still listed?): it belongs to neither until that resolves`);
    if (!isEnforceable(cur)) throw new Refusal(CNI_ERROR.tryAgainLater, `pod ${namespace}/${name} is not enforceable (phase ${cur.phase ?? 'unknown'}) after it was programmed`);
    if (missing.length > 0) throw new Refusal(CNI_ERROR.tryAgainLater, `address ${missing.join(', ')} is not the pod's in the agent's model`);
    return `pod enforced with ${ips.join(', ')}`;
  }

  private async del(req: AgentRequest, deadline: number, timeoutMs: number): Promise<string> {
    const containerId = req.containerId ?? '';
    if (!containerId) throw new Refusal(CNI_ERROR.invalidEnvironment, 'DEL needs the container ID');
    const model = this.o.source.model;
    let namespace = req.namespace;
    let name = req.name;
    if (!namespace || !name) ({ namespace, name } = this.overlay.findContainer(containerId) ?? {});
    const reported = req.ips ?? [];
    let gone = [...reported];
    if (namespace && name) {
      const pod = model.findPod(namespace, name);
      gone = this.overlay.deleted(namespace, name, containerId, reported, pod?.uid);
      if (pod) model.readjust(pod.uid, 'Pod');
    }
    if (gone.length === 0) return 'nothing to undo (no address known for this sandbox)';
    if (!(await this.o.agent.waitApplied(model.generation, deadline - Date.now()))) {
      throw new Refusal(CNI_ERROR.tryAgainLater, `the agent did not apply the removal of ${gone.join(', ')} within ${secs(timeoutMs)}${this.lastError()}`);
    }
    let entries: number;
    try {
      entries = await deleteAddressFlows(this.o.runner, gone);
    } catch (e) {
      throw new Refusal(CNI_ERROR.ioFailure, `deleting the conntrack entries of ${gone.join(', ')} failed: ${(e as Error).message}`);
    }
    return `${gone.join(', ')} gone from every set; ${entries} conntrack entries deleted`;
  }

  private async check(req: AgentRequest, deadline: number, timeoutMs: number): Promise<string> {
    const { namespace, name } = req;
    const ips = req.ips ?? [];
    if (!namespace || !name) throw new Refusal(CNI_ERROR.invalidEnvironment, 'CHECK needs the pod namespace and name');
    const model = this.o.source.model;
    const pod = model.findPod(namespace, name);
    if (!pod || (req.uid && pod.uid !== req.uid)) throw new Refusal(CNI_ERROR.refused, `pod ${namespace}/${name} is not in the agent's source`);
    if (!isEnforceable(pod) || pod.nodeName !== this.o.node) throw new Refusal(CNI_ERROR.refused, `pod ${namespace}/${name} is not enforced on node ${this.o.node}`);
    const missing = ips.filter((ip) => !pod.ips.includes(ip));
    if (missing.length > 0) throw new Refusal(CNI_ERROR.refused, `address ${missing.join(', ')} is not enforced for pod ${namespace}/${name} (the agent has ${pod.ips.join(', ') || 'none'})`);
    if (!(await this.o.agent.waitApplied(model.generation, deadline - Date.now()))) throw new Refusal(CNI_ERROR.tryAgainLater, `the agent has not applied its current model within ${secs(timeoutMs)}${this.lastError()}`);
    return 'enforced';
  }

  /** The pod by namespace/name (and UID when given) once the source is synced and has it; undefined at the deadline. */
  private async waitForPod(namespace: string, name: string, uid: string | undefined, deadline: number): Promise<PodRecord | undefined> {
    const key = `${namespace}/${name}`;
    for (;;) {
      if (this.o.source.status().synced) {
        const p = this.o.source.model.findPod(namespace, name);
        if (p && (!uid || p.uid === uid)) return p;
      }
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        let set = this.podWaiters.get(key);
        if (!set) this.podWaiters.set(key, (set = new Set()));
        const done = () => {
          clearTimeout(timer);
          set.delete(done);
          if (set.size === 0 && this.podWaiters.get(key) === set) this.podWaiters.delete(key);
          resolve();
        };
        // Woken by any change of that pod; the timer also catches the source turning synced.
        const timer = setTimeout(done, Math.min(left, 200));
        set.add(done);
      });
    }
  }

  private lastError(): string {
    const e = this.o.agent.status().lastError;
    return e ? ` (last sync failed: ${e})` : '';
  }
}

function podName(p: PodRecord | undefined): string | undefined {
  return p ? `pod ${p.namespace}/${p.name}` : undefined;
}

function validate(raw: unknown): AgentRequest {
  if (!raw || typeof raw !== 'object') throw new Refusal(CNI_ERROR.decodeFailure, 'the request is not a JSON object');
  const r = raw as Record<string, unknown>;
  if (r['v'] !== 1) throw new Refusal(CNI_ERROR.incompatibleVersion, `unsupported protocol version ${JSON.stringify(r['v'])} (this agent speaks 1): update policyctl-cni on this node`);
  const command = r['command'];
  if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK' && command !== 'STATUS') throw new Refusal(CNI_ERROR.invalidEnvironment, `unknown command ${JSON.stringify(command)}`);
  const str = (k: string) => {
    const v = r[k];
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new Refusal(CNI_ERROR.decodeFailure, `${k} must be a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const ips = r['ips'] ?? [];
  if (!Array.isArray(ips) || !ips.every((ip) => typeof ip === 'string' && IPV4.test(ip))) throw new Refusal(CNI_ERROR.decodeFailure, `ips must be IPv4 addresses, got ${JSON.stringify(ips)}`);
  const timeoutMs = r['timeoutMs'];
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Refusal(CNI_ERROR.decodeFailure, `timeoutMs must be a positive number, got ${JSON.stringify(timeoutMs)}`);
  const namespace = str('namespace');
  const name = str('name');
  const uid = str('uid');
  const containerId = str('containerId');
  return { v: 1, command, ips: ips as string[], timeoutMs, ...(namespace ? { namespace } : {}), ...(name ? { name } : {}), ...(uid ? { uid } : {}), ...(containerId ? { containerId } : {}) };
}
