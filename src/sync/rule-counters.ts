// The kernel's packet counters of our rules (issue 11: counters per policy rule and per
// isolating chain, readable from the kernel). `iptables-save -c` prints each rule's packets and
// bytes; the rule id and comment render.ts wrote say which rule it is.

import { CHAIN_PREFIX } from '../compiler/ruleset.ts';
import { RULE_ID_CHARS } from './render.ts';
import type { Runner } from './runner.ts';

export interface RuleCounter {
  readonly chain: string;
  /** The rule id render.ts wrote at the front of the comment. */
  readonly id: string;
  /** The comment after the id. */
  readonly comment: string;
  /** `RETURN`, `DROP`, `NFLOG`, a chain name. */
  readonly target: string;
  readonly packets: number;
}

const LINE = new RegExp(`^\\[(\\d+):\\d+\\] -A (${CHAIN_PREFIX}\\S+) .*?--comment "?([a-z2-7]{${RULE_ID_CHARS}}) ([^"]*)"? .*?-([jg]) (\\S+)`);

/** Our rules' counters in an `iptables-save -c -t filter` dump (other chains are left out). */
export function parseRuleCounters(dump: string): RuleCounter[] {
  const out: RuleCounter[] = [];
  for (const line of dump.split('\n')) {
    const m = LINE.exec(line);
    if (m) out.push({ chain: m[2]!, id: m[3]!, comment: m[4]!, target: m[6]!, packets: Number(m[1]) });
  }
  return out;
}

export async function readRuleCounters(runner: Runner, save: string): Promise<RuleCounter[]> {
  const r = await runner.run(save, ['-c', '-t', 'filter']);
  if (r.exitCode !== 0) throw new Error(`${save} -c -t filter failed with exit code ${r.exitCode}: ${r.stderr.trim()}`);
  return parseRuleCounters(r.stdout);
}
