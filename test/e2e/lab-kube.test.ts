// An agent fed by the Kubernetes API enforces the same truth table as one fed by files: the
// example cluster runs in a lab with file agents and is probed; then the agents are replaced
// by `policyctl agent --kube` processes reading the same objects from the API server double
// (a process in the lab's switch namespace, reached over the underlay), and probed again.

import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compareWithModel, probeLab } from '../../src/cli/lab.ts';
import { labUp, loadFolder, readClusterInfo, stopWatcher, waitApplied } from '../../src/lab/cluster.ts';
import { netnsPids, runInNetns, signalPids } from '../../src/lab/exec.ts';
import { destroyLab, startInNode } from '../../src/lab/lab.ts';
import { nodeBinary, startDaemon } from '../../src/lab/processes.ts';
import type { LabState } from '../../src/lab/state.ts';
import { reachTable } from '../../src/semantics/reach.ts';
import { kernelTestsEnabled } from '../support/netns.ts';
import { until } from '../support/until.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'policyctl.js');


describe.runIf(kernelTestsEnabled())('agents fed by the API server double', () => {
  const name = `kb${process.pid % 100000}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'pctl-lab-state-'));
  const dir = mkdtempSync(join(tmpdir(), 'pctl-lab-kube-'));
  let lab: LabState | undefined;

  afterAll(async () => {
    if (lab) stopWatcher(await readClusterInfo(lab));
    await destroyLab(name, { stateDir });
    rmSync(dir, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  });

  it('enforce the same truth table as agents fed by files', async () => {
    for (const sub of ['workloads', 'policies']) {
      for (const f of readdirSync(join(ROOT, 'examples', sub))) cpSync(join(ROOT, 'examples', sub, f), join(dir, `${sub}-${f}`));
    }
    lab = (await labUp({ name, manifests: dir, stateDir, resyncInterval: '2s' })).lab;
    const info = await readClusterInfo(lab);
    await waitApplied(lab, info, 30_000);
    const fromFiles = await probeLab(lab);
    expect(fromFiles.results.some((r) => !r.allowed)).toBe(true); // the policies are in force

    // Replace the file agents: stop them and remove everything they wrote.
    for (const n of lab.nodes) {
      signalPids(await netnsPids(n.netns), 'SIGKILL');
      await runInNetns(n.netns, [nodeBinary(), '--no-warnings', BIN, 'agent', '--cleanup']);
      expect((await runInNetns(n.netns, ['iptables-save', '-t', 'filter'])).stdout).not.toContain('PCTL');
    }

    const kubeconfig = join(lab.dir, 'cluster', 'kubeconfig');
    await startDaemon({
      argv: ['ip', 'netns', 'exec', lab.switch.netns, nodeBinary(), '--no-warnings', join(ROOT, 'test', 'support', 'apiserver-serve.ts'), '--host', lab.external.ip, '--port', '6443', '--objects', dir, '--kubeconfig', kubeconfig],
      logFile: join(lab.dir, 'logs', 'apiserver.log'),
      context: 'starting the API server double',
      readyLine: 'ready',
    });
    const status = (n: string) => join(lab!.dir, 'cluster', `kube-agent-${n}.json`);
    for (const n of lab.nodes) {
      await startInNode(lab, n.name, [nodeBinary(), '--no-warnings', BIN, 'agent', '--node', n.name, '--kube', '--kubeconfig', kubeconfig, '--status-file', status(n.name), '--resync-interval', '2s'], {
        logName: `kube-agent-${n.name}`,
        readyLine: false,
      });
    }
    await until(
      () => lab!.nodes.every((n) => {
        try {
          return (JSON.parse(readFileSync(status(n.name), 'utf8')) as { ready: boolean }).ready;
        } catch {
          return false;
        }
      }),
      'the kube agents to be ready',
      30_000,
    );
    const fromApi = await probeLab(lab);
    expect(fromApi.results).toEqual(fromFiles.results);
    const { model } = await loadFolder(dir);
    const ports = [...new Map(fromApi.results.map((r) => [`${r.port}/${r.protocol}`, { port: r.port, protocol: r.protocol }])).values()];
    expect(compareWithModel(fromApi.results, reachTable(model, { ports }))).toEqual([]);
  }, 120_000);
});
