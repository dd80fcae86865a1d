// `policyctl drops` and `policyctl lab drops`: the recent denied flows of every agent (their
// `/drops`, src/agent/drop-log.ts), merged and shown the way a user reads them: grouped by
// destination, one sentence per flow naming the policy and the reason in `explain`'s words.

import { request } from 'node:http';
import type { Drop } from '../agent/drop-log.ts';
import { escapeLine } from '../model/issues.ts';
import { errorText } from '../util/error-text.ts';
import { getText, listRaw, type KubeAccess } from '../watchers/kube-client.ts';
import { EXIT, type Io } from './io.ts';

/** What one agent answered at /drops, or why it could not be asked. */
export interface AgentDrops {
  readonly node: string;
  readonly drops: readonly Drop[];
  readonly error?: string;
}

/** GET a path of an agent's health server on a unix socket (the lab's agents). */
export function getFromSocket(socketPath: string, path: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${path}: HTTP ${res.statusCode}: ${body.trim().slice(0, 200)}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** An agent's /drops body, checked enough to render. */
export function parseDropsBody(node: string, body: string): AgentDrops {
  const j = JSON.parse(body) as { node?: unknown; drops?: unknown };
  if (!Array.isArray(j.drops)) throw new Error(`/drops of node ${node}: no "drops" list in the answer`);
  return { node: typeof j.node === 'string' ? j.node : node, drops: j.drops as Drop[] };
}

/** Every agent's drops, oldest first, those of namespace `ns` only when given. */
export function mergeDrops(agents: readonly AgentDrops[], ns?: string): Drop[] {
  const all = agents.flatMap((a) => a.drops).filter((d) => ns === undefined || d.namespaces.includes(ns));
  return all.sort((a, b) => (a.last < b.last ? -1 : a.last > b.last ? 1 : a.node < b.node ? -1 : 1));
}

/** The JSON contract of `-o json`: the drops, and the agents that did not answer. */
export function dropsJson(agents: readonly AgentDrops[], ns?: string): string {
  const errors = agents.filter((a) => a.error).map((a) => ({ node: a.node, error: a.error }));
  return JSON.stringify({ drops: mergeDrops(agents, ns), ...(errors.length ? { errors } : {}) }, null, 2) + '\n';
}

function flowText(d: Drop): string {
  const port = d.port !== undefined ? ` port ${d.port}/${d.protocol}` : ` ${d.protocol}`;
  const packets = `${d.packets} packet${d.packets === 1 ? '' : 's'}`;
  const span = Math.max(0, (Date.parse(d.last) - Date.parse(d.first)) / 1000);
  return `${d.from} ->${port}: ${d.direction.toLowerCase()} denied on ${d.node}, ${packets} in ${span.toFixed(1)}s (last ${d.last}): ${d.decision.reason}`;
}

/** Grouped by destination, newest flow last in each group. */
export function dropsText(agents: readonly AgentDrops[], ns?: string): string {
  const lines: string[] = [];
  for (const a of agents) if (a.error) lines.push(`warning: node ${a.node}: ${escapeLine(a.error)}`);
  const drops = mergeDrops(agents, ns);
  if (drops.length === 0) {
    lines.push(`no denied flow recorded${ns ? ` in namespace ${ns}` : ''}`);
    return lines.join('\n') + '\n';
  }
  const byDest = new Map<string, Drop[]>();
  for (const d of drops) {
    const l = byDest.get(d.to);
    if (l) l.push(d);
    else byDest.set(d.to, [d]);
  }
  for (const [to, list] of [...byDest].sort(([a], [b]) => (a < b ? -1 : 1))) {
    lines.push(`${escapeLine(to)}:`);
    for (const d of list) lines.push(`  ${escapeLine(flowText(d))}`);
  }
  return lines.join('\n') + '\n';
}

/** Where the agents are: the DaemonSet's namespace, its pods' label selector, the --health-addr port. */
export interface AgentPods {
  readonly namespace: string;
  readonly selector: string;
  readonly port: number;
}

/**
 * Every agent's /drops through the API server's pod proxy (`pods/NAME:PORT/proxy/drops`, the
 * `get` verb on `pods/proxy`): one request per agent pod. `since`: per node, only the drops
 * updated after that sequence number. An agent that does not answer is reported, not fatal.
 */
export async function kubeAgentDrops(kc: KubeAccess, agents: AgentPods, since: ReadonlyMap<string, number> = new Map()): Promise<AgentDrops[]> {
  const list = await listRaw(kc, `/api/v1/namespaces/${encodeURIComponent(agents.namespace)}/pods`, { kind: 'Pod', apiVersion: 'v1', labelSelector: agents.selector });
  if (list.items.length === 0) throw new Error(`no agent pods in namespace ${agents.namespace} with labels ${agents.selector} (--agent-namespace, --agent-selector)`);
  return Promise.all(
    list.items.map(async (p): Promise<AgentDrops> => {
      const meta = (p.metadata ?? {}) as { name?: string };
      const node = ((p as { spec?: { nodeName?: string } }).spec?.nodeName ?? meta.name ?? '?') as string;
      const path = `/api/v1/namespaces/${encodeURIComponent(agents.namespace)}/pods/${encodeURIComponent(meta.name ?? '')}:${agents.port}/proxy/drops`;
      try {
        const s = since.get(node);
        return parseDropsBody(node, await getText(kc, path, s !== undefined ? { since: String(s) } : {}));
      } catch (e) {
        return { node, drops: [], error: `agent pod ${agents.namespace}/${meta.name}: ${errorText(e)}` };
      }
    }),
  );
}

/**
 * Prints the drops once, or with `watch` keeps asking every `everyMs` for what changed and prints
 * that (until `signal` aborts). Exit code: failure when an agent did not answer the first time.
 */
export async function showDrops(
  io: Io,
  fetch: (since: ReadonlyMap<string, number>) => Promise<AgentDrops[]>,
  o: { namespace?: string; output: string; watch?: boolean; everyMs?: number; signal?: AbortSignal },
): Promise<number> {
  const render = (a: readonly AgentDrops[]) => (o.output === 'json' ? dropsJson(a, o.namespace) : dropsText(a, o.namespace));
  const first = await fetch(new Map());
  io.out(render(first));
  if (!o.watch) return first.some((a) => a.error) ? EXIT.failure : EXIT.ok;
  const since = new Map(first.map((a) => [a.node, Math.max(0, ...a.drops.map((d) => d.seq))]));
  while (!o.signal?.aborted) {
    await new Promise((r) => setTimeout(r, o.everyMs ?? 1000));
    if (o.signal?.aborted) break;
    const next = await fetch(since);
    for (const a of next) if (a.drops.length) since.set(a.node, Math.max(since.get(a.node) ?? 0, ...a.drops.map((d) => d.seq)));
    const fresh = next.filter((a) => a.error || mergeDrops([a], o.namespace).length > 0);
    if (fresh.length) io.out(render(fresh));
  }
  return EXIT.ok;
}
