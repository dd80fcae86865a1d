import { describe, expect, it } from 'vitest';
import { CHAIN_PREFIX, MAX_CHAIN_NAME, MAX_SET_NAME, chainName, hash64, setName } from './names.ts';

describe('names', () => {
  it('are deterministic, prefixed and within the kernel limits', () => {
    const c = chainName('I', 'some content');
    expect(c).toBe(chainName('I', 'some content'));
    expect(c.startsWith(CHAIN_PREFIX)).toBe(true);
    expect(c.length).toBeLessThanOrEqual(MAX_CHAIN_NAME);
    expect(setName('p', 'x').length).toBeLessThanOrEqual(MAX_SET_NAME);
  });

  it('pins the hash so names stay stable across releases (a changed hash renames every object)', () => {
    expect(chainName('I', 'x/deny ingress')).toMatchInlineSnapshot(`"PCTL-I-vjg6xfto6x3bg"`);
  });

  it('does not collide on a large sample of similar inputs', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200_000; i++) seen.add(hash64(`own:ns-${i % 97}|pods:app\u0000In\u0000v${i}`));
    expect(seen.size).toBe(200_000);
  });

  it('never takes a prefix another agent uses', () => {
    for (const foreign of ['KUBE-', 'FLANNEL-', 'CNI-', 'cali-', 'KUBE-ROUTER-', 'WEAVE-']) {
      expect(CHAIN_PREFIX.startsWith(foreign) || foreign.startsWith(CHAIN_PREFIX)).toBe(false);
    }
  });
});
