// The agent end to end on the real kernel (in a test namespace): folder -> model -> compile ->
// iptables/ipset, with coalescing, fail-closed edits, retries, drift repair and health.

import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { agentNode, type AgentNode, type AgentOptions } from '../../test/support/agent-node.ts';
import { kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { IncrementalCompiler } from '../compiler/incremental.ts';
import { Model } from '../model/store.ts';
import { NFT } from '../sync/backend.ts';
import { RecordingRunner, type Runner } from '../sync/runner.ts';
import { Syncer } from '../sync/syncer.ts';
import { folderRevision } from '../watchers/files.ts';
import type { ModelSource } from '../watchers/source.ts';
import { Agent } from './agent.ts';
import { serveHealth } from './health.ts';
import { until } from '../../test/support/until.ts';

const PODS = `
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.244.2.10}
`;
const DENY = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: app}
spec: {podSelector: {}, policyTypes: [Ingress]}
`;
const ALLOW = (label: string) => `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: ${label}}}}]}]
`;

const silent = pino({ level: 'silent' });


describe.runIf(kernelTestsEnabled())('Agent', () => {
  let node: AgentNode;
  let net: TestNetns;
  let dir: string;
  let agent: Agent | undefined;
  let bridgeNf: string;

  beforeEach(() => {
    node = agentNode('pctl-agent', { 'pods.yaml': PODS, 'deny.yaml': DENY });
    ({ net, dir, bridgeNf } = node);
  });
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
    await node.remove();
  });

  const makeAgent = (runner: Runner, extra: Partial<AgentOptions> = {}): Agent => node.agent({ runner, extra });

  it('applies the folder, follows edits, and reports the revision it applied', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    expect(a.status().ready).toBe(true);
    expect(a.status().revision).toBe(await folderRevision(dir));
    expect(net.sh('iptables-save -t filter')).toMatch(/default deny ingress: isolated by app\/deny/);
    writeFileSync(join(dir, 'allow.yaml'), ALLOW('client'));
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the edit to be applied');
    expect(net.sh('ipset save')).toContain('10.244.2.10');
  });

  it('applies edits from the compiler delta, and compiles in full when the incremental compiler throws', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    const plans = async () => Object.fromEntries((await a.metrics.plans.get()).values.map((v) => [v.labels.from, v.value])) as Record<string, number | undefined>;
    const edit = async (label: string) => {
      writeFileSync(join(dir, 'allow.yaml'), ALLOW(label));
      const rev = await folderRevision(dir);
      await until(() => a.status().revision === rev, `the edit to ${label} to be applied`);
    };
    expect((await plans()).kernel).toBe(1); // the first sync reads the kernel
    await edit('client');
    expect(net.sh('ipset save')).toContain('10.244.2.10');
    const deltas = (await plans()).delta ?? 0;
    expect(deltas).toBeGreaterThanOrEqual(1);

    const spy = vi.spyOn(IncrementalCompiler.prototype, 'ruleset').mockImplementationOnce(() => {
      throw new Error('bookkeeping bug');
    });
    try {
      await edit('other');
    } finally {
      spy.mockRestore();
    }
    expect((await a.metrics.compilerResets.get()).values[0]!.value).toBe(1);
    expect(a.status().ready).toBe(true);
    expect(net.sh('ipset save')).not.toContain('10.244.2.10');
    // The first sync after the reset diffs against the kernel; the fast path then resumes.
    await edit('client');
    await edit('other2');
    await edit('client');
    expect(net.sh('ipset save')).toContain('10.244.2.10');
    expect((await plans()).delta ?? 0).toBeGreaterThan(deltas);
  });

  it('writes nothing before the source is synced', async () => {
    const rec = new RecordingRunner(net.runner);
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const stuck: ModelSource = {
      model: new Model(),
      start: () => gate,
      stop: async () => {},
      onChange: () => {},
      revision: () => 'r',
      status: () => ({ synced: false, healthy: false, detail: 'listing' }),
      invalidPolicies: () => 0,
    };
    agent = new Agent({ node: 'n1', source: stuck, syncer: new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' } }), logger: silent, bridgeNfPath: bridgeNf });
    const started = agent.start();
    await new Promise((r) => setTimeout(r, 200));
    expect(rec.writes()).toEqual([]);
    expect(agent.status().ready).toBe(false);
    expect(agent.status().reasons).toContain('source not synced yet');
    release();
    await started; // synced is still false: the agent must not write even now
    expect(rec.writes()).toEqual([]);
  });

  it('coalesces a burst of changes into a few syncs', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    const before = a.status().syncs;
    for (let i = 0; i < 200; i++) writeFileSync(join(dir, 'allow.yaml'), ALLOW(i % 2 ? 'client' : `other${i}`));
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the burst to be applied');
    const syncs = a.status().syncs - before;
    expect(syncs).toBeGreaterThanOrEqual(1);
    expect(syncs).toBeLessThanOrEqual(5);
  });

  it('is idle (its young generation may be collected) only with no kernel command in flight, and after each sync', async () => {
    let inFlight = 0;
    const counting: Runner = {
      run: async (cmd, args, o) => {
        inFlight++;
        try {
          return await net.runner.run(cmd, args, o);
        } finally {
          inFlight--;
        }
      },
    };
    const seen: string[] = [];
    const idleWork = {
      busy: () => void seen.push('busy'),
      idle: () => {
        // A collection here must never land in the middle of a sync.
        seen.push(inFlight === 0 ? 'idle' : `idle with ${inFlight} commands in flight`);
      },
    };
    const a = makeAgent(counting, { idleWork });
    await a.start();
    await until(() => seen.at(-1) === 'idle', 'the agent to be idle after its first sync');
    seen.length = 0;
    writeFileSync(join(dir, 'allow.yaml'), ALLOW('client'));
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev && seen.at(-1) === 'idle', 'the edit to be applied and the agent idle again');
    expect(seen.every((s) => s === 'busy' || s === 'idle')).toBe(true);
    // The change made it busy before its sync, and idle only once that sync was over.
    expect(seen[0]).toBe('busy');
    expect(seen.filter((s) => s === 'idle').length).toBeGreaterThanOrEqual(1);
  });

  it('keeps the last good objects of a file that stops parsing (isolation is never dropped)', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    writeFileSync(join(dir, 'deny.yaml'), 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: [broken\n');
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the broken edit to be processed');
    expect(net.sh('iptables-save -t filter')).toMatch(/default deny ingress: isolated by app\/deny/);
    expect(a.status().reasons.join()).toMatch(/keeping its last good objects/);
  });

  it('keeps the objects of a file emptied mid-write; deleting the file removes them', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    writeFileSync(join(dir, 'deny.yaml'), '');
    await until(() => a.status().reasons.join().includes('file is empty'), 'the empty file to be noticed');
    expect(net.sh('iptables-save -t filter')).toMatch(/default deny ingress: isolated by app\/deny/);
    rmSync(join(dir, 'deny.yaml'));
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the deletion to be applied');
    expect(net.sh('iptables-save -t filter')).not.toMatch(/default deny ingress/);
  });

  it('retries a failed apply with backoff and a full re-read, then becomes ready', async () => {
    let failures = 1;
    const flaky: Runner = {
      run: async (cmd, args, opts) => {
        if (cmd.endsWith('-restore') && failures > 0) {
          failures--;
          return { stdout: '', stderr: 'iptables-restore: line 2 failed', exitCode: 1 };
        }
        return net.runner.run(cmd, args, opts);
      },
    };
    const a = makeAgent(flaky);
    await a.start();
    expect(a.status().ready).toBe(false);
    expect(a.status().lastError).toMatch(/iptables-restore failed/);
    await until(() => a.status().ready, 'the retry to succeed');
    expect((await a.metrics.failures.get()).values[0]!.value).toBe(1);
    expect(net.sh('iptables-save -t filter')).toContain('-j PCTL-FORWARD');
  });

  it('a sync that throws outside its apply is a failed sync, retried, never an unhandled rejection', async () => {
    const a = makeAgent(net.runner, { backoffMinMs: 50 });
    await a.start();
    // A step before the apply (here reading bridge-nf-call-iptables) throwing unexpectedly.
    vi.spyOn(a as unknown as { checkBridgeNf(): Promise<void> }, 'checkBridgeNf').mockRejectedValueOnce(new Error('unexpected: boom'));
    await a.syncNow('verify'); // resolves: the rejection is handled inside
    expect(a.status().lastError).toBe('unexpected: boom');
    expect((await a.metrics.failures.get()).values[0]!.value).toBe(1);
    await until(() => a.status().ready && a.status().lastError === undefined, 'the retry to succeed');
  });

  it('repairs a flushed chain on its periodic verification, and serves health and metrics', async () => {
    const a = makeAgent(net.runner, { resyncMs: 150, verifyAfterWriteMs: 100 });
    await a.start();
    const server = await serveHealth(a, '127.0.0.1:0');
    try {
      const port = (server.address() as { port: number }).port;
      net.sh('iptables -F PCTL-FORWARD');
      await until(() => net.sh('iptables -S PCTL-FORWARD').includes('RETURN'), 'the flushed chain to be repaired', 15_000);
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(/policyctl_drift_repairs_total [1-9]/);
      expect(metrics).toMatch(/policyctl_syncs_total\{result="applied",kind="initial"\} 1/);
      writeFileSync(bridgeNf, '0\n');
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      server.close();
    }
  });
});
