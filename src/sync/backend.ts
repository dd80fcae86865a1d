// Which iptables the host uses. Writing to the other backend would program rules the kernel
// path of the other agents never sees (docs/design.md, "What a node is programmed with"): detect, never assume.

import type { Runner } from './runner.ts';

export interface Backend {
  readonly name: 'nft' | 'legacy';
  readonly save: string;
  readonly restore: string;
  /** Why this one was chosen, for logs. */
  readonly reason: string;
}

export const NFT: Omit<Backend, 'reason'> = { name: 'nft', save: 'iptables-nft-save', restore: 'iptables-nft-restore' };
export const LEGACY: Omit<Backend, 'reason'> = { name: 'legacy', save: 'iptables-legacy-save', restore: 'iptables-legacy-restore' };

/** Rule lines in an iptables-save dump; "table incompatible" output (exit 0) counts as none. */
export function countRules(dump: string): number {
  if (/incompatible/i.test(dump)) return 0;
  return dump.split('\n').filter((l) => l.startsWith('-A ')).length;
}

/**
 * kubelet (1.24+) creates the chain KUBE-IPTABLES-HINT in the mangle table of the backend it
 * uses; without it, the backend holding more rules is the one in use (kube-proxy's own
 * heuristic). nft wins a tie: it is Debian's default.
 */
export async function detectBackend(r: Runner): Promise<Backend> {
  const dump = async (b: Omit<Backend, 'reason'>, table?: string) => {
    const res = await r.run(b.save, table ? ['-t', table] : []).catch(() => ({ stdout: '', exitCode: 127, stderr: '' }));
    return res.exitCode === 0 ? res.stdout : '';
  };
  for (const b of [NFT, LEGACY]) {
    if ((await dump(b, 'mangle')).includes(':KUBE-IPTABLES-HINT')) return { ...b, reason: 'kubelet KUBE-IPTABLES-HINT chain found in its mangle table' };
  }
  const [nft, legacy] = [countRules(await dump(NFT)), countRules(await dump(LEGACY))];
  if (legacy > nft) return { ...LEGACY, reason: `legacy holds more rules (${legacy} vs ${nft})` };
  return { ...NFT, reason: nft === legacy ? `no rules in either backend (${nft}); nft is the default` : `nft holds more rules (${nft} vs ${legacy})` };
}
