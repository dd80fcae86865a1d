// One node for agent tests on the real kernel: a fresh network namespace holding the other
// agents' rules (FOREIGN_FILTER: flannel's and kube-proxy's), a folder of manifests the agent's
// FileSource watches, and a bridge-nf-call-iptables file the agent reads instead of /proc.
// Agents made here are stopped by remove(), which also deletes the namespace and the folder.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Agent } from '../../src/agent/agent.ts';
import { NFT } from '../../src/sync/backend.ts';
import type { Runner } from '../../src/sync/runner.ts';
import { Syncer } from '../../src/sync/syncer.ts';
import { FileSource } from '../../src/watchers/files.ts';
import { FOREIGN_FILTER } from './dataplane.ts';
import { createNetns, type TestNetns } from './netns.ts';

export type AgentOptions = ConstructorParameters<typeof Agent>[0];

export interface AgentNode {
  readonly net: TestNetns;
  /** The manifests folder. */
  readonly dir: string;
  /** The file the agents read as net.bridge.bridge-nf-call-iptables ("1" at first). */
  readonly bridgeNf: string;
  /** Writes a file of the folder. */
  write(name: string, text: string): void;
  /**
   * An agent of node n1 over the folder (FileSource polling every `pollMs`, default 200), its
   * syncer on `runner` (default: the namespace), silent (unless TEST_LOG), quick to retry; `extra` overrides.
   */
  agent(o?: { runner?: Runner; pollMs?: number; extra?: Partial<AgentOptions> }): Agent;
  /** Stops the agents made here, removes the namespace and the folder. */
  remove(): Promise<void>;
}

export function agentNode(prefix: string, files: Readonly<Record<string, string>> = {}): AgentNode {
  const net = createNetns(prefix);
  net.sh(`iptables-nft-restore <<'EOF'\n${FOREIGN_FILTER}EOF`);
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const bridgeNf = join(dir, '.bridge-nf');
  writeFileSync(bridgeNf, '1\n');
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const agents: Agent[] = [];
  return {
    net,
    dir,
    bridgeNf,
    write: (name, text) => writeFileSync(join(dir, name), text),
    agent(o = {}) {
      const a = new Agent({
        node: 'n1',
        source: new FileSource({ dir, pollMs: o.pollMs ?? 200, settleMs: 20 }),
        syncer: new Syncer({ runner: o.runner ?? net.runner, backend: { ...NFT, reason: 'test' } }),
        logger: pino({ level: process.env['TEST_LOG'] ?? 'silent' }), // TEST_LOG=info to watch an agent
        bridgeNfPath: bridgeNf,
        backoffMinMs: 50,
        ...o.extra,
      });
      agents.push(a);
      return a;
    },
    async remove() {
      for (const a of agents.splice(0)) await a.stop();
      net.remove();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
