import { describe, expect, it } from 'vitest';
import { block, ports, rule } from '../../test/support/builders.ts';
import { MAX_RULES_PER_POLICY, ruleExpansion } from './rule-expansion.ts';

describe('ruleExpansion', () => {
  it('one rule per peer and per group of 15 ports of a protocol (a range takes two); every port of a protocol is one match', () => {
    expect(ruleExpansion(rule())).toEqual({ peers: 1, portMatches: 1, rules: 1 });
    expect(ruleExpansion(rule(undefined, ports(80, 443))).rules).toBe(1);
    expect(ruleExpansion(rule(undefined, ports(...Array.from({ length: 16 }, (_, i) => 1000 + i)))).rules).toBe(2);
    expect(ruleExpansion(rule(undefined, ports([1000, 2000], [3000, 4000], 5, { protocol: 'UDP', port: 53 }))).portMatches).toBe(2);
    expect(ruleExpansion(rule(undefined, ports(80, { protocol: 'TCP' }))).portMatches).toBe(1);
    // A named port is a match of its own, in either direction (a set of the pods' named ports).
    expect(ruleExpansion(rule(undefined, ports('http', 'grpc'))).portMatches).toBe(2);
  });

  it("a tenant's 1000 ipBlocks and 2000 ports: 134,000 rules, far over the limit", () => {
    const peers = Array.from({ length: 1000 }, (_, i) => block(`10.0.${i >> 8}.${i & 255}/32`));
    const e = ruleExpansion(rule(peers, ports(...Array.from({ length: 2000 }, (_, i) => 2 * i + 1))));
    expect(e).toEqual({ peers: 1000, portMatches: 134, rules: 134_000 });
    expect(e.rules).toBeGreaterThan(MAX_RULES_PER_POLICY);
  });
});
