import { describe, expect, it } from 'vitest';
import { modelOf, node, ns, pod, policy, sel } from '../../test/support/builders.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { dropLogMismatch } from '../../test/support/drop-log-check.ts';
import { parseIpsetRestore, parseIptablesRestore, trace } from '../../test/support/tracer.ts';
import { normalize } from '../model/normalize.ts';
import type { Model } from '../model/store.ts';
import type { ClusterPolicyRecord } from '../model/types.ts';
import { allowed } from '../semantics/evaluate.ts';
import { renderIpsetRestore, renderIptablesRestore, renderRule } from '../sync/render.ts';
import { compile } from './compile.ts';
import { chainedDrop, clusterPolicyDigest, dropChain, dropChainsOf, dropLogPrefix, parseDropLogPrefix, policiesDigest, type DropCause } from './drop-log.ts';
import { IncrementalCompiler } from './incremental.ts';
import { FORWARD_CHAIN, INPUT_CHAIN } from './layout.ts';
import { DROP_LOG_PREFIX_MAX, type Ruleset } from './ruleset.ts';

function cnp(name: string, spec: Record<string, unknown>): ClusterPolicyRecord {
  return normalize({ apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name }, spec }).record as ClusterPolicyRecord;
}

/** The sample cluster plus an Admin Deny (TCP 5432 into x from y) and a Baseline Deny (ingress of y from y). */
function tiered(): Model {
  const m = sampleCluster();
  m.upsert(
    cnp('no-db-from-y', {
      tier: 'Admin',
      priority: 5,
      subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'x' } } },
      ingress: [{ name: 'pg', action: 'Deny', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }],
    }),
  );
  m.upsert(cnp('y-closed', { tier: 'Baseline', priority: 10, subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'y' } } }, ingress: [{ name: 'all', action: 'Deny', from: [{ namespaces: {} }] }] }));
  return m;
}

describe('drop log prefixes', () => {
  it('read back what they were written from, within NFLOG\'s 63 characters', () => {
    const long = 'a'.repeat(253);
    const causes: DropCause[] = [
      { kind: 'np', dir: 'Ingress', policies: ['x/deny', 'x/allow'] },
      { kind: 'cnp', dir: 'Egress', tier: 'Baseline', index: 99, name: long },
      { kind: 'unknown', dir: 'Egress' },
      { kind: 'collision', dir: 'Ingress' },
      { kind: 'midstream', dir: 'Egress' },
      { kind: 'midstream', dir: 'Ingress' },
    ];
    const back = causes.map((c) => dropLogPrefix(c));
    for (const p of back) expect(p.length).toBeLessThanOrEqual(DROP_LOG_PREFIX_MAX);
    expect(back.map((p) => parseDropLogPrefix(p))).toEqual([
      { kind: 'np', dir: 'Ingress', policiesDigest: policiesDigest(['x/allow', 'x/deny']) },
      { kind: 'cnp', dir: 'Egress', tier: 'Baseline', index: 99, nameDigest: clusterPolicyDigest(long) },
      { kind: 'unknown', dir: 'Egress' },
      { kind: 'collision', dir: 'Ingress' },
      { kind: 'midstream', dir: 'Egress' },
      { kind: 'midstream', dir: 'Ingress' },
    ]);
    expect(back.slice(-2)).toEqual(['PCTL E midstream', 'PCTL I midstream']);
    // The digests tell policies apart, and the order of the isolating policies does not matter.
    expect(policiesDigest(['x/a'])).not.toBe(policiesDigest(['x/b']));
    expect(clusterPolicyDigest('a')).not.toBe(clusterPolicyDigest('b'));
  });

  it('refuses prefixes someone else wrote', () => {
    for (const text of ['', 'calico-D', 'PCTL', 'PCTL X np abc', 'PCTL I np', 'PCTL I cnp Other 1 abc', 'PCTL I cnp Admin -1 abc', 'PCTL I cnp Admin 1.5 abc', 'PCTL I unknown extra', 'PCTL I midstream extra']) {
      expect(parseDropLogPrefix(text), text).toBeUndefined();
    }
  });
});

describe('drop chains', () => {
  const cause: DropCause = { kind: 'cnp', dir: 'Ingress', tier: 'Admin', index: 2, name: 'wall' };
  it('a conditional drop is one rule to the chain of its prefix; a drop of every packet stays in place', () => {
    const [rule, ...more] = chainedDrop({ protocol: 'tcp' }, 'cnp/wall Admin Deny ingress[2]', cause);
    expect(more).toEqual([]);
    expect(rule!.action).toEqual({ kind: 'logdrop', chain: dropChain(dropLogPrefix(cause)).name, prefix: dropLogPrefix(cause) });
    expect(renderRule('PCTL-D-x', rule!)).toMatch(new RegExp(`-p tcp .* -g ${dropChain(dropLogPrefix(cause)).name}$`));
    expect(chainedDrop({}, 'all', cause).map((r) => r.action.kind)).toEqual(['log', 'drop']);
  });
  it('one chain per prefix, each named once whatever uses it', () => {
    const other: DropCause = { ...cause, index: 3 };
    const a = chainedDrop({ protocol: 'tcp' }, 'a', cause);
    const b = chainedDrop({ protocol: 'udp' }, 'b', cause);
    const c = chainedDrop({ protocol: 'udp' }, 'c', other);
    const chains = dropChainsOf([{ rules: a }, { rules: [...b, ...c] }]);
    expect(chains.map((x) => x.name)).toEqual([dropChain(dropLogPrefix(cause)).name, dropChain(dropLogPrefix(other)).name]);
    expect(chains[0]!.name).not.toBe(chains[1]!.name);
    expect(chains[0]!.name).toMatch(/^PCTL-L-[a-z2-7]+$/);
  });
});

describe('compiled drops are logged', () => {
  const compiled = (): Ruleset[] => [compile(tiered(), 'n1', { podCidrs: ['10.244.1.0/24'] }), compile(tiered(), 'n1', { podCidrs: ['10.244.1.0/24'], tiers: { continuation: { Admin: 'dispatch' } } })];

  it('every drop follows a log rule with the same match, and nothing logs before the replies rule', () => {
    for (const rs of compiled()) {
      let drops = 0;
      for (const c of rs.chains) {
        c.rules.forEach((r, i) => {
          if (r.action.kind === 'drop') {
            drops++;
            const before = c.rules[i - 1];
            expect(before?.action.kind, `${c.name} rule ${i + 1}`).toBe('log');
            expect(before!.match).toEqual(r.match);
          }
          if (r.action.kind === 'log') {
            expect(c.rules[i + 1]?.action.kind).toBe('drop');
            expect(parseDropLogPrefix(r.action.prefix), r.action.prefix).toBeDefined();
          }
        });
      }
      expect(drops).toBeGreaterThan(4);
      // A conditional Deny of a pod's tier chain is one rule to the drop chain of its prefix,
      // which the Ruleset holds: the log rule and the drop, with no match (they see only what the
      // Deny matched).
      const byName = new Map(rs.chains.map((c) => [c.name, c]));
      const chained = rs.chains.flatMap((c) => c.rules).filter((r) => r.action.kind === 'logdrop');
      expect(chained.length).toBeGreaterThan(0);
      for (const r of chained) {
        if (r.action.kind !== 'logdrop') continue;
        expect(Object.keys(r.match).length).toBeGreaterThan(0);
        expect(byName.get(r.action.chain)?.rules.map((x) => [x.action, x.match])).toEqual([[{ kind: 'log', prefix: r.action.prefix }, {}], [{ kind: 'drop' }, {}]]);
      }
      // The replies rule comes first in each top chain: an established packet never meets a log rule.
      for (const name of [FORWARD_CHAIN, INPUT_CHAIN]) expect(rs.chains.find((c) => c.name === name)!.rules[0]!.match.ctstate).toEqual(['RELATED', 'ESTABLISHED']);
    }
  });

  it('renders as a rate-limited NFLOG rule the tracer accepts', () => {
    const rs = compiled()[0]!;
    const lines = renderIptablesRestore(rs).split('\n').filter((l) => l.includes('-j NFLOG'));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatch(/ -m hashlimit --hashlimit-upto \d+\/sec --hashlimit-burst \d+ --hashlimit-name PCTL-drops-\d+-\d+ .* -j NFLOG --nflog-prefix "PCTL [EI] [a-z]+[^"]*" --nflog-group \d+ --nflog-size \d+$/);
    const logRule = rs.chains.flatMap((c) => c.rules).find((r) => r.action.kind === 'log')!;
    expect(() => renderRule('PCTL-X', { ...logRule, action: { kind: 'log', prefix: 'bad "quote"' } })).toThrow(/log prefix "bad "quote"" is not printable ASCII without quotes/);
    expect(() => parseIptablesRestore(renderIptablesRestore(rs))).not.toThrow();
  });

  it('each denied flow of the node is logged as the semantics decides it (traced)', () => {
    const m = tiered();
    m.upsert(node('n2', '10.244.2.0/24', '192.168.50.12'));
    const rs = compile(m, 'n1', { podCidrs: ['10.244.1.0/24'] });
    const table = parseIptablesRestore(renderIptablesRestore(rs));
    const sets = parseIpsetRestore(renderIpsetRestore(rs.sets));
    const pods = [...m.allPods()].filter((p) => !p.hostNetwork && p.ips.length > 0);
    const kinds = new Set<string>();
    let denied = 0;
    for (const src of pods) {
      for (const dst of pods) {
        if (src === dst || (src.nodeName !== 'n1' && dst.nodeName !== 'n1')) continue;
        for (const [protocol, port] of [['tcp', 5432], ['tcp', 80], ['udp', 53]] as const) {
          const expected = allowed(m, { src: { kind: 'pod', pod: src }, dst: { kind: 'pod', pod: dst }, protocol: protocol === 'tcp' ? 'TCP' : 'UDP', port });
          const result = trace(table, sets, 'FORWARD', { src: src.ips[0]!, dst: dst.ips[0]!, protocol, sport: 40000, dport: port });
          if (result.verdict !== 'DROP') continue;
          denied++;
          expect(dropLogMismatch(expected, result), `${src.name} -> ${dst.name} ${port}/${protocol}`).toBeUndefined();
          const log = result.steps.filter((s) => s.matched).at(-2)!.rule;
          kinds.add(/--nflog-prefix "PCTL [EI] (\w+)/.exec(log)![1]!);
        }
      }
    }
    expect(denied).toBeGreaterThan(5);
    // The cluster has all three: NetworkPolicy default denies, an Admin Deny and a Baseline Deny.
    expect([...kinds].sort()).toEqual(['cnp', 'np']);
    // An unknown address of the pod CIDR, both ways.
    for (const [s, d, dir] of [['10.244.1.99', '10.244.2.10', 'E'], ['10.244.2.10', '10.244.1.99', 'I']] as const) {
      const r = trace(table, sets, 'FORWARD', { src: s, dst: d, protocol: 'tcp', sport: 40000, dport: 80 });
      expect(r.verdict).toBe('DROP');
      expect(r.steps.filter((x) => x.matched).at(-2)!.rule).toContain(`--nflog-prefix "PCTL ${dir} unknown"`);
    }
  });

  it('the incremental compiler logs the same drops', () => {
    const m = tiered();
    const ic = new IncrementalCompiler(m, 'n1', { podCidrs: ['10.244.1.0/24'] });
    expect(renderIptablesRestore(ic.ruleset())).toBe(renderIptablesRestore(compile(m, 'n1', { podCidrs: ['10.244.1.0/24'] })));
    ic.dispose();
  });
});

// Keep the builders' imports used for a cluster without CIDRs (no unknown-address drops to log).
it('without pod CIDRs only policy drops are logged', () => {
  const rs = compile(modelOf(ns('x'), pod('x', 'a', {}, { ip: '10.244.1.2', node: 'n1' }), policy('x', 'deny', sel(), { types: ['Ingress'], ingress: [] })), 'n1');
  const prefixes = rs.chains.flatMap((c) => c.rules).flatMap((r) => (r.action.kind === 'log' ? [r.action.prefix] : []));
  expect(prefixes).toEqual([dropLogPrefix({ kind: 'np', dir: 'Ingress', policies: ['x/deny'] })]);
});
