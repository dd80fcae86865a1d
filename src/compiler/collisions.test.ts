// The collision guard (collisions.ts), proven with an injected digest that makes two different
// chains get one name: both groups end up isolated by a drop-all chain, in the full and in the
// incremental compiler alike, and the collision is reported; it never merges the groups.

import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { modelOf, ns, pod, policy, rule, sel } from '../../test/support/builders.ts';
import { parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';
import type { Model } from '../model/store.ts';
import { quarantineChainName } from './collisions.ts';
import { compile } from './compile.ts';
import { IncrementalCompiler } from './incremental.ts';
import { setDigestForTests } from '../util/digest.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import type { Ruleset } from './ruleset.ts';

const sha256 = (text: string) => new Uint8Array(createHash('sha256').update(text).digest());

/** Chains whose rules mention either policy get one digest: the two contents below collide. */
function collideOn(...markers: string[]): void {
  setDigestForTests((text, use) => (use === 'chain' && markers.some((m) => text.includes(m)) ? new Uint8Array(32) : sha256(text)));
}

const A = pod('x', 'a', { app: 'a' }, { ip: '10.244.1.10', node: 'n1' });
const B = pod('y', 'b', { app: 'b' }, { ip: '10.244.1.11', node: 'n1' });
const CLIENT = pod('z', 'c', { app: 'c' }, { ip: '10.244.2.10', node: 'n2' });
// x/open-a lets everything in to a; y/closed-b lets nothing in to b.
const OPEN = policy('x', 'open-a', sel({ app: 'a' }), { ingress: [rule()] });
const CLOSED = policy('y', 'closed-b', sel({ app: 'b' }), { ingress: [] });

function cluster(): Model {
  return modelOf(ns('x'), ns('y'), ns('z'), A, B, CLIENT, OPEN, CLOSED);
}

/** The verdict of a new TCP connection from the client to `dst` on n1's rendered rules. */
function verdict(rs: Ruleset, dst: string): 'ACCEPT' | 'DROP' {
  const table = parseIptablesRestore(renderIptablesRestore(rs), { base: parseIptablesRestore(FOREIGN_FILTER), noflush: true });
  return trace(table, parseIpsetRestore(renderIpsetRestore(rs.sets)), 'FORWARD', { src: CLIENT.ips[0]!, dst, protocol: 'tcp', dport: 80, sport: 40000 }).verdict;
}

const ZERO_NAME = `PCTL-I-${'a'.repeat(21)}`;

describe('chain name collisions', () => {
  afterEach(() => setDigestForTests(undefined));

  it('without a collision: a is open, b is closed, and nothing is reported', () => {
    const rs = compile(cluster(), 'n1');
    expect(verdict(rs, A.ips[0]!)).toBe('ACCEPT');
    expect(verdict(rs, B.ips[0]!)).toBe('DROP');
    expect(rs.collisions).toBeUndefined();
  });

  it('compile: two contents under one name isolate both groups (no merge) and are reported', () => {
    collideOn('x/open-a', 'y/closed-b');
    const rs = compile(cluster(), 'n1');
    // Grouping by name alone would have sent b to a's allow-all chain, or a to b's: neither.
    expect(verdict(rs, A.ips[0]!)).toBe('DROP');
    expect(verdict(rs, B.ips[0]!)).toBe('DROP');
    expect(rs.collisions).toEqual([{ direction: 'Ingress', name: ZERO_NAME, chain: quarantineChainName(ZERO_NAME) }]);
    // The colliding name is not programmed at all; the quarantine chain drops everything and says why.
    expect(rs.chains.map((c) => c.name)).not.toContain(ZERO_NAME);
    const q = rs.chains.find((c) => c.name === quarantineChainName(ZERO_NAME))!;
    expect(q.name).toBe('PCTL-IX-aaaaaaaaaaaaaaaaaaaa');
    expect(q.rules).toEqual([
      { match: {}, action: { kind: 'log', prefix: 'PCTL I collision' }, comment: expect.stringContaining(`name collision: ${ZERO_NAME}`) },
      { match: {}, action: { kind: 'drop' }, comment: expect.stringContaining(`name collision: ${ZERO_NAME}`) },
    ]);
    // Both addresses are dispatched to it; the text is well-formed for the kernel.
    const dispatch = rs.sets.find((s) => s.name === 'PCTL-iX-aaaaaaaaaaaaaaaaaaaa')!;
    expect(dispatch.members.map((m) => m.entry)).toEqual([A.ips[0], B.ips[0]]);
  });

  it('equal contents under one name are no collision (pods share the chain as usual)', () => {
    collideOn('x/open-a');
    const m = cluster();
    m.upsert(pod('x', 'a2', { app: 'a' }, { ip: '10.244.1.12', node: 'n1' }));
    const rs = compile(m, 'n1');
    expect(rs.collisions).toBeUndefined();
    expect(verdict(rs, '10.244.1.12')).toBe('ACCEPT');
  });

  it('the incremental compiler quarantines when a collision appears, releases when it goes, and equals compile()', () => {
    collideOn('x/open-a', 'y/closed-b');
    const m = modelOf(ns('x'), ns('y'), ns('z'), A, CLIENT, OPEN, CLOSED);
    const ic = new IncrementalCompiler(m, 'n1');
    const check = (open: 'ACCEPT' | 'DROP', collisions: number) => {
      const rs = ic.ruleset();
      expect(rs).toEqual(compile(m, 'n1'));
      expect(renderIptablesRestore(rs)).toBe(renderIptablesRestore(compile(m, 'n1')));
      expect(verdict(rs, A.ips[0]!)).toBe(open);
      expect(rs.collisions ?? []).toHaveLength(collisions);
      return rs;
    };
    check('ACCEPT', 0); // b's chain has no local pod: one content under the name
    m.upsert(B);
    const collided = check('DROP', 1);
    expect(verdict(collided, B.ips[0]!)).toBe('DROP');
    expect(ic.stats()?.full).toBe(true); // the grouping changed: rebuilt
    const d = ic.delta();
    expect(d.writtenChains.map((c) => c.name)).toContain(quarantineChainName(ZERO_NAME));
    expect(d.removedChains).toContain(ZERO_NAME);
    // Another pod joining a colliding group stays in quarantine.
    m.upsert(pod('x', 'a2', { app: 'a' }, { ip: '10.244.1.12', node: 'n1' }));
    expect(verdict(check('DROP', 1), '10.244.1.12')).toBe('DROP');
    m.remove(B.uid, 'Pod');
    m.remove('pod-x-a2', 'Pod');
    const released = check('ACCEPT', 0);
    expect(released.chains.map((c) => c.name)).toContain(ZERO_NAME);
    expect(ic.delta().removedChains).toContain(quarantineChainName(ZERO_NAME));
    ic.dispose();
  });
});
