// The mid-stream drops of revoke mode (layout.ts MIDSTREAM_CHAIN, CompileOptions.dropMidstream,
// set by `policyctl agent --revoke-established`): after the agent deletes a denied connection's
// conntrack entry, conntrack's loose TCP pickup would take the next packet of either end for a
// new connection, and the server's usually passes and re-creates the entry in reverse. In revoke
// mode a NEW TCP packet without SYN from or to the pod CIDRs is logged and dropped right after
// the replies rule, and so is a new UDP packet on the answer tuple of a flow the agent ended
// (layout.ts REVOKED_SET: a late answer would otherwise be tracked as the server's new flow);
// without the option the layout is byte for byte what it was.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { modelOf, node } from '../../test/support/builders.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { Dataplane } from '../../test/support/dataplane.ts';
import { checkReferences, formatTrace, parseIpsetRestore, parseIptablesRestore, trace, type Packet, type TraceResult } from '../../test/support/tracer.ts';
import { allowed, type Endpoint } from '../semantics/evaluate.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import { compile, type CompileOptions } from './compile.ts';
import { IncrementalCompiler } from './incremental.ts';
import { FORWARD_CHAIN, INPUT_CHAIN, MIDSTREAM_CHAIN, OUTPUT_CHAIN, REVOKED_SET, REVOKED_SPEC, REVOKED_TIMEOUT_S, topChains } from './layout.ts';
import type { Ruleset } from './ruleset.ts';

const text = (rs: Ruleset) => `# ipset restore\n${renderIpsetRestore(rs.sets)}# iptables-restore --noflush\n${renderIptablesRestore(rs)}`;
const lines = (rs: Ruleset, chain: string) => renderIptablesRestore(rs).split('\n').filter((l) => l.startsWith(`-A ${chain} `));
const IPVS = { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } as const;
const REVOKE: CompileOptions = { dropMidstream: true };
const CIDR = '10.244.1.0/24';
/** The rule the top chains get in revoke mode, as rendered (and as iptables-nft-save prints it). */
const MIDSTREAM_JUMP = (chain: string) =>
  new RegExp(`^-A ${chain} -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -m comment --comment "[a-z2-7]{24} TCP without SYN [^"]*" -j ${MIDSTREAM_CHAIN}$`);
/** The rule right after it: UDP on an answer tuple the agent holds back. */
const REVOKED_JUMP = (chain: string) =>
  new RegExp(`^-A ${chain} -p udp -m set --match-set ${REVOKED_SET} dst,dst,src -m comment --comment "[a-z2-7]{24} UDP on the answer tuple [^"]*" -j ${MIDSTREAM_CHAIN}$`);

describe('mid-stream drops: the layout', () => {
  it('without the option: the golden payload byte for byte, and the very same top chain objects', () => {
    const golden = readFileSync(new URL('../../test/fixtures/golden/sample-n1.restore', import.meta.url), 'utf8');
    expect(text(compile(sampleCluster(), 'n1', { dropMidstream: false }))).toBe(golden);
    expect(topChains([CIDR], { dropMidstream: false })).toBe(topChains([CIDR]));
    expect(text(compile(sampleCluster(), 'n1', { proxy: IPVS, dropMidstream: false }))).toBe(text(compile(sampleCluster(), 'n1', { proxy: IPVS })));
  });

  it('with it: two jumps right after the replies rule of PCTL-FORWARD and PCTL-INPUT, PCTL-OUTPUT with only those (the node\'s own packets), the empty set of answer tuples, and PCTL-MIDSTREAM logs and drops per pod CIDR side', () => {
    const plain = compile(sampleCluster(), 'n1');
    const rs = compile(sampleCluster(), 'n1', REVOKE);
    for (const chain of [FORWARD_CHAIN, INPUT_CHAIN]) {
      const got = lines(rs, chain);
      expect(got[0]).toContain('--ctstate RELATED,ESTABLISHED');
      expect(got[1]).toMatch(MIDSTREAM_JUMP(chain));
      expect(got[2]).toMatch(REVOKED_JUMP(chain));
      // Everything else is as without the option.
      expect(got.filter((_, i) => i !== 1 && i !== 2)).toEqual(lines(plain, chain));
    }
    const mid = lines(rs, MIDSTREAM_CHAIN);
    expect(mid.map((l) => l.replace(/ -m hashlimit .*?(?= -m comment)/, '').replace(/--comment "[^"]*"/, '--comment C'))).toEqual([
      // The bridge's address (the node's, first of the pod CIDR) before the pod CIDR as a source.
      `-A ${MIDSTREAM_CHAIN} -s 10.244.1.1/32 -d ${CIDR} -m comment --comment C -j NFLOG --nflog-prefix "PCTL I midstream" --nflog-group 1511 --nflog-size 128`,
      `-A ${MIDSTREAM_CHAIN} -s 10.244.1.1/32 -d ${CIDR} -m comment --comment C -j DROP`,
      `-A ${MIDSTREAM_CHAIN} -s 10.244.1.1/32 -m comment --comment C -j RETURN`,
      `-A ${MIDSTREAM_CHAIN} -s ${CIDR} -m comment --comment C -j NFLOG --nflog-prefix "PCTL E midstream" --nflog-group 1511 --nflog-size 128`,
      `-A ${MIDSTREAM_CHAIN} -s ${CIDR} -m comment --comment C -j DROP`,
      `-A ${MIDSTREAM_CHAIN} -d 10.244.1.1/32 -m comment --comment C -j RETURN`,
      `-A ${MIDSTREAM_CHAIN} -d ${CIDR} -m comment --comment C -j NFLOG --nflog-prefix "PCTL I midstream" --nflog-group 1511 --nflog-size 128`,
      `-A ${MIDSTREAM_CHAIN} -d ${CIDR} -m comment --comment C -j DROP`,
    ]);
    // The node's own packets (OUTPUT): replies pass, mid-stream pickups go to the same drops; nothing else is judged.
    const out = lines(rs, OUTPUT_CHAIN);
    expect(out).toHaveLength(3);
    expect(out[0]).toContain('--ctstate RELATED,ESTABLISHED');
    expect(out[1]).toMatch(MIDSTREAM_JUMP(OUTPUT_CHAIN));
    expect(out[2]).toMatch(REVOKED_JUMP(OUTPUT_CHAIN));
    expect(lines(plain, OUTPUT_CHAIN)).toEqual([]);
    // The set of answer tuples: created empty with its timeout, its members the agent's.
    const revoked = rs.sets.find((s) => s.name === REVOKED_SET)!;
    expect(revoked).toEqual({ ...REVOKED_SPEC, members: [], runtime: { timeout: REVOKED_TIMEOUT_S } });
    expect(renderIpsetRestore([revoked])).toBe(`create ${REVOKED_SET} hash:ip,port,ip family inet hashsize 1024 maxelem 1048576 timeout ${REVOKED_TIMEOUT_S}\n`);
    // The rest of the Ruleset is the same: sets, hooks (one more, OUTPUT's), every other chain.
    expect(rs.sets.filter((s) => s !== revoked)).toEqual(plain.sets);
    expect(rs.hooks.slice(0, plain.hooks.length)).toEqual(plain.hooks);
    expect(rs.hooks.slice(plain.hooks.length)).toEqual([{ table: 'filter', chain: 'OUTPUT', target: OUTPUT_CHAIN, comment: expect.stringMatching(/keep first$/) }]);
    const others = (r: Ruleset) => r.chains.filter((c) => ![FORWARD_CHAIN, INPUT_CHAIN, OUTPUT_CHAIN, MIDSTREAM_CHAIN].includes(c.name));
    expect(others(rs)).toEqual(others(plain));
    expect(rs.chains.map((c) => c.name).slice(0, 7)).toEqual([FORWARD_CHAIN, INPUT_CHAIN, OUTPUT_CHAIN, 'PCTL-UNKNOWN-SRC', 'PCTL-UNKNOWN-DST', MIDSTREAM_CHAIN, 'PCTL-EGRESS']);
    const base = parseIptablesRestore(`*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n`);
    expect(checkReferences(parseIptablesRestore(renderIptablesRestore(rs), { base, noflush: true }), parseIpsetRestore(renderIpsetRestore(rs.sets)))).toEqual([]);
  });

  it("under IPVS: PCTL-OUTPUT gets it too, after its replies rule and before the node's own traffic returns", () => {
    const plain = compile(sampleCluster(), 'n1', { proxy: IPVS });
    const rs = compile(sampleCluster(), 'n1', { ...REVOKE, proxy: IPVS });
    // In PCTL-OUTPUT before the node's own packets return (rule 2 without the option): a
    // hostNetwork server's mid-stream packet to a pod is dropped as in the other modes.
    expect(rs.hooks).toEqual(plain.hooks);
    for (const [chain, at] of [[FORWARD_CHAIN, 1], [INPUT_CHAIN, 1], [OUTPUT_CHAIN, 1]] as const) {
      const got = lines(rs, chain);
      expect(got[at]).toMatch(MIDSTREAM_JUMP(chain));
      expect(got[at + 1]).toMatch(REVOKED_JUMP(chain));
      expect(got.filter((_, i) => i !== at && i !== at + 1)).toEqual(lines(plain, chain));
    }
    expect(lines(plain, OUTPUT_CHAIN)[1]).toMatch(/-m addrtype --src-type LOCAL .*from an address of this node/);
    expect(lines(rs, MIDSTREAM_CHAIN)).toHaveLength(8);
  });

  it('without pod CIDRs there is nothing to drop: no rule, no chain', () => {
    const m = modelOf(node('n9', '', '192.168.50.19'));
    const rs = compile(m, 'n9', REVOKE);
    expect(text(rs)).toBe(text(compile(m, 'n9')));
    expect(rs.chains.map((c) => c.name)).not.toContain(MIDSTREAM_CHAIN);
  });

  it('the incremental compiler builds the same Ruleset', () => {
    for (const opts of [REVOKE, { ...REVOKE, proxy: IPVS }]) {
      for (const n of ['n1', 'n2']) {
        const ic = new IncrementalCompiler(sampleCluster(), n, opts);
        const got = ic.ruleset();
        expect(text(got)).toBe(text(compile(sampleCluster(), n, opts)));
        expect(got).toEqual(compile(sampleCluster(), n, opts));
        ic.dispose();
      }
    }
  });
});

describe('mid-stream drops: traced', () => {
  const model = sampleCluster();
  const revoke = new Dataplane(model, ['n1', 'n2'], undefined, REVOKE);
  const plain = new Dataplane(model, ['n1', 'n2']);
  /** The packet through n1's `hook` (FORWARD: a pod's traffic; OUTPUT: the node's own; INPUT: to the node). */
  const at = (hook: 'FORWARD' | 'OUTPUT' | 'INPUT') => (plane: Dataplane, p: Packet): TraceResult => {
    const { table, ipsets } = plane.nodes.get('n1')!;
    return trace(table, ipsets, hook, p);
  };
  const n1 = at('FORWARD');
  const out = at('OUTPUT');
  /** The prefix of the NFLOG rule that matched right before the drop that ended the trace. */
  const loggedAs = (r: TraceResult) => {
    const matched = r.steps.filter((s) => s.matched);
    return /--nflog-prefix "([^"]*)"/.exec(matched[matched.length - 2]?.rule ?? '')?.[1];
  };
  // x/a (10.244.1.10, n1) answers y/c (10.244.2.10, n2) mid-stream: its egress allows everything,
  // y/c is not local to n1, so judged by policy the packet passes and conntrack takes it up.
  const fromPod: Packet = { src: '10.244.1.10', dst: '10.244.2.10', protocol: 'tcp', sport: 80, dport: 40000, tcpFlags: ['PSH', 'ACK'] };
  // y/c's packet to x/a:80 mid-stream (x/a admits pods of namespaces labelled team=a; y has none).
  const toPod: Packet = { src: '10.244.2.10', dst: '10.244.1.10', protocol: 'tcp', sport: 40000, dport: 80, tcpFlags: ['ACK'] };

  it('a NEW TCP packet without SYN from a pod address is logged and dropped (egress); without the option policy let it pass', () => {
    const r = n1(revoke, fromPod);
    expect(r.verdict, formatTrace(r)).toBe('DROP');
    expect(r.finalRule).toMatch(new RegExp(`^-A ${MIDSTREAM_CHAIN} -s 10\\.244\\.1\\.0/24 .*-j DROP$`));
    expect(loggedAs(r)).toBe('PCTL E midstream');
    expect(n1(plain, fromPod).verdict).toBe('ACCEPT');
  });

  it('one to a pod address is logged and dropped as ingress, whatever the policy would say', () => {
    const r = n1(revoke, toPod);
    expect(r.verdict, formatTrace(r)).toBe('DROP');
    expect(loggedAs(r)).toBe('PCTL I midstream');
    // Even where the policy allows that direction (x/a admits x/b, another pod of n1).
    const allowedOne: Packet = { ...toPod, src: '10.244.1.11' };
    expect(n1(plain, allowedOne).verdict).toBe('ACCEPT');
    const r2 = n1(revoke, allowedOne);
    expect(r2.verdict, formatTrace(r2)).toBe('DROP');
    // Both ends in the pod CIDR: the first rule that matches names it, as egress.
    expect(loggedAs(r2)).toBe('PCTL E midstream');
  });

  it('a SYN is judged by policy as before: every flow of the sample cluster gets the same verdict as without the option, and the semantics\'', () => {
    const live = [...model.allPods()].filter((p) => p.ips.length > 0);
    const eps: Endpoint[] = [...live.map((pod): Endpoint => ({ kind: 'pod', pod })), { kind: 'ip', ip: '8.8.8.8' }];
    let denied = 0;
    for (const src of eps) {
      for (const dst of eps) {
        if (src === dst) continue;
        for (const [protocol, port] of [['TCP', 80], ['TCP', 8080], ['UDP', 53], ['TCP', 1500]] as const) {
          const flow = { src, dst, protocol, port };
          const got = revoke.traverse(flow);
          expect(got.allowed).toBe(plain.traverse(flow).allowed);
          expect(got.allowed).toBe(allowed(model, flow).allowed);
          if (!got.allowed) denied++;
          // A SYN never reaches PCTL-MIDSTREAM.
          for (const t of got.traces) expect(t.result.steps.some((s) => s.chain === MIDSTREAM_CHAIN)).toBe(false);
        }
      }
    }
    expect(denied).toBeGreaterThan(0);
  });

  it("the node's own mid-stream TCP to a local pod (a hostNetwork server answering a revoked connection) is dropped in OUTPUT; its SYNs and replies pass", () => {
    const fromNode: Packet = { src: '192.168.50.11', dst: '10.244.1.10', protocol: 'tcp', sport: 10250, dport: 40000, tcpFlags: ['PSH', 'ACK'] };
    const r = out(revoke, fromNode);
    expect(r.verdict, formatTrace(r)).toBe('DROP');
    expect(loggedAs(r)).toBe('PCTL I midstream');
    expect(out(plain, fromNode).verdict).toBe('ACCEPT');
    // A connection the node opens, and the packets of one conntrack tracks, are not touched.
    expect(out(revoke, { ...fromNode, tcpFlags: ['SYN'] }).verdict).toBe('ACCEPT');
    expect(out(revoke, { ...fromNode, ctstate: 'ESTABLISHED' }).verdict).toBe('ACCEPT');
    // Mid-stream to anything but the node's pod CIDRs: returned, as without the option.
    expect(out(revoke, { ...fromNode, dst: '10.244.2.10' }).verdict).toBe('ACCEPT');
  });

  it("the same from the bridge's address (the node's, though in the pod CIDR) is dropped as the pod's ingress, not as a pod's egress; elsewhere it is the node's own traffic", () => {
    const fromBridge: Packet = { src: '10.244.1.1', dst: '10.244.1.10', protocol: 'tcp', sport: 8080, dport: 40000, tcpFlags: ['PSH', 'ACK'] };
    const r = out(revoke, fromBridge);
    expect(r.verdict, formatTrace(r)).toBe('DROP');
    expect(loggedAs(r)).toBe('PCTL I midstream');
    expect(out(revoke, { ...fromBridge, tcpFlags: ['SYN'] }).verdict).toBe('ACCEPT');
    // To another node's pod or the outside: the node's own packet, returned (before, it was
    // dropped as a pod's egress); the other node's own mid-stream drop still judges the first.
    for (const dst of ['10.244.2.10', '8.8.8.8']) {
      const t = out(revoke, { ...fromBridge, dst });
      expect(t.verdict, formatTrace(t)).toBe('ACCEPT');
      expect(t.steps.some((s) => s.chain === MIDSTREAM_CHAIN && s.matched && s.rule.endsWith('-j RETURN'))).toBe(true);
    }
    // A pod's own address next to it is still a pod's egress.
    expect(loggedAs(out(revoke, { ...fromBridge, src: '10.244.1.11', dst: '8.8.8.8' }))).toBe('PCTL E midstream');
    // To the bridge's address: from a pod, that pod's egress (dropped); from no pod (another
    // node's address), the node's own traffic (returned and judged as before).
    const toBridge: Packet = { src: '10.244.1.10', dst: '10.244.1.1', protocol: 'tcp', sport: 40000, dport: 8080, tcpFlags: ['ACK'] };
    expect(loggedAs(at('INPUT')(revoke, toBridge))).toBe('PCTL E midstream');
    const fromAway = at('INPUT')(revoke, { ...toBridge, src: '192.168.50.12' });
    expect(fromAway.verdict, formatTrace(fromAway)).toBe('ACCEPT');
    expect(fromAway.steps.some((s) => s.chain === MIDSTREAM_CHAIN && s.matched && s.rule.includes('-d 10.244.1.1/32'))).toBe(true);
    // A pod forging the bridge's address (its packets cross FORWARD, the node's never do): let
    // go by the mid-stream chain, it is dropped right after by the unknown-address gate.
    const forged = n1(revoke, { ...fromBridge, dst: '8.8.8.8' });
    expect(forged.verdict, formatTrace(forged)).toBe('DROP');
    expect(loggedAs(forged)).toBe('PCTL E unknown');
  });

  it('packets of tracked connections pass by the replies rule; UDP and mid-stream TCP of no pod CIDR are judged as before', () => {
    const est = n1(revoke, { ...toPod, ctstate: 'ESTABLISHED' });
    expect(est.verdict).toBe('ACCEPT');
    expect(est.steps.filter((s) => s.matched)[1]?.rule).toContain('replies of allowed connections');
    const udp: Packet = { src: '10.244.1.10', dst: '10.244.2.10', protocol: 'udp', sport: 53, dport: 40000 };
    expect(n1(revoke, udp).verdict).toBe(n1(plain, udp).verdict);
    // Neither end in n1's pod CIDR (another node's pod to the outside crossing n1): PCTL-MIDSTREAM
    // returns it (a jump, not a goto) and PCTL-FORWARD goes on as without the option.
    const transit: Packet = { src: '10.244.2.12', dst: '8.8.8.8', protocol: 'tcp', sport: 40000, dport: 443, tcpFlags: ['ACK'] };
    const r = n1(revoke, transit);
    expect(r.verdict).toBe('ACCEPT');
    expect(r.steps.some((s) => s.chain === MIDSTREAM_CHAIN)).toBe(true);
    expect(r.steps.some((s) => s.chain === FORWARD_CHAIN && s.rule.includes('ingress of local pods'))).toBe(true);
  });
  describe('a UDP answer of a flow the agent ended (REVOKED_SET)', () => {
    // y/c (10.244.2.10, n2) sent to x/a (10.244.1.10, n1) UDP 53 from port 40000; the agent
    // ended the flow and held back its answer tuple. x/a's answer, late, is new to conntrack:
    // its egress allows everything and y/c is not local to n1, so policy alone would pass it.
    const answer: Packet = { src: '10.244.1.10', dst: '10.244.2.10', protocol: 'udp', sport: 53, dport: 40000 };
    const held = (plane: Dataplane) => {
      const { table, ipsets } = plane.nodes.get('n1')!;
      return { table, ipsets: parseIpsetRestore(`add ${REVOKED_SET} 10.244.2.10,udp:40000,10.244.1.10 timeout ${REVOKED_TIMEOUT_S}\n`, { base: ipsets }) };
    };

    it('is logged and dropped as mid-stream, in FORWARD and in OUTPUT (a hostNetwork server answering)', () => {
      const { table, ipsets } = held(revoke);
      const r = trace(table, ipsets, 'FORWARD', answer);
      expect(r.verdict, formatTrace(r)).toBe('DROP');
      expect(loggedAs(r)).toBe('PCTL E midstream');
      expect(trace(revoke.nodes.get('n1')!.table, revoke.nodes.get('n1')!.ipsets, 'FORWARD', answer).verdict).toBe('ACCEPT');
      const fromNode = parseIpsetRestore(`add ${REVOKED_SET} 10.244.1.10,udp:40000,192.168.50.11\n`, { base: revoke.nodes.get('n1')!.ipsets });
      const o = trace(table, fromNode, 'OUTPUT', { src: '192.168.50.11', dst: '10.244.1.10', protocol: 'udp', sport: 53, dport: 40000 });
      expect(o.verdict, formatTrace(o)).toBe('DROP');
      expect(loggedAs(o)).toBe('PCTL I midstream');
    });

    it('only to that socket of the client: another of its ports, another client, another server, TCP, and the answers of a tracked flow are judged as before', () => {
      const { table, ipsets } = held(revoke);
      // From any port of that server (ipset has no type with both ports).
      expect(loggedAs(trace(table, ipsets, 'FORWARD', { ...answer, sport: 54 }))).toBe('PCTL E midstream');
      for (const p of [{ ...answer, dport: 40001 }, { ...answer, dst: '10.244.2.11' }, { ...answer, src: '10.244.1.11' }, { ...answer, protocol: 'tcp' as const, tcpFlags: ['SYN' as const] }]) {
        const r = trace(table, ipsets, 'FORWARD', p);
        expect(r.verdict, `${JSON.stringify(p)}\n${formatTrace(r)}`).toBe(n1(plain, p).verdict);
        expect(r.steps.some((s) => s.chain === MIDSTREAM_CHAIN)).toBe(false);
      }
      expect(trace(table, ipsets, 'FORWARD', { ...answer, ctstate: 'ESTABLISHED' }).verdict).toBe('ACCEPT');
    });
  });
});
