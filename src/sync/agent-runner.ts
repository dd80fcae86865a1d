// The agent's runner: processRunner with the two long-lived helpers that take process start-up
// off an event's path. `iptables-nft-restore` payloads go to a spare process started ahead
// (spare-process.ts). `ipset restore -exist` payloads of up to SESSION_LINES lines go to one
// ipset session (ipset-session.ts), bigger ones to a spare `ipset restore` when one is waiting
// (it batches lines into few netlink messages: 6.3 ms for 1000 lines, where the session took
// 19.4), else to the session up to its own limit. Everything else, and whatever those decline,
// starts a process as usual.

import { IpsetSession, type IpsetSessionOptions } from './ipset-session.ts';
import { processRunner, type Runner } from './runner.ts';
import { SpareProcesses } from './spare-process.ts';

/**
 * ipset payloads up to this many lines go to the session even when a spare `ipset restore` waits:
 * below it the session is as fast (6.2 ms against 4.5 for 300 lines, measured in a namespace)
 * and leaves the spare for a big payload.
 */
export const SESSION_LINES = 200;

export type AgentRunner = Runner & { readonly session: IpsetSession; readonly spares: SpareProcesses; close(): void };

/** close() ends the session and the spare (the agent, on stop). */
export function agentRunner(netns?: string, o: Omit<IpsetSessionOptions, 'netns'> = {}): AgentRunner {
  const inner = processRunner(netns);
  const session = new IpsetSession({ ...o, ...(netns ? { netns } : {}) });
  const spares = new SpareProcesses(netns);
  return {
    session,
    spares,
    close: () => {
      session.close();
      spares.close();
    },
    async run(cmd, args, opts = {}) {
      spares.enter();
      try {
        if (cmd === 'ipset' && args.length === 2 && args[0] === 'restore' && args[1] === '-exist') {
          const lines = session.linesOf(opts.input ?? '');
          // A big payload takes the waiting spare; without one, the session (and a spare for next time).
          const toSpare = lines !== undefined && lines.length > SESSION_LINES && spares.ready(cmd, args);
          if (lines && !toSpare) {
            if (lines.length > SESSION_LINES) spares.want(cmd, args);
            const r = await session.run(lines);
            if (r) return r;
          }
        }
        return (await spares.run(cmd, args, opts.input ?? '')) ?? (await inner.run(cmd, args, opts));
      } finally {
        spares.leave();
      }
    },
  };
}
