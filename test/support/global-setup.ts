// Around the whole test run: the machine's own network namespace must come out exactly as it
// went in (no iptables rule, no ipset), and no namespace of ours may be left behind.
// Kernel tests work only inside namespaces they create; this checks that they also clean up.

import { execFileSync } from 'node:child_process';

const OUR_NETNS = /^(pl-|pctl-|pt-)/;

function rootState(): { iptables: string; ipsets: string } {
  const run = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return '';
    }
  };
  const strip = (t: string) =>
    t
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .map((l) => l.replace(/\[\d+:\d+\]/g, ''))
      .join('\n');
  return { iptables: strip(run('iptables-save', [])) + strip(run('iptables-legacy-save', [])), ipsets: run('ipset', ['list', '-n']) };
}

function ourNetns(): string[] {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.split(' ')[0]!)
      .filter((n) => OUR_NETNS.test(n));
  } catch {
    return [];
  }
}

export default function setup(): () => void {
  if (process.getuid?.() !== 0) return () => {};
  const before = rootState();
  const netnsBefore = new Set(ourNetns());
  return () => {
    const after = rootState();
    const problems: string[] = [];
    if (after.iptables !== before.iptables) problems.push("the machine's own iptables rules changed during the test run");
    if (after.ipsets !== before.ipsets) problems.push(`the machine's own ipsets changed during the test run: ${after.ipsets.trim() || '(none now)'}`);
    // Namespaces present before the run may belong to another run on a developer machine.
    const left = ourNetns().filter((n) => !netnsBefore.has(n));
    if (left.length) problems.push(`network namespaces left behind: ${left.join(', ')}`);
    if (problems.length) throw new Error(`leak check failed:\n- ${problems.join('\n- ')}`);
    console.log("leak check: the machine's own namespace is unchanged and no test namespace is left");
  };
}
