import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { block, modelOf, node, pod, policy, port, rule, sel } from '../../test/support/builders.ts';
import { Model } from '../model/store.ts';
import { compile } from './compile.ts';
import { BUCKETS, PROGRAMMED_SET, UNKNOWN_CHAINS, bucketChainName, bucketOf } from './layout.ts';
import { chunkPorts, mergeRanges } from './rules.ts';
import { parseDropLogPrefix, policiesDigest } from './drop-log.ts';
import { IncrementalCompiler } from './incremental.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import type { Ruleset } from './ruleset.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { checkReferences, parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';

const goldenDir = new URL('../../test/fixtures/golden/', import.meta.url);

/** Every jump and goto lands on a chain we define; every set a rule names is defined. */
function danglingReferences(rs: Ruleset): string[] {
  const chains = new Set(rs.chains.map((c) => c.name));
  const sets = new Set(rs.sets.map((s) => s.name));
  const out: string[] = [];
  for (const c of rs.chains) {
    for (const r of c.rules) {
      if ((r.action.kind === 'jump' || r.action.kind === 'goto') && !chains.has(r.action.chain)) out.push(`${c.name} -> ${r.action.chain}`);
      for (const s of r.match.sets ?? []) if (!sets.has(s.set)) out.push(`${c.name} uses set ${s.set}`);
    }
  }
  for (const h of rs.hooks) if (!chains.has(h.target)) out.push(`hook ${h.chain} -> ${h.target}`);
  return out;
}

describe('compile', () => {
  it('an ingress named port that many containers of a pod declare is one rule per peer, not one per port (a tenant cannot multiply the rules)', () => {
    // The API keeps a port name unique within a container only: 600 containers may each call
    // theirs `web`. Resolved to numbers, 100 peers would be 100 x 40 multiport rules.
    const ports = Array.from({ length: 600 }, (_, i) => port(1000 + 2 * i, 'web'));
    const target = pod('t', 'big', { app: 'big' }, { ip: '10.244.1.10', node: 'n1', ports });
    const peers = Array.from({ length: 100 }, (_, i) => block(`192.168.${Math.floor(i / 250)}.${(i % 250) + 1}/32`));
    const pol = policy('t', 'web-in', sel({ app: 'big' }), { ingress: [rule(peers, [{ protocol: 'TCP', port: 'web' }])] });
    const m = modelOf(node('n1', '10.244.1.0/24', '192.168.50.11'), target, pol);
    const rs = compile(m, 'n1');
    const chain = rs.chains.find((c) => c.rules.some((r) => r.comment === 't/web-in ingress[0]'))!;
    expect(chain.rules.filter((r) => r.comment === 't/web-in ingress[0]')).toHaveLength(100);
    const table = parseIptablesRestore(renderIptablesRestore(rs));
    const ipsets = parseIpsetRestore(renderIpsetRestore(rs.sets));
    const to = (dport: number) => trace(table, ipsets, 'FORWARD', { src: '192.168.0.7', dst: '10.244.1.10', protocol: 'tcp', dport, sport: 40000 }).verdict;
    expect([to(1000), to(1000 + 2 * 599), to(1001), to(80)]).toEqual(['ACCEPT', 'ACCEPT', 'DROP', 'DROP']);
  });

  it('matches the golden restore payloads', () => {
    const rs = compile(sampleCluster(), 'n1');
    const text = `# ipset restore\n${renderIpsetRestore(rs.sets)}# iptables-restore --noflush\n${renderIptablesRestore(rs)}`;
    const file = new URL('sample-n1.restore', goldenDir);
    if (process.env.UPDATE_GOLDEN) writeFileSync(file, text);
    expect(text).toBe(readFileSync(file, 'utf8'));
  });

  it('defines every chain and set it references, in the data and in the rendered text', () => {
    for (const node of ['n1', 'n2']) {
      const rs = compile(sampleCluster(), node);
      expect(danglingReferences(rs)).toEqual([]);
      // The tracer parses the text as iptables-restore and ipset restore would, on top of the
      // built-in chains, and lists jumps to undefined chains, unknown sets, unused chains.
      const table = parseIptablesRestore(`*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n`);
      const problems = checkReferences(parseIptablesRestore(renderIptablesRestore(rs), { base: table, noflush: true }), parseIpsetRestore(renderIpsetRestore(rs.sets)));
      expect(problems).toEqual([]);
    }
  });

  it('is deterministic and independent of insertion order', () => {
    const a = compile(sampleCluster(), 'n1');
    const reversed = new Model();
    const m = sampleCluster();
    for (const r of [...m.allPolicies(), ...m.allPods(), ...m.allNamespaces(), ...m.allNodes()].reverse()) reversed.upsert(r);
    expect(renderIptablesRestore(compile(reversed, 'n1'))).toBe(renderIptablesRestore(a));
    expect(renderIpsetRestore(compile(reversed, 'n1').sets)).toBe(renderIpsetRestore(a.sets));
  });

  it('shares one chain between local pods under the same policies', () => {
    const rs = compile(sampleCluster(), 'n1');
    const ingressChains = rs.chains.filter((c) => c.name.startsWith('PCTL-I-'));
    // x/a and x/a2 share; x/b has its own (deny only); so has y/d (y/web).
    expect(ingressChains).toHaveLength(3);
  });

  it('a peer pod relabel changes set members only, no chain', () => {
    const m = sampleCluster();
    const before = compile(m, 'n1');
    const r = m.findPod('x', 'r')!; // on n2: a peer of n1's pods, not a target there
    m.upsert({ ...r, labels: { app: 'db' } });
    const after = compile(m, 'n1');
    expect(renderIptablesRestore(after)).toBe(renderIptablesRestore(before));
    expect(renderIpsetRestore(after.sets)).not.toBe(renderIpsetRestore(before.sets));
  });

  it('excludes hostNetwork pods and pods of other nodes from dispatch', () => {
    const rs = compile(sampleCluster(), 'n1');
    const members = rs.sets.flatMap((s) => s.members.map((m) => m.entry));
    expect(members.some((e) => e.startsWith('192.168.50.12'))).toBe(false);
    const dispatched = rs.sets.filter((s) => /^PCTL-[ie]-/.test(s.name)).flatMap((s) => s.members.map((m) => m.entry));
    expect([...new Set(dispatched)].sort()).toEqual(['10.244.1.10', '10.244.1.11', '10.244.1.12', '10.244.1.14']);
  });

  it('dispatches by bucket (last octet & 63): through a tree of chains on 2 bits each to a bucket chain per non-empty bucket, goto all the way', () => {
    const rs = compile(sampleCluster(), 'n1');
    const chain = (name: string) => rs.chains.find((c) => c.name === name);
    // Ingress: x/a (.10) and x/a2 (.12) share a chain, x/b (.11) and y/d (.14) have their own.
    // Egress: x/b only. Buckets 10 to 14 are all in 0-15 (bits 4-5: 0); 10 and 11 in 8-11
    // (bits 2-3: 2), 12 and 14 in 12-15 (3).
    expect(chain('PCTL-INGRESS')!.rules.map((r) => [r.match.dstNet, r.action])).toEqual([['0.0.0.0/0.0.0.48', { kind: 'goto', chain: 'PCTL-IQ-0' }]]);
    expect(chain('PCTL-IQ-0')!.rules.map((r) => [r.match.dstNet, r.action])).toEqual([
      ['0.0.0.8/0.0.0.12', { kind: 'goto', chain: 'PCTL-IS-2' }],
      ['0.0.0.12/0.0.0.12', { kind: 'goto', chain: 'PCTL-IS-3' }],
    ]);
    expect(chain('PCTL-IS-2')!.rules.map((r) => [r.match.dstNet, r.action])).toEqual([
      ['0.0.0.2/0.0.0.3', { kind: 'goto', chain: 'PCTL-IB-10' }],
      ['0.0.0.3/0.0.0.3', { kind: 'goto', chain: 'PCTL-IB-11' }],
    ]);
    expect(chain('PCTL-IS-3')!.rules.map((r) => [r.match.dstNet, r.action])).toEqual([
      ['0.0.0.0/0.0.0.3', { kind: 'goto', chain: 'PCTL-IB-12' }],
      ['0.0.0.2/0.0.0.3', { kind: 'goto', chain: 'PCTL-IB-14' }],
    ]);
    expect(chain('PCTL-EGRESS')!.rules.map((r) => [r.match.srcNet, r.action])).toEqual([['0.0.0.0/0.0.0.48', { kind: 'goto', chain: 'PCTL-EQ-0' }]]);
    expect(chain('PCTL-EQ-0')!.rules.map((r) => [r.match.srcNet, r.action])).toEqual([['0.0.0.8/0.0.0.12', { kind: 'goto', chain: 'PCTL-ES-2' }]]);
    expect(chain('PCTL-ES-2')!.rules.map((r) => [r.match.srcNet, r.action])).toEqual([['0.0.0.3/0.0.0.3', { kind: 'goto', chain: 'PCTL-EB-11' }]]);
    // Only the chains on the way to a bucket in use exist.
    expect(rs.chains.filter((c) => /^PCTL-[EI][QS]-/.test(c.name)).map((c) => c.name)).toEqual(['PCTL-EQ-0', 'PCTL-ES-2', 'PCTL-IQ-0', 'PCTL-IS-2', 'PCTL-IS-3']);
    const shared = chain('PCTL-IB-10')!.rules;
    expect(shared).toHaveLength(1);
    expect(chain('PCTL-IB-12')!.rules).toEqual(shared);
    expect(shared[0]!.action.kind).toBe('goto');
    expect(rs.chains.filter((c) => /^PCTL-[EI]B-/.test(c.name)).map((c) => c.name)).toEqual(['PCTL-EB-11', 'PCTL-IB-10', 'PCTL-IB-11', 'PCTL-IB-12', 'PCTL-IB-14']);
    // No self check any more.
    expect(rs.chains.some((c) => c.name === 'PCTL-SELF')).toBe(false);
    expect(rs.sets.some((s) => s.name === 'PCTL-local')).toBe(false);
  });

  it('a local pod joining a group with a member in its bucket changes set members only', () => {
    const m = sampleCluster();
    const before = compile(m, 'n1');
    m.upsert(pod('x', 'a3', { app: 'web' }, { ip: '10.244.1.74', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] })); // 74 & 63 = 10, as x/a
    const after = compile(m, 'n1');
    expect(renderIptablesRestore(after)).toBe(renderIptablesRestore(before));
    expect(renderIpsetRestore(after.sets)).not.toBe(renderIpsetRestore(before.sets));
    // In a new bucket: a bucket chain and a bucket rule more, nothing else.
    m.upsert(pod('x', 'a4', { app: 'web' }, { ip: '10.244.1.13', node: 'n1', ports: [port(80, 'http'), port(53, 'dns', 'UDP')] }));
    const third = compile(m, 'n1');
    const names = (rs: Ruleset) => rs.chains.map((c) => c.name);
    expect(names(third).filter((n) => !names(after).includes(n))).toEqual(['PCTL-IB-13']);
    expect(third.chains.find((c) => c.name === 'PCTL-IS-3')!.rules).toHaveLength(3);
  });

  it('bucket chain names are fixed and within the kernel limit', () => {
    for (const dir of ['Ingress', 'Egress'] as const) {
      for (let k = 0; k < BUCKETS; k++) {
        const name = bucketChainName(dir, k);
        expect(name).toBe(`PCTL-${dir[0]}B-${k}`);
        expect(name.length).toBeLessThanOrEqual(28);
      }
    }
    expect(bucketOf('10.244.1.5')).toBe(5);
    expect(bucketOf('10.244.1.21')).toBe(21);
    expect(bucketOf('10.244.1.69')).toBe(5);
    expect(bucketOf('10.244.255.255')).toBe(63);
    expect(bucketOf('10.244.16.0')).toBe(0);
    expect(() => bucketOf('10.244.1.')).toThrow(/not a dotted-quad IPv4 address/);
    expect(() => bucketOf('fd00::1')).toThrow(/not a dotted-quad/);
  });

  it('an invalid policy isolates with a DROP and allows nothing', () => {
    const m = modelOf(pod('x', 'a', {}, { ip: '10.244.1.10', node: 'n1' }), policy('x', 'bad', sel(), { ingress: [rule()], invalid: true }));
    const rs = compile(m, 'n1');
    const chain = rs.chains.find((c) => c.name.startsWith('PCTL-I-'))!;
    expect(chain.rules.map((r) => r.action.kind)).toEqual(['log', 'drop']);
    // The log rule names the policy isolating the pod (by digest: drop-log.ts).
    const log = chain.rules[0]!.action;
    expect(log.kind === 'log' && parseDropLogPrefix(log.prefix)).toEqual({ kind: 'np', dir: 'Ingress', policiesDigest: policiesDigest(['x/bad']) });
  });

  it('stores 0.0.0.0/0 as two halves, and an except equal to a half removes it', () => {
    const m = modelOf(
      pod('x', 'a', {}, { ip: '10.244.1.10', node: 'n1' }),
      policy('x', 'e', sel(), { types: ['Egress'], egress: [rule([block('0.0.0.0/0', ['128.0.0.0/1', '10.0.0.0/8'])])] }),
    );
    const set = compile(m, 'n1').sets.find((s) => s.name.startsWith('PCTL-b-'))!;
    expect(set.members).toEqual([{ entry: '0.0.0.0/1' }, { entry: '10.0.0.0/8', nomatch: true }]);
  });

  it('merges and chunks port ranges for multiport', () => {
    expect(mergeRanges([{ from: 81, to: 81 }, { from: 80, to: 80 }, { from: 82, to: 90 }, { from: 100, to: 100 }])).toEqual([
      { from: 80, to: 90 },
      { from: 100, to: 100 },
    ]);
    const many = Array.from({ length: 20 }, (_, i) => ({ from: 1000 + 2 * i, to: 1000 + 2 * i }));
    const chunks = chunkPorts(many);
    expect(chunks.map((c) => c.length)).toEqual([15, 5]);
  });

  describe('unprogrammed addresses of the node\'s pod CIDRs', () => {
    const rulesOf = (rs: Ruleset, chain: string) => rs.chains.find((c) => c.name === chain)!.rules;

    it('PCTL-programmed holds every local enforceable pod, isolated or not, and nothing else', () => {
      const m = modelOf(
        node('n1', '10.244.1.0/24', '192.168.50.11'),
        pod('x', 'open', {}, { ip: '10.244.1.2', node: 'n1' }),
        pod('x', 'iso', { app: 'db' }, { ip: '10.244.1.3', node: 'n1' }),
        pod('x', 'done', {}, { ip: '10.244.1.4', node: 'n1', phase: 'Succeeded' }),
        pod('x', 'pending', {}, { ip: null, node: 'n1', phase: 'Pending' }),
        pod('x', 'remote', {}, { ip: '10.244.2.2', node: 'n2' }),
        pod('x', 'host', {}, { ip: '192.168.50.11', node: 'n1', hostNetwork: true }),
        policy('x', 'deny', sel({ app: 'db' }), { types: ['Ingress'], ingress: [] }),
      );
      const rs = compile(m, 'n1');
      expect(rs.sets.find((s) => s.name === PROGRAMMED_SET)!.members.map((x) => x.entry)).toEqual(['10.244.1.2', '10.244.1.3']);
    });

    it('drops new connections from and to unprogrammed pod-CIDR addresses, after the replies rule, in FORWARD and INPUT', () => {
      const m = modelOf(node('n1', '10.244.1.0/24', '192.168.50.11'), pod('x', 'a', {}, { ip: '10.244.1.2', node: 'n1' }));
      const rs = compile(m, 'n1', { podCidrs: ['10.99.0.0/24', '10.244.1.7/24'] });
      const fwd = rulesOf(rs, 'PCTL-FORWARD');
      expect(fwd[0]!.match.ctstate).toEqual(['RELATED', 'ESTABLISHED']);
      const toUnknown = (r: { action: { kind: string; chain?: string } }) => r.action.kind === 'goto' && (r.action.chain === UNKNOWN_CHAINS.src || r.action.chain === UNKNOWN_CHAINS.dst);
      const drops = fwd.filter(toUnknown).map((r) => [r.match.srcNet ?? `dst ${r.match.dstNet}`, r.match.sets, (r.action as { chain: string }).chain]);
      // Configured CIDRs join the Node's, canonical and without duplicates; one rule per CIDR and
      // side (the gate set looked up once), on to the chain holding the logged drop.
      expect(drops).toEqual([
        ['10.244.1.0/24', [{ set: PROGRAMMED_SET, dirs: 'src', negate: true }], UNKNOWN_CHAINS.src],
        ['10.99.0.0/24', [{ set: PROGRAMMED_SET, dirs: 'src', negate: true }], UNKNOWN_CHAINS.src],
        ['dst 10.244.1.0/24', [{ set: PROGRAMMED_SET, dirs: 'dst', negate: true }], UNKNOWN_CHAINS.dst],
        ['dst 10.99.0.0/24', [{ set: PROGRAMMED_SET, dirs: 'dst', negate: true }], UNKNOWN_CHAINS.dst],
      ]);
      for (const side of ['src', 'dst'] as const) expect(rulesOf(rs, UNKNOWN_CHAINS[side]).map((r) => [r.action.kind, r.match])).toEqual([['log', {}], ['drop', {}]]);
      const input = rulesOf(rs, 'PCTL-INPUT');
      expect(input.filter(toUnknown).map((r) => r.match.srcNet)).toEqual(['10.244.1.0/24', '10.99.0.0/24']);
      // Traced: an unknown address on the bridge gets nothing either way; a programmed one passes.
      const table = parseIptablesRestore(renderIptablesRestore(rs));
      const sets = parseIpsetRestore(renderIpsetRestore(rs.sets));
      const verdict = (src: string, dst: string, hook: 'FORWARD' | 'INPUT' = 'FORWARD') => trace(table, sets, hook, { src, dst, protocol: 'tcp', dport: 80, sport: 40000 }).verdict;
      expect(verdict('10.244.1.9', '10.244.2.2')).toBe('DROP');
      expect(verdict('10.244.2.2', '10.244.1.9')).toBe('DROP');
      expect(verdict('192.168.7.7', '10.244.1.9')).toBe('DROP');
      expect(verdict('10.244.1.9', '192.168.50.11', 'INPUT')).toBe('DROP');
      expect(verdict('10.244.1.2', '10.244.2.2')).not.toBe('DROP');
      expect(verdict('10.244.2.2', '10.244.1.2')).not.toBe('DROP');
      expect(verdict('10.244.1.2', '192.168.50.11', 'INPUT')).not.toBe('DROP');
    });

    it('without pod CIDRs there is neither the set nor a drop', () => {
      const rs = compile(modelOf(pod('x', 'a', {}, { ip: '10.244.1.2', node: 'n1' })), 'n1');
      expect(rs.sets.map((s) => s.name)).not.toContain(PROGRAMMED_SET);
      expect(rulesOf(rs, 'PCTL-FORWARD').some((r) => r.action.kind === 'drop')).toBe(false);
    });

    it('the incremental compiler follows a change of the node\'s pod CIDRs', () => {
      const m = modelOf(pod('x', 'a', {}, { ip: '10.244.1.2', node: 'n1' }));
      const ic = new IncrementalCompiler(m, 'n1');
      const text = (rs: Ruleset) => renderIpsetRestore(rs.sets) + renderIptablesRestore(rs);
      expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
      m.upsert(node('n1', '10.244.1.0/24', '192.168.50.11'));
      expect(text(ic.ruleset())).toBe(text(compile(m, 'n1')));
      expect(ic.ruleset().sets.map((s) => s.name)).toContain(PROGRAMMED_SET);
      m.upsert(pod('x', 'b', {}, { ip: '10.244.1.3', node: 'n1' }));
      const rs = ic.ruleset();
      expect(text(rs)).toBe(text(compile(m, 'n1')));
      expect(ic.delta().memberChanges).toEqual([{ set: PROGRAMMED_SET, added: ['10.244.1.3'], removed: [], gate: true }]);
      m.remove('pod-x-a');
      ic.ruleset();
      expect(ic.delta().memberChanges).toEqual([{ set: PROGRAMMED_SET, added: [], removed: ['10.244.1.2'], gate: true }]);
    });
  });
});
