// The agent's CNI server with a real model, a scripted agent (applies what it is asked at once,
// or never) and a runner that records conntrack calls: for the server's tests and the native
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
  const runner: Runner = {
    async run(cmd, args) {
      calls.push([cmd, ...args].join(' '));
      return { stdout: '', stderr: '0 flow entries have been deleted.\n', exitCode: 1 };
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

