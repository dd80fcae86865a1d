// The agent's CNI server with a real model, a scripted agent (applies what it is asked at once,
// or never) and a runner that records conntrack calls (one flow tracked): for the server's tests and the native
// front end's (src/agent/cni-server.test.ts, src/cni/shim.test.ts).

import { join } from 'node:path';
import pino from 'pino';
import { CniServer } from '../../src/agent/cni-server.ts';
import { Model } from '../../src/model/store.ts';
import type { Runner } from '../../src/sync/runner.ts';

export interface ScriptedAgentOptions {
  /** false: the agent never applies (waits out the timeout, reports not ready). */
  readonly applies?: boolean;
  /** Whether the source is synced (default true). */
  readonly synced?: boolean;
}

/** A server on a fresh socket under `dir` (not listening yet: call `server.listen()`). */
export function scriptedCniServer(dir: string, o: ScriptedAgentOptions = {}) {
  const model = new Model();
  let synced = o.synced ?? true;
  let applied = -1;
  const calls: string[] = [];
  // conntrack as the kernel would answer it: one UDP flow of 10.244.1.5 tracked; deleting a
  // flow deletes one entry.
  const runner: Runner = {
    async run(cmd, args) {
      calls.push([cmd, ...args].join(' '));
      if (args[0] === '-L') return { stdout: 'ipv4     2 udp      17 29 src=10.244.1.5 dst=10.244.2.3 sport=4000 dport=53 src=10.244.2.3 dst=10.244.1.5 sport=53 dport=4000 mark=0 use=1\n', stderr: '', exitCode: 0 };
      return { stdout: '', stderr: '1 flow entries have been deleted.\n', exitCode: 0 };
    },
  };
  const agent = {
    async waitApplied(generation: number, timeoutMs: number) {
      if (o.applies === false) {
        await new Promise((r) => setTimeout(r, timeoutMs));
        return false;
      }
      await new Promise((r) => setTimeout(r, 5));
      applied = Math.max(applied, model.generation);
      return applied >= generation;
    },
    status: () => ({ ready: o.applies !== false, reasons: o.applies === false ? ['last sync failed'] : [], ...(o.applies === false ? { lastError: 'iptables-restore failed' } : {}) }),
  };
  const source = { model, status: () => ({ synced, healthy: true, detail: 'watching /cluster' }) };
  const socket = join(dir, `s-${Math.random().toString(36).slice(2, 8)}`, 'cni.sock');
  const server = new CniServer({ socketPath: socket, node: 'n1', source, agent, runner, logger: pino({ level: 'silent' }) });
  return { model, server, socket, calls, setSynced: (v: boolean) => (synced = v) };
}

