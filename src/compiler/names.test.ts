import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { CHAIN_HASH_CHARS, CHAIN_PREFIX, MAX_CHAIN_NAME, MAX_SET_NAME, SET_HASH_CHARS, chainName, setName } from './names.ts';
import { hash64, hashText, setDigestForTests } from '../util/digest.ts';
import { RULE_ID_CHARS, ruleId } from '../sync/render.ts';

/** The first `chars` base32 characters of SHA-256, computed independently with node:crypto. */
function reference(text: string, chars: number): string {
  const d = createHash('sha256').update(text, 'utf8').digest();
  let bits = '';
  for (const b of d) bits += b.toString(2).padStart(8, '0');
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let out = '';
  for (let i = 0; i < chars; i++) out += alphabet[parseInt(bits.slice(i * 5, i * 5 + 5), 2)];
  return out;
}

describe('names', () => {
  afterEach(() => setDigestForTests(undefined));

  it('are deterministic, prefixed and fill the kernel limits exactly', () => {
    const c = chainName('I', 'some content');
    expect(c).toBe(chainName('I', 'some content'));
    expect(c.startsWith(CHAIN_PREFIX)).toBe(true);
    expect(c).toHaveLength(MAX_CHAIN_NAME);
    expect(setName('p', 'x')).toHaveLength(MAX_SET_NAME);
  });

  it('carry SHA-256: 105 bits in a chain name, 120 in a set name and in a rule id', () => {
    for (const text of ['', 'x/deny ingress', 'ünïcödé \u2028 \n', 'a'.repeat(10_000)]) {
      expect(chainName('E', text)).toBe(`PCTL-E-${reference(text, CHAIN_HASH_CHARS)}`);
      expect(setName('b', text)).toBe(`PCTL-b-${reference(text, SET_HASH_CHARS)}`);
    }
    expect(CHAIN_HASH_CHARS * 5).toBe(105);
    expect(SET_HASH_CHARS * 5).toBe(120);
    expect(RULE_ID_CHARS * 5).toBe(120);
    const rule = { match: {}, action: { kind: 'drop' as const }, comment: 'c' };
    expect(ruleId(rule)).toBe(reference(JSON.stringify([rule.match, rule.action, rule.comment]), RULE_ID_CHARS));
  });

  it('pins the hash so names stay stable across releases (a changed hash renames every object)', () => {
    expect(chainName('I', 'x/deny ingress')).toMatchInlineSnapshot(`"PCTL-I-uu3tkl5n3stws5bhtkxoy"`);
  });

  it('does not collide on a large sample of similar inputs, even cut to 65 bits', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100_000; i++) seen.add(hash64(`own:ns-${i % 97}|pods:app\u0000In\u0000v${i}`));
    expect(seen.size).toBe(100_000);
  });

  it('takes an injected digest in tests, by use, and restores SHA-256', () => {
    setDigestForTests((text, use) => (use === 'chain' ? new Uint8Array(32) : createHash('sha256').update(text).digest()));
    expect(chainName('I', 'a')).toBe(chainName('I', 'b'));
    expect(setName('p', 'a')).not.toBe(setName('p', 'b'));
    setDigestForTests(undefined);
    expect(chainName('I', 'a')).not.toBe(chainName('I', 'b'));
    expect(() => hashText('a', 52)).toThrow(/260 bits/);
  });

  it('never takes a prefix another agent uses', () => {
    for (const foreign of ['KUBE-', 'FLANNEL-', 'CNI-', 'cali-', 'KUBE-ROUTER-', 'WEAVE-']) {
      expect(CHAIN_PREFIX.startsWith(foreign) || foreign.startsWith(CHAIN_PREFIX)).toBe(false);
    }
  });
});
