// The node agent of the CNI benchmark (bench/parts/cni.ts), started inside a fresh network
// namespace as an agent runs in its node's: the 10k-pod / 2k-policy cluster as a static
// source, the Agent for node-001 (250 pods) with its default timings, and its CNI server on a
// unix socket; `--pods N` pending pods (no IP yet, the labels of node-001's replicas) waiting
// for their sandboxes. Prints one JSON line (socket, pods, free addresses of node-001), then
// runs until stdin closes.
//
//   node bench/cni-child.ts --socket PATH --pods N [--seed S]

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Agent } from '../src/agent/agent.ts';
import { CniServer } from '../src/agent/cni-server.ts';
import { NFT } from '../src/sync/backend.ts';
import { agentRunner } from '../src/sync/agent-runner.ts';
import { Syncer } from '../src/sync/syncer.ts';
import type { ModelSource } from '../src/watchers/source.ts';
import { generateCluster, nodeIp } from './synthetic.ts';

export const CNI_NODE = 'node-001';

export interface CniChildReady {
  readonly socket: string;
  readonly pods: readonly { namespace: string; name: string }[];
  /** Addresses of node-001's podCIDR no pod holds. */
  readonly freeIps: readonly string[];
  readonly startMs: number;
}

const { values } = parseArgs({ options: { socket: { type: 'string' }, pods: { type: 'string', default: '20' }, seed: { type: 'string', default: '1' } } });
const t0 = performance.now();
const c = generateCluster({ pods: 10_000, policies: 2_000, seed: Number(values.seed) });
const local = c.pods.filter((p) => p.nodeName === CNI_NODE && !p.hostNetwork && p.ips.length > 0 && p.phase === 'Running');
const pending = Array.from({ length: Number(values.pods) }, (_, i) => {
  const tmpl = local[(i * 7) % local.length]!;
  return { ...tmpl, uid: `bench-cni-${i}`, name: `${tmpl.name}-cni${i}`, ips: [], phase: 'Pending' };
});
for (const p of pending) c.model.upsert(p);
const index = c.nodes.findIndex((n) => n.name === CNI_NODE);
const freeIps: string[] = [];
for (let host = c.nextIp.get(CNI_NODE)!; host < 255; host++) freeIps.push(nodeIp(index, host));

const source: ModelSource = {
  model: c.model,
  start: async () => {},
  stop: async () => {},
  onChange: () => {},
  revision: () => `seed-${values.seed}`,
  status: () => ({ synced: true, healthy: true, detail: 'the synthetic cluster' }),
  invalidPolicies: () => 0,
};
// Info on stderr: the CNI server's line per ADD and DEL carries the agent's own share ("ms").
const logger = pino({ level: 'info' }, pino.destination(2));
const runner = agentRunner(); // as policyctl agent runs: small set payloads through one ipset session
// The agent's default layout (`policyctl agent`): the verdict cache on.
const agent = new Agent({ node: CNI_NODE, source, syncer: new Syncer({ runner, backend: { ...NFT, reason: 'bench' } }), logger, verdictCache: true });
const server = new CniServer({ socketPath: values.socket!, node: CNI_NODE, source, agent, runner, logger });
await server.listen();
await agent.start();
const ready: CniChildReady = { socket: values.socket!, pods: pending.map((p) => ({ namespace: p.namespace, name: p.name })), freeIps, startMs: performance.now() - t0 };
process.stdout.write(JSON.stringify(ready) + '\n');
createInterface({ input: process.stdin }).on('close', () => {
  void Promise.all([server.close(), agent.stop()]).then(() => {
    runner.close();
    process.exit(0);
  });
});
