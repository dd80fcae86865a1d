// The agent's runner: processRunner with the two long-lived helpers that take process start-up
// off an event's path. Small `ipset restore -exist` payloads go to one ipset session
// (ipset-session.ts); `iptables-nft-restore` payloads go to a spare process started ahead
// (spare-process.ts). Everything else, and whatever those decline, starts a process as usual.

import { IpsetSession, type IpsetSessionOptions } from './ipset-session.ts';
import { processRunner, type Runner } from './runner.ts';
import { SpareProcesses } from './spare-process.ts';

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
      spares.touch();
      try {
        if (cmd === 'ipset' && args.length === 2 && args[0] === 'restore' && args[1] === '-exist') {
          const lines = session.linesOf(opts.input ?? '');
          const r = lines ? await session.run(lines) : undefined;
          if (r) return r;
        }
        return (await spares.run(cmd, args, opts.input ?? '')) ?? (await inner.run(cmd, args, opts));
      } finally {
        spares.touch();
      }
    },
  };
}
