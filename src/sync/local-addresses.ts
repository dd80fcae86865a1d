// The node's own IPv4 addresses, as the kernel has them (`ip -4 -o addr show`): the agent's
// revocation (src/agent/flows.ts) leaves alone the connections the node opens itself (kubelet's
// probes come from the bridge's address), which leave through OUTPUT, where no rule of ours
// judges them (docs/design.md, "What a node is programmed with").

import type { Runner } from './runner.ts';

/** Every IPv4 address of every interface of the namespace the runner runs in. */
export async function localAddresses(runner: Runner): Promise<Set<string>> {
  const r = await runner.run('ip', ['-4', '-o', 'addr', 'show']);
  if (r.exitCode !== 0) throw new Error(`ip -4 -o addr show failed with exit code ${r.exitCode}: ${r.stderr.trim() || '(no output)'}`);
  return parseLocalAddresses(r.stdout);
}

/** `2: eth0    inet 192.168.50.11/24 brd 192.168.50.255 scope global eth0\       valid_lft ...` -> 192.168.50.11. */
export function parseLocalAddresses(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/\binet (\d{1,3}(?:\.\d{1,3}){3})(?:\/\d+)?\b/g)) out.add(m[1]!);
  return out;
}
