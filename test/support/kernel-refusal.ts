// A test hook that makes an object fail in the kernel: a Runner wrapper that refuses an
// `ipset restore` or `iptables-restore` payload holding a chosen line, the way the real tools
// refuse one, so the agent's containment can be tested with any object (a valid pod address, a
// policy's rule) on the real kernel.
//
// Faithful to the tools (checked against ipset 7.17 and iptables-nft 1.8.9):
// - `ipset restore` runs line by line: the lines before the refused one are applied (they are
//   passed on to the kernel here), the rest are not, and it says `Error in line N: <message>`.
// - `iptables-restore` commits a table atomically: nothing is applied, and it says
//   `<message>`, then `Error occurred at line: N`.

import type { RunResult, Runner } from '../../src/sync/runner.ts';

export interface Refusal {
  /** Lines of `ipset restore` payloads to refuse. */
  readonly ipset?: (line: string) => boolean;
  /** Lines of `iptables-restore` payloads to refuse. */
  readonly iptables?: (line: string) => boolean;
  /** The kernel's words (default: an invalid argument, as for an element the set cannot hold). */
  readonly message?: string;
}

/** A line holding this word (an address, a chain name) not as part of a longer one. */
export function holding(word: string): (line: string) => boolean {
  const esc = word.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const re = new RegExp(`(^|[\\s,"])${esc}($|[\\s,"])`);
  return (line) => re.test(line);
}

export class RefusingRunner implements Runner {
  private readonly inner: Runner;
  private readonly refusal: Refusal;
  /** Payloads refused so far. */
  refused = 0;

  constructor(inner: Runner, refusal: Refusal) {
    this.inner = inner;
    this.refusal = refusal;
  }

  async run(cmd: string, args: readonly string[], opts: { input?: string } = {}): Promise<RunResult> {
    const input = opts.input ?? '';
    const lines = input.split('\n');
    if (cmd === 'ipset' && args[0] === 'restore' && this.refusal.ipset) {
      const i = lines.findIndex((l) => l !== '' && this.refusal.ipset!(l));
      if (i >= 0) {
        this.refused++;
        if (i > 0) {
          const before = await this.inner.run(cmd, args, { input: lines.slice(0, i).join('\n') + '\n' });
          if (before.exitCode !== 0) return before;
        }
        return { stdout: '', stderr: `ipset v7.17: Error in line ${i + 1}: ${this.refusal.message ?? 'Kernel error received: Invalid argument'}\n`, exitCode: 1 };
      }
    }
    if (cmd.endsWith('-restore') && this.refusal.iptables) {
      const i = lines.findIndex((l) => l !== '' && this.refusal.iptables!(l));
      if (i >= 0) {
        this.refused++;
        const chain = /^-[AI] (\S+)/.exec(lines[i]!)?.[1] ?? '?';
        const message = this.refusal.message ?? `RULE_APPEND failed (Invalid argument): rule in chain ${chain}`;
        return { stdout: '', stderr: `${cmd} v1.8.9 (nf_tables): ${message}\nError occurred at line: ${i + 1}\nTry \`${cmd} -h' or '${cmd} --help' for more information.\n`, exitCode: 1 };
      }
    }
    return this.inner.run(cmd, args, opts);
  }
}
