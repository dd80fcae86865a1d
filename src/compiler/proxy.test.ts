// The layout under each kube-proxy mode (layout.ts ServiceProxy, issue 13): iptables and
// nftables modes compile byte for byte what a compile without the option gives (Service traffic
// is DNATed before FORWARD there); IPVS adds the OUTPUT hook and PCTL-OUTPUT and lets Service
// VIPs and node ports pass PCTL-INPUT. The verdicts are the property tests' job
// (test/properties/ipvs.test.ts); this pins the shape.

import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { sampleCluster } from '../../test/support/clusters.ts';
import { modelOf } from '../../test/support/builders.ts';
import { Dataplane } from '../../test/support/dataplane.ts';
import { checkReferences, formatTrace, parseIpsetRestore, parseIptablesRestore } from '../../test/support/tracer.ts';
import type { Endpoint } from '../semantics/evaluate.ts';
import { renderIpsetRestore, renderIptablesRestore } from '../sync/render.ts';
import { compile } from './compile.ts';
import { IncrementalCompiler } from './incremental.ts';
import { INPUT_CHAIN, OUTPUT_CHAIN, PROGRAMMED_SET } from './layout.ts';
import type { Ruleset } from './ruleset.ts';

const text = (rs: Ruleset) => `# ipset restore\n${renderIpsetRestore(rs.sets)}# iptables-restore --noflush\n${renderIptablesRestore(rs)}`;
const IPVS = { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } as const;

describe('service proxy modes', () => {
  it('iptables and nftables modes change nothing: the golden payload, byte for byte', () => {
    const golden = readFileSync(new URL('../../test/fixtures/golden/sample-n1.restore', import.meta.url), 'utf8');
    for (const mode of ['iptables', 'nftables'] as const) {
      expect(text(compile(sampleCluster(), 'n1', { proxy: { mode, serviceCidrs: ['10.96.0.0/12'] } }))).toBe(golden);
    }
  });

  it("IPVS: an OUTPUT hook to PCTL-OUTPUT, which judges everything but the node's own traffic", () => {
    const rs = compile(sampleCluster(), 'n1', { proxy: IPVS });
    expect(rs.hooks.map((h) => `${h.chain}->${h.target}`)).toEqual(['FORWARD->PCTL-FORWARD', 'INPUT->PCTL-INPUT', 'OUTPUT->PCTL-OUTPUT']);
    const out = renderIptablesRestore(rs).split('\n').filter((l) => l.startsWith(`-A ${OUTPUT_CHAIN} `));
    expect(out[0]).toContain('--ctstate RELATED,ESTABLISHED');
    // The node's own traffic: from an address of this node (its routes' LOCAL), not "from no
    // local pod", which let IPVS-forwarded clients of other nodes and outside past every local
    // backend's ingress. As iptables-nft 1.8.9 prints it back (the sync layer's read-back).
    expect(out[1]).toMatch(/^-A PCTL-OUTPUT -m addrtype --src-type LOCAL -m comment --comment "[a-z2-7]{24} from an address of this node: [^"]*" -j RETURN$/);
    expect(out.some((l) => l.includes('PCTL-programmed src'))).toBe(false);
    // The unknown-destination drop: on to the chain that logs it (drop-log.ts) as an ingress denial and drops it.
    expect(out[2]).toMatch(/^-A PCTL-OUTPUT -d 10\.244\.1\.0\/24 -m set ! --match-set PCTL-programmed dst .*-g PCTL-UNKNOWN-DST$/);
    expect(out.slice(3).map((l) => l.split(' ').at(-1))).toEqual(['PCTL-EGRESS', 'PCTL-INGRESS']);
    expect(out).toHaveLength(5);
    const unknown = renderIptablesRestore(rs).split('\n').filter((l) => l.startsWith('-A PCTL-UNKNOWN-DST '));
    expect(unknown[0]).toMatch(/-j NFLOG --nflog-prefix "PCTL I unknown" /);
    expect(unknown[1]).toMatch(/-j DROP$/);
    expect(unknown).toHaveLength(2);
  });

  it('IPVS: PCTL-INPUT returns Service VIPs and node ports after the unknown-source drop, before egress', () => {
    const rs = compile(sampleCluster(), 'n1', { proxy: { ...IPVS, nodePorts: { from: 31000, to: 31999 } } });
    const input = renderIptablesRestore(rs).split('\n').filter((l) => l.startsWith(`-A ${INPUT_CHAIN} `));
    const targets = input.map((l) => {
      const w = l.split(' ');
      return w[Math.max(w.indexOf('-j'), w.indexOf('-g')) + 1];
    });
    expect(targets).toEqual(['RETURN', 'PCTL-UNKNOWN-SRC', 'RETURN', 'RETURN', 'RETURN', 'RETURN', 'PCTL-EGRESS']);
    expect(input[2]).toMatch(/^-A PCTL-INPUT -d 10\.96\.0\.0\/12 /);
    expect(input.slice(3, 6).map((l) => l.split(' ')[3])).toEqual(['tcp', 'udp', 'sctp']);
    for (const l of input.slice(3, 6)) expect(l).toContain('--dport 31000:31999');
  });

  it('IPVS: every chain and set it references is defined, and the incremental compiler agrees', () => {
    for (const n of ['n1', 'n2']) {
      const rs = compile(sampleCluster(), n, { proxy: IPVS });
      const base = parseIptablesRestore(`*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n`);
      expect(checkReferences(parseIptablesRestore(renderIptablesRestore(rs), { base, noflush: true }), parseIpsetRestore(renderIpsetRestore(rs.sets)))).toEqual([]);
      const ic = new IncrementalCompiler(sampleCluster(), n, { proxy: IPVS });
      expect(text(ic.ruleset())).toBe(text(rs));
      ic.dispose();
    }
  });

  it('IPVS without pod CIDRs: no PCTL-programmed (no rule matches it), PCTL-OUTPUT returns the node\'s own traffic and judges the rest', () => {
    const m = modelOf({ kind: 'Node', uid: 'node-n9', name: 'n9', podCIDRs: [], internalIPs: ['192.168.50.19'] });
    expect(compile(m, 'n9').sets.map((s) => s.name)).not.toContain(PROGRAMMED_SET);
    const rs = compile(m, 'n9', { proxy: IPVS });
    expect(rs.sets.map((s) => s.name)).not.toContain(PROGRAMMED_SET);
    const out = renderIptablesRestore(rs).split('\n').filter((l) => l.startsWith(`-A ${OUTPUT_CHAIN} `));
    expect(out.map((l) => l.split(' ').at(-1))).toEqual(['RETURN', 'RETURN', 'PCTL-EGRESS', 'PCTL-INGRESS']);
    expect(out[1]).toContain('-m addrtype --src-type LOCAL');
    const ic = new IncrementalCompiler(m, 'n9', { proxy: IPVS });
    expect(text(ic.ruleset())).toBe(text(rs));
    ic.dispose();
  });

  // The security review's case: under IPVS a connection to a node port of n1 from a pod of
  // another node or from outside crosses n1's INPUT (node port: no verdict), then OUTPUT with
  // the client's address, to a backend on n1. x/b is isolated for ingress by x/deny and
  // allows nothing: it must stay closed through the node port, to everyone but the node itself.
  describe('IPVS: a node port reached from elsewhere meets the local backend\'s ingress', () => {
    const model = sampleCluster();
    const b = model.findPod('x', 'b')!;
    const web = model.findPod('x', 'a')!;
    const client = (ip: string): Endpoint => ({ kind: 'ip', ip });
    const via = { kind: 'nodePort' as const, port: 30080, node: 'n1' };
    const plane = new Dataplane(model, ['n1'], undefined, { proxy: IPVS });
    const oldRule = new Dataplane(model, ['n1'], (t) => t.replace(/\n-A PCTL-OUTPUT -m addrtype --src-type LOCAL /, '\n-A PCTL-OUTPUT -m set ! --match-set PCTL-programmed src '), { proxy: IPVS });

    it.each(['8.8.8.8', '10.244.2.10', '192.168.50.12'])('from %s to a deny-all backend: dropped in OUTPUT as its ingress (logged), where the old rule let it through', (ip) => {
      const flow = { src: client(ip), dst: { kind: 'pod' as const, pod: b }, port: 5432, protocol: 'TCP' as const };
      const got = plane.traverseIpvs(flow, via);
      const last = got.traces.at(-1)!;
      expect(got.allowed, formatTrace(last.result)).toBe(false);
      expect(last.hook).toBe('OUTPUT');
      expect(last.result.steps.some((st) => st.matched && /--nflog-prefix "PCTL I np /.test(st.rule))).toBe(true);
      expect(oldRule.traverseIpvs(flow, via).allowed).toBe(true);
    });

    it("from outside to a backend whose ingress allows it: through; from the node's own address: returned unjudged", () => {
      // x/a allows http from 0.0.0.0/0 except 10.0.0.0/8.
      expect(plane.traverseIpvs({ src: client('8.8.8.8'), dst: { kind: 'pod', pod: web }, port: 80, protocol: 'TCP' }, via).allowed).toBe(true);
      const own = plane.traverseIpvs({ src: client('192.168.50.11'), dst: { kind: 'pod', pod: b }, port: 5432, protocol: 'TCP' }, via);
      expect(own.allowed).toBe(true);
      expect(own.traces.map((t) => t.hook)).toEqual(['OUTPUT', 'INPUT', 'OUTPUT']);
      expect(own.traces.at(-1)!.result.steps.filter((st) => st.matched).map((st) => st.chain)).toEqual(['OUTPUT', 'PCTL-OUTPUT']);
    });
  });
});
