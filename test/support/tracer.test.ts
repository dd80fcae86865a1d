// Hand-written tables for the packet tracer: restore text in, verdict out. None of these use the
// compiler, so they pin the tracer's netfilter semantics on their own; the last group feeds it the
// renderer's output to pin that the two agree on syntax.

import { describe, expect, it } from 'vitest';
import { renderIpsetRestore, renderIptablesRestore } from '../../src/sync/render.ts';
import type { Ruleset } from '../../src/compiler/ruleset.ts';
import {
  checkReferences,
  formatTrace,
  parseIpsetRestore,
  parseIptablesRestore,
  tokenizeRestoreLine,
  trace,
  type Hook,
  type IpsetState,
  type Packet,
  type Table,
} from './tracer.ts';

/** Wraps rule lines in a filter table block. */
function filter(...lines: string[]): string {
  return ['*filter', ...lines, 'COMMIT', ''].join('\n');
}

const NO_SETS: IpsetState = { sets: new Map() };

function tcp(src: string, dst: string, dport: number, extra: Partial<Packet> = {}): Packet {
  return { src, dst, protocol: 'tcp', dport, sport: 40000, ...extra };
}

function udp(src: string, dst: string, dport: number, extra: Partial<Packet> = {}): Packet {
  return { src, dst, protocol: 'udp', dport, sport: 40000, ...extra };
}

interface Case {
  readonly name: string;
  readonly packet: Packet;
  readonly verdict: 'ACCEPT' | 'DROP';
  /** Substring of the deciding rule; `null` when the policy decided. */
  readonly by?: string | null;
  /**
   * Substring of a rule that matched on the way. Allow is RETURN (docs/design.md, "What a node is programmed with"), so for an
   * allowed flow the policy decides and this names the rule that let it through.
   */
  readonly hit?: string;
  readonly hook?: Hook;
  /** The node's addresses (TraceOptions.local), for rules that test an address type. */
  readonly local?: readonly string[];
}

function runCases(table: Table, ipsets: IpsetState, cases: readonly Case[]): void {
  for (const c of cases) {
    const r = trace(table, ipsets, c.hook ?? 'FORWARD', c.packet, c.local ? { local: c.local } : {});
    const msg = `${c.name}\n${formatTrace(r)}`;
    expect(r.verdict, msg).toBe(c.verdict);
    if (c.by === null) expect(r.finalRule, msg).toBeUndefined();
    else if (c.by !== undefined) expect(r.finalRule, msg).toContain(c.by);
    if (c.hit !== undefined) expect(r.steps.some((s) => s.matched && s.rule.includes(c.hit!)), msg).toBe(true);
  }
}

describe('tokenizeRestoreLine', () => {
  it.each([
    ['-A X -j ACCEPT', ['-A', 'X', '-j', 'ACCEPT']],
    ['-A X  -m comment --comment "two words" -j DROP', ['-A', 'X', '-m', 'comment', '--comment', 'two words', '-j', 'DROP']],
    ['--comment ""', ['--comment', '']],
    ['--comment "say \\"hi\\""', ['--comment', 'say "hi"']],
    // A closing quote ends the argument, as in iptables' add_param_to_argv.
    ['"a"b', ['a', 'b']],
    ["--comment 'x y'", ['--comment', "'x", "y'"]],
  ])('%s', (line, tokens) => {
    expect(tokenizeRestoreLine(line)).toEqual(tokens);
  });

  it('refuses an unterminated quote', () => {
    expect(() => tokenizeRestoreLine('--comment "abc', 7)).toThrow(/line 7: unterminated quote/);
  });
});

describe('chain traversal', () => {
  it('jump and RETURN come back to the next rule of the caller', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD DROP [0:0]',
        ':A - [0:0]',
        '-A FORWARD -j A',
        '-A FORWARD -s 10.0.0.1 -j ACCEPT',
        '-A A -s 10.0.0.1 -j RETURN',
        '-A A -j DROP',
      ),
    );
    runCases(t, NO_SETS, [
      { name: 'returned, then accepted', packet: tcp('10.0.0.1', '10.0.0.9', 80), verdict: 'ACCEPT', by: '-A FORWARD -s 10.0.0.1 -j ACCEPT' },
      { name: 'dropped inside A', packet: tcp('10.0.0.2', '10.0.0.9', 80), verdict: 'DROP', by: '-A A -j DROP' },
    ]);
    const r = trace(t, NO_SETS, 'FORWARD', tcp('10.0.0.1', '10.0.0.9', 80));
    expect(r.steps.map((s) => `${s.chain}#${s.index}:${s.matched}:${s.depth}`)).toEqual([
      'FORWARD#1:true:0',
      'A#1:true:1',
      'FORWARD#2:true:0',
    ]);
  });

  it('falling off the end of a user chain returns to the caller', () => {
    const t = parseIptablesRestore(filter(':FORWARD DROP [0:0]', ':A - [0:0]', '-A FORWARD -j A', '-A FORWARD -j ACCEPT'));
    runCases(t, NO_SETS, [{ name: 'empty A', packet: tcp('1.1.1.1', '2.2.2.2', 1), verdict: 'ACCEPT', by: '-A FORWARD -j ACCEPT' }]);
  });

  it('RETURN inside a goto target returns to the caller of the chain that did the goto', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD DROP [0:0]',
        ':A - [0:0]',
        ':B - [0:0]',
        ':C - [0:0]',
        '-A FORWARD -j A',
        '-A FORWARD -j ACCEPT',
        '-A A -s 10.0.0.1 -g B',
        '-A A -s 10.0.0.2 -g C',
        '-A A -j DROP',
        '-A B -j RETURN',
        '-A B -j DROP',
      ),
    );
    runCases(t, NO_SETS, [
      // B returns past A (goto left no return point in A) straight to FORWARD rule 2.
      { name: 'RETURN in B', packet: tcp('10.0.0.1', '9.9.9.9', 1), verdict: 'ACCEPT', by: '-A FORWARD -j ACCEPT' },
      // Falling off the empty C does the same.
      { name: 'end of C', packet: tcp('10.0.0.2', '9.9.9.9', 1), verdict: 'ACCEPT', by: '-A FORWARD -j ACCEPT' },
      { name: 'no goto', packet: tcp('10.0.0.3', '9.9.9.9', 1), verdict: 'DROP', by: '-A A -j DROP' },
    ]);
    const r = trace(t, NO_SETS, 'FORWARD', tcp('10.0.0.1', '9.9.9.9', 1));
    expect(r.steps.some((s) => s.chain === 'A' && s.index === 3)).toBe(false);
    expect(r.steps.some((s) => s.chain === 'B' && s.index === 2)).toBe(false);
  });

  it('two-level goto dispatch: one pass, both sides, nothing after the rule that matched', () => {
    // The compiler's shape: FORWARD -> F, which jumps to EGRESS then INGRESS; EGRESS goes (-g)
    // to a bucket chain by the low 4 bits of the source, which goes (-g) to a policy chain.
    const t = parseIptablesRestore(
      filter(
        ':FORWARD ACCEPT [0:0]',
        ':INPUT ACCEPT [0:0]',
        ':F - [0:0]',
        ':IN - [0:0]',
        ':EGRESS - [0:0]',
        ':INGRESS - [0:0]',
        ':EB-5 - [0:0]',
        ':IB-6 - [0:0]',
        ':E-a - [0:0]',
        ':E-b - [0:0]',
        ':I-c - [0:0]',
        '-A FORWARD -j F',
        '-A INPUT -j IN',
        '-A F -j EGRESS',
        '-A F -j INGRESS',
        '-A IN -j EGRESS',
        '-A EGRESS -s 0.0.0.5/0.0.0.15 -g EB-5',
        '-A INGRESS -d 0.0.0.6/0.0.0.15 -g IB-6',
        '-A EB-5 -s 10.0.0.5 -g E-a',
        '-A EB-5 -s 10.0.0.21 -g E-b',
        '-A IB-6 -d 10.0.0.6 -g I-c',
        '-A E-a -p tcp -m tcp --dport 80 -j RETURN',
        '-A E-a -j DROP',
        '-A E-b -j DROP',
        '-A I-c -s 10.0.0.5 -j RETURN',
        '-A I-c -j DROP',
      ),
    );
    runCases(t, NO_SETS, [
      // E-a's RETURN leaves EB-5 and EGRESS (reached by goto) and lands in F rule 2: ingress runs.
      { name: 'a:80 -> c: both sides allow', packet: tcp('10.0.0.5', '10.0.0.6', 80), verdict: 'ACCEPT', by: null, hit: '-A I-c -s 10.0.0.5 -j RETURN' },
      { name: 'a:80 -> elsewhere: egress allows, no ingress chain', packet: tcp('10.0.0.5', '10.0.0.7', 80), verdict: 'ACCEPT', by: null },
      { name: 'a:81 -> c: egress denies', packet: tcp('10.0.0.5', '10.0.0.6', 81), verdict: 'DROP', by: '-A E-a -j DROP' },
      { name: 'b (same bucket) -> c', packet: tcp('10.0.0.21', '10.0.0.6', 80), verdict: 'DROP', by: '-A E-b -j DROP' },
      // An unisolated source in a populated bucket falls off EB-5 back to F: ingress still runs.
      { name: 'unisolated .37 (bucket 5) -> c', packet: tcp('10.0.0.37', '10.0.0.6', 80), verdict: 'DROP', by: '-A I-c -j DROP' },
      { name: 'unisolated .8 (empty bucket) -> c', packet: tcp('10.0.0.8', '10.0.0.6', 80), verdict: 'DROP', by: '-A I-c -j DROP' },
      { name: 'INPUT: a:80 to the node', packet: tcp('10.0.0.5', '192.168.0.1', 80), verdict: 'ACCEPT', by: null, hook: 'INPUT' },
      { name: 'INPUT: a:81 to the node', packet: tcp('10.0.0.5', '192.168.0.1', 81), verdict: 'DROP', by: '-A E-a -j DROP', hook: 'INPUT' },
    ]);
    // Exactly one pass: each side evaluated once, and no rule after the one that matched.
    const r = trace(t, NO_SETS, 'FORWARD', tcp('10.0.0.5', '10.0.0.6', 80));
    expect(r.steps.map((s) => `${s.chain}#${s.index}`)).toEqual(['FORWARD#1', 'F#1', 'EGRESS#1', 'EB-5#1', 'E-a#1', 'F#2', 'INGRESS#1', 'IB-6#1', 'I-c#1']);
    const fallOff = trace(t, NO_SETS, 'FORWARD', tcp('10.0.0.37', '10.0.0.9', 80));
    expect(fallOff.steps.map((s) => `${s.chain}#${s.index}`)).toEqual(['FORWARD#1', 'F#1', 'EGRESS#1', 'EB-5#1', 'EB-5#2', 'F#2', 'INGRESS#1']);
    expect(fallOff.verdict).toBe('ACCEPT');
  });

  it('a goto from the built-in chain ends in its policy', () => {
    const t = parseIptablesRestore(
      filter(':FORWARD DROP [0:0]', ':B - [0:0]', '-A FORWARD -g B', '-A FORWARD -j ACCEPT', '-A B -s 10.0.0.1 -j ACCEPT'),
    );
    runCases(t, NO_SETS, [
      { name: 'accepted in B', packet: tcp('10.0.0.1', '9.9.9.9', 1), verdict: 'ACCEPT', by: '-A B' },
      { name: 'end of B: policy, FORWARD rule 2 never runs', packet: tcp('10.0.0.2', '9.9.9.9', 1), verdict: 'DROP', by: null },
    ]);
  });

  it('built-in policy decides at the end of the chain and on RETURN in it', () => {
    const t = parseIptablesRestore(filter(':FORWARD DROP [0:0]', '-A FORWARD -s 10.0.0.1 -j RETURN', '-A FORWARD -s 10.0.0.1 -j ACCEPT'));
    runCases(t, NO_SETS, [
      { name: 'RETURN in FORWARD', packet: tcp('10.0.0.1', '9.9.9.9', 1), verdict: 'DROP', by: '-j RETURN' },
      { name: 'end of FORWARD', packet: tcp('10.0.0.2', '9.9.9.9', 1), verdict: 'DROP', by: null },
      { name: 'INPUT keeps its default ACCEPT', packet: tcp('10.0.0.2', '9.9.9.9', 1), verdict: 'ACCEPT', by: null, hook: 'INPUT' },
    ]);
  });

  it('REJECT counts as DROP; LOG, MARK and target-less rules continue; -m mark sees the new mark', () => {
    const t = parseIptablesRestore(
      filter(
        '-A FORWARD -s 10.0.0.1 -j REJECT --reject-with icmp-port-unreachable',
        '-A FORWARD -j LOG --log-prefix "pctl: "',
        '-A FORWARD -s 10.0.0.2',
        '-A FORWARD -s 10.0.0.2 -j MARK --set-xmark 0x100000/0x100000',
        '-A FORWARD -m mark --mark 0x100000/0x100000 -j DROP',
        '-A FORWARD -m mark ! --mark 0x0/0x100000 -j DROP',
      ),
    );
    runCases(t, NO_SETS, [
      { name: 'REJECT', packet: tcp('10.0.0.1', '9.9.9.9', 1), verdict: 'DROP', by: 'REJECT' },
      { name: 'marked then dropped', packet: tcp('10.0.0.2', '9.9.9.9', 1), verdict: 'DROP', by: '-m mark --mark 0x100000/0x100000' },
      { name: 'pre-marked packet', packet: tcp('10.0.0.3', '9.9.9.9', 1, { mark: 0x100000 }), verdict: 'DROP' },
      { name: 'unmarked', packet: tcp('10.0.0.3', '9.9.9.9', 1), verdict: 'ACCEPT', by: null },
    ]);
    expect(trace(t, NO_SETS, 'FORWARD', tcp('10.0.0.2', '9.9.9.9', 1)).mark).toBe(0x100000);
  });

  it('a jump loop is an error, not a hang', () => {
    const t = parseIptablesRestore(filter(':A - [0:0]', ':B - [0:0]', '-A FORWARD -j A', '-A A -j B', '-A B -j A'));
    expect(() => trace(t, NO_SETS, 'FORWARD', tcp('1.1.1.1', '2.2.2.2', 1))).toThrow(/loop/);
    const g = parseIptablesRestore(filter(':A - [0:0]', '-A FORWARD -j A', '-A A -g A'));
    expect(() => trace(g, NO_SETS, 'FORWARD', tcp('1.1.1.1', '2.2.2.2', 1))).toThrow(/a loop\?/);
  });
});

describe('matches', () => {
  it('negations of addresses, protocol, ports and interfaces', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD ACCEPT [0:0]',
        '-A FORWARD ! -s 10.0.0.0/8 -j DROP',
        '-A FORWARD ! -p tcp -d 10.9.0.0/16 -j DROP',
        '-A FORWARD -p tcp -m tcp ! --dport 80 -d 10.9.0.0/16 -j DROP',
        '-A FORWARD -i cni+ ! -o cni0 -j DROP',
      ),
    );
    const iface = { inIface: 'cni0', outIface: 'cni0' };
    runCases(t, NO_SETS, [
      { name: '! -s hit', packet: tcp('11.0.0.1', '10.1.0.1', 80, iface), verdict: 'DROP', by: '! -s 10.0.0.0/8' },
      { name: '! -s miss', packet: tcp('10.0.0.1', '10.1.0.1', 80, iface), verdict: 'ACCEPT' },
      { name: '! -p tcp with udp', packet: udp('10.0.0.1', '10.9.0.1', 80, iface), verdict: 'DROP', by: '! -p tcp' },
      { name: '! --dport 80 with 81', packet: tcp('10.0.0.1', '10.9.0.1', 81, iface), verdict: 'DROP', by: '! --dport 80' },
      { name: '! --dport 80 with 80', packet: tcp('10.0.0.1', '10.9.0.1', 80, iface), verdict: 'ACCEPT' },
      { name: '-i cni+ ! -o cni0', packet: tcp('10.0.0.1', '10.1.0.1', 80, { inIface: 'cni1', outIface: 'eth0' }), verdict: 'DROP' },
      { name: 'interface rule not hit', packet: tcp('10.0.0.1', '10.1.0.1', 80, { inIface: 'eth0', outIface: 'eth0' }), verdict: 'ACCEPT' },
    ]);
  });

  it('a rule testing an interface refuses a packet that does not name one', () => {
    const t = parseIptablesRestore(filter('-A FORWARD -i cni0 -j DROP'));
    expect(() => trace(t, NO_SETS, 'FORWARD', tcp('1.1.1.1', '2.2.2.2', 1))).toThrow(/no inIface/);
  });

  it('-m addrtype: LOCAL is an address of the node the trace is told of (or lo\'s 127.0.0.0/8), either side, negated or not', () => {
    const t = parseIptablesRestore(
      filter(
        '-A OUTPUT -m addrtype --src-type LOCAL -m comment --comment "own" -j RETURN',
        '-A OUTPUT -m addrtype ! --src-type LOCAL --dst-type local -m comment --comment "in through the node" -j DROP',
        '-A OUTPUT -d 10.0.0.0/8 -j DROP',
      ),
    );
    const local = ['192.168.50.11', '10.244.1.1', '10.96.0.0/12'];
    runCases(t, NO_SETS, [
      { name: 'from the node', hook: 'OUTPUT', local, packet: tcp('192.168.50.11', '10.1.0.1', 80), verdict: 'ACCEPT', by: 'own' },
      { name: 'from its bridge address', hook: 'OUTPUT', local, packet: tcp('10.244.1.1', '10.1.0.1', 80), verdict: 'ACCEPT', by: 'own' },
      { name: 'from loopback', hook: 'OUTPUT', local, packet: tcp('127.0.0.1', '10.1.0.1', 80), verdict: 'ACCEPT', by: 'own' },
      { name: 'from a net given', hook: 'OUTPUT', local, packet: tcp('10.96.0.10', '10.1.0.1', 80), verdict: 'ACCEPT', by: 'own' },
      { name: 'from elsewhere to the node: both sides hold', hook: 'OUTPUT', local, packet: tcp('10.244.2.7', '192.168.50.11', 80), verdict: 'DROP', by: 'in through the node' },
      { name: 'from elsewhere to elsewhere: the destination side fails', hook: 'OUTPUT', local, packet: tcp('10.244.2.7', '10.1.0.1', 80), verdict: 'DROP', by: '-d 10.0.0.0/8' },
      { name: 'a pod address of the node is not the node\'s', hook: 'OUTPUT', local, packet: tcp('10.244.1.10', '8.8.8.8', 80), verdict: 'ACCEPT', by: null },
    ]);
  });

  it('-m addrtype: refused without the node\'s addresses (never guessed), and what it does not model or iptables refuses', () => {
    const t = parseIptablesRestore(filter('-A OUTPUT -m addrtype --src-type LOCAL -j RETURN'));
    expect(() => trace(t, NO_SETS, 'OUTPUT', tcp('1.1.1.1', '2.2.2.2', 1))).toThrow(/OUTPUT rule 1 .*tests --src-type but the trace has no local addresses/);
    expect(trace(t, NO_SETS, 'OUTPUT', tcp('1.1.1.1', '2.2.2.2', 1), { local: [] }).verdict).toBe('ACCEPT');
    expect(() => parseIptablesRestore(filter('-A OUTPUT -m addrtype -j RETURN'))).toThrow(/you must specify --src-type or --dst-type/);
    expect(() => parseIptablesRestore(filter('-A OUTPUT -m addrtype --src-type UNICAST -j RETURN'))).toThrow(/address type UNICAST is not modelled/);
    expect(() => parseIptablesRestore(filter('-A OUTPUT -m addrtype --src-type LOCAL,BROADCAST -j RETURN'))).toThrow(/address type BROADCAST is not modelled/);
    expect(() => parseIptablesRestore(filter('-A OUTPUT -m addrtype --src-type HOME -j RETURN'))).toThrow(/unknown address type "HOME"/);
    expect(() => parseIptablesRestore(filter('-A OUTPUT -m addrtype --dst-type LOCAL --limit-iface-in -j RETURN'))).toThrow(/unknown option "--limit-iface-in"/);
    expect(() => trace(t, NO_SETS, 'OUTPUT', tcp('1.1.1.1', '2.2.2.2', 1), { local: ['node'] })).toThrow(/local address "node"/);
  });

  it('host bits in -s are masked as iptables does', () => {
    const t = parseIptablesRestore(filter(':FORWARD DROP [0:0]', '-A FORWARD -s 10.1.2.3/16 -j ACCEPT'));
    runCases(t, NO_SETS, [
      { name: 'inside 10.1/16', packet: tcp('10.1.200.1', '9.9.9.9', 1), verdict: 'ACCEPT' },
      { name: 'outside', packet: tcp('10.2.0.1', '9.9.9.9', 1), verdict: 'DROP' },
    ]);
  });

  it('-s / -d with a dotted mask, contiguous or not; host bits are masked', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD ACCEPT [0:0]',
        // the low 4 bits of the source are 5 (iptables-nft: ip saddr & 0.0.0.15 == 0.0.0.5)
        '-A FORWARD -s 0.0.0.5/0.0.0.15 -j DROP',
        // host bits outside the mask are dropped: 10.0.0.3/0.0.0.15 is 0.0.0.3/0.0.0.15
        '-A FORWARD -d 10.0.0.3/0.0.0.15 -j DROP',
        // a contiguous dotted mask is a prefix
        '-A FORWARD -s 172.16.9.9/255.255.0.0 -j DROP',
        '-A FORWARD ! -d 0.0.0.0/0.0.0.1 -p udp -j DROP',
      ),
    );
    runCases(t, NO_SETS, [
      { name: 'src .5', packet: tcp('10.244.1.5', '9.9.9.8', 1), verdict: 'DROP', by: '-s 0.0.0.5/0.0.0.15' },
      { name: 'src .21 (21 & 15 = 5)', packet: tcp('10.244.1.21', '9.9.9.8', 1), verdict: 'DROP', by: '-s 0.0.0.5/0.0.0.15' },
      { name: 'src .6', packet: tcp('10.244.1.6', '9.9.9.8', 1), verdict: 'ACCEPT', by: null },
      { name: 'src .4', packet: tcp('10.244.1.4', '9.9.9.8', 1), verdict: 'ACCEPT', by: null },
      { name: 'dst .19 (19 & 15 = 3)', packet: tcp('1.1.1.1', '10.244.1.19', 1), verdict: 'DROP', by: '-d 10.0.0.3/0.0.0.15' },
      { name: 'dst .3 elsewhere', packet: tcp('1.1.1.1', '192.168.0.3', 1), verdict: 'DROP', by: '-d 10.0.0.3/0.0.0.15' },
      { name: 'dst .2', packet: tcp('1.1.1.1', '10.244.1.2', 1), verdict: 'ACCEPT', by: null },
      { name: '255.255.0.0 = /16', packet: tcp('172.16.200.1', '9.9.9.8', 1), verdict: 'DROP', by: '255.255.0.0' },
      { name: 'outside 172.16/16', packet: tcp('172.17.0.1', '9.9.9.8', 1), verdict: 'ACCEPT', by: null },
      { name: 'negated mask: odd dst', packet: udp('1.1.1.1', '9.9.9.9', 1), verdict: 'DROP', by: '! -d 0.0.0.0/0.0.0.1' },
      { name: 'negated mask: even dst', packet: udp('1.1.1.1', '9.9.9.8', 1), verdict: 'ACCEPT', by: null },
    ]);
  });

  it.each([
    ['a mask with three parts', '-A FORWARD -s 0.0.0.5/0.0.15 -j DROP'],
    ['a mask part over 255', '-A FORWARD -s 0.0.0.5/0.0.0.256 -j DROP'],
    ['a hex prefix (libxtables reads 0xf as /15; never rendered, so refused)', '-A FORWARD -s 0.0.0.5/0xf -j DROP'],
    ['a prefix over 32', '-A FORWARD -d 0.0.0.5/33 -j DROP'],
    ['an empty mask', '-A FORWARD -d 0.0.0.5/ -j DROP'],
  ])('refuses %s', (_name, line) => {
    expect(() => parseIptablesRestore(filter(line))).toThrow(/line 2: -[sd]: unsupported address/);
  });

  it('multiport ports and ranges', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD DROP [0:0]',
        '-A FORWARD -p tcp -m multiport --dports 80,8000:8080,443 -j ACCEPT',
        '-A FORWARD -p udp -m multiport ! --dports 53,5000:5010 -j ACCEPT',
      ),
    );
    const d = '10.0.0.2';
    runCases(t, NO_SETS, [
      ...[80, 443, 8000, 8040, 8080].map((p) => ({ name: `tcp ${p}`, packet: tcp('10.0.0.1', d, p), verdict: 'ACCEPT' as const })),
      ...[79, 81, 442, 7999, 8081].map((p) => ({ name: `tcp ${p}`, packet: tcp('10.0.0.1', d, p), verdict: 'DROP' as const })),
      { name: 'udp 53 negated', packet: udp('10.0.0.1', d, 53), verdict: 'DROP' },
      { name: 'udp 5010 negated', packet: udp('10.0.0.1', d, 5010), verdict: 'DROP' },
      { name: 'udp 5011', packet: udp('10.0.0.1', d, 5011), verdict: 'ACCEPT' },
      { name: 'sctp 80', packet: { src: '10.0.0.1', dst: d, protocol: 'sctp', dport: 80 }, verdict: 'DROP' },
    ]);
  });

  it('single-port and range --dport, implicit protocol match', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD DROP [0:0]',
        '-A FORWARD -p sctp -m sctp --dport 9000:9002 -j ACCEPT',
        '-A FORWARD -p udp --dport 53 -j ACCEPT',
      ),
    );
    runCases(t, NO_SETS, [
      { name: 'sctp 9001', packet: { src: '1.1.1.1', dst: '2.2.2.2', protocol: 'sctp', dport: 9001 }, verdict: 'ACCEPT' },
      { name: 'sctp 9003', packet: { src: '1.1.1.1', dst: '2.2.2.2', protocol: 'sctp', dport: 9003 }, verdict: 'DROP' },
      { name: 'udp 53 via implicit -m udp', packet: udp('1.1.1.1', '2.2.2.2', 53), verdict: 'ACCEPT' },
      { name: 'tcp 53', packet: tcp('1.1.1.1', '2.2.2.2', 53), verdict: 'DROP' },
    ]);
  });

  it('conntrack state', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD DROP [0:0]',
        '-A FORWARD -m conntrack --ctstate INVALID -j DROP',
        '-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        '-A FORWARD -m conntrack ! --ctstate NEW -j DROP',
        '-A FORWARD -d 10.0.0.2 -j ACCEPT',
      ),
    );
    runCases(t, NO_SETS, [
      { name: 'NEW (default) to allowed dst', packet: tcp('1.1.1.1', '10.0.0.2', 1), verdict: 'ACCEPT', by: '-d 10.0.0.2' },
      { name: 'NEW elsewhere', packet: tcp('1.1.1.1', '10.0.0.3', 1), verdict: 'DROP', by: null },
      { name: 'ESTABLISHED', packet: tcp('1.1.1.1', '10.0.0.3', 1, { ctstate: 'ESTABLISHED' }), verdict: 'ACCEPT', by: 'RELATED,ESTABLISHED' },
      { name: 'RELATED', packet: tcp('1.1.1.1', '10.0.0.3', 1, { ctstate: 'RELATED' }), verdict: 'ACCEPT' },
      { name: 'INVALID', packet: tcp('1.1.1.1', '10.0.0.2', 1, { ctstate: 'INVALID' }), verdict: 'DROP', by: '--ctstate INVALID' },
    ]);
  });
});

describe('TCP flags', () => {
  it('--syn, ! --syn and --tcp-flags as xt_tcp tests them; a packet is a SYN when NEW and an ACK otherwise by default', () => {
    const t = parseIptablesRestore(
      filter(
        ':FORWARD ACCEPT [0:0]',
        '-A FORWARD -d 10.0.0.1 -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP',
        '-A FORWARD -d 10.0.0.2 -p tcp --syn -j DROP',
        '-A FORWARD -d 10.0.0.3 -p tcp -m tcp --dport 80 --tcp-flags all NONE -j DROP',
        '-A FORWARD -d 10.0.0.4 -p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK -j DROP',
      ),
    );
    runCases(t, NO_SETS, [
      { name: 'a SYN (NEW by default) is not mid-stream', packet: tcp('1.1.1.1', '10.0.0.1', 80), verdict: 'ACCEPT', by: null },
      { name: 'a NEW ACK is mid-stream', packet: tcp('1.1.1.1', '10.0.0.1', 80, { tcpFlags: ['ACK'] }), verdict: 'DROP', by: '! --tcp-flags' },
      { name: 'a NEW PSH,ACK is mid-stream', packet: tcp('1.1.1.1', '10.0.0.1', 80, { tcpFlags: ['PSH', 'ACK'] }), verdict: 'DROP' },
      { name: 'a SYN with PSH is still a SYN under the mask (PSH is not in it)', packet: tcp('1.1.1.1', '10.0.0.1', 80, { tcpFlags: ['SYN', 'PSH'] }), verdict: 'ACCEPT', by: null },
      { name: 'an ESTABLISHED packet (an ACK by default) is not NEW', packet: tcp('1.1.1.1', '10.0.0.1', 80, { ctstate: 'ESTABLISHED' }), verdict: 'ACCEPT', by: null },
      { name: '--syn: a SYN', packet: tcp('1.1.1.1', '10.0.0.2', 80), verdict: 'DROP', by: '--syn' },
      { name: '--syn: a SYN,ACK is not', packet: tcp('1.1.1.1', '10.0.0.2', 80, { tcpFlags: ['SYN', 'ACK'] }), verdict: 'ACCEPT', by: null },
      { name: '--syn never matches UDP (-p tcp)', packet: udp('1.1.1.1', '10.0.0.2', 80), verdict: 'ACCEPT', by: null },
      { name: 'ALL NONE: no flag at all, with the port', packet: tcp('1.1.1.1', '10.0.0.3', 80, { tcpFlags: [] }), verdict: 'DROP' },
      { name: 'ALL NONE: a SYN is not', packet: tcp('1.1.1.1', '10.0.0.3', 80), verdict: 'ACCEPT', by: null },
      { name: 'SYN,ACK SYN,ACK', packet: tcp('1.1.1.1', '10.0.0.4', 80, { tcpFlags: ['SYN', 'ACK'] }), verdict: 'DROP' },
    ]);
  });

  it('refuses what iptables refuses: --syn with --tcp-flags, an unknown flag, flags on -m udp', () => {
    expect(() => parseIptablesRestore(filter('-A FORWARD -p tcp -m tcp --syn --tcp-flags SYN SYN -j DROP'))).toThrow(/Only one of/);
    expect(() => parseIptablesRestore(filter('-A FORWARD -p tcp -m tcp --tcp-flags SYN,ECHO SYN -j DROP'))).toThrow(/unknown TCP flag "ECHO"/);
    expect(() => parseIptablesRestore(filter('-A FORWARD -p udp -m udp --syn -j DROP'))).toThrow(/unknown option "--syn"/);
    expect(() => parseIptablesRestore(filter('-A FORWARD -p tcp -m tcp --tcp-flags SYN'))).toThrow(/needs 2 argument/);
  });
});

/** One rule of chain PCTL-T with this match, as rendered, up to its comment. */
const renderedMatch = (match: Ruleset['chains'][number]['rules'][number]['match'], action: 'drop' | 'return' = 'drop') =>
  renderIptablesRestore({ chains: [{ name: 'PCTL-T', rules: [{ match, action: { kind: action }, comment: 'c' }] }], hooks: [] })
    .split('\n')
    .find((l) => l.startsWith('-A '))!
    .replace(/ -m comment .*/, '');

describe('renderer: the SYN condition', () => {
  const line = (match: Ruleset['chains'][number]['rules'][number]['match']) => renderedMatch(match);

  it('as iptables-nft-save prints it back: one -m tcp with a port, the flags after it', () => {
    expect(line({ protocol: 'tcp', syn: false, ctstate: ['NEW'] })).toBe('-A PCTL-T -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW');
    expect(line({ protocol: 'tcp', dports: [{ from: 80, to: 80 }], syn: true })).toBe('-A PCTL-T -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN');
    expect(line({ protocol: 'tcp', dports: [{ from: 80, to: 80 }, { from: 443, to: 443 }], syn: false })).toBe('-A PCTL-T -p tcp -m multiport --dports 80,443 -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN');
    expect(() => line({ protocol: 'udp', syn: false })).toThrow(/TCP flags without "protocol: tcp"/);
    expect(() => line({ syn: true })).toThrow(/TCP flags without "protocol: tcp"/);
  });

  it('traced as the kernel tests it', () => {
    const rs: Ruleset = {
      node: 'n',
      sets: [],
      chains: [
        {
          name: 'PCTL-T',
          rules: [
            { match: { protocol: 'tcp', dports: [{ from: 80, to: 80 }], syn: true }, action: { kind: 'drop' }, comment: 'first packets to 80' },
            { match: { protocol: 'tcp', syn: false, ctstate: ['NEW'] }, action: { kind: 'drop' }, comment: 'mid-stream' },
          ],
        },
      ],
      hooks: [{ table: 'filter', chain: 'FORWARD', target: 'PCTL-T', comment: 'test' }],
    };
    const t = parseIptablesRestore(renderIptablesRestore(rs));
    runCases(t, NO_SETS, [
      { name: 'a SYN to 80', packet: tcp('1.1.1.1', '2.2.2.2', 80), verdict: 'DROP', by: 'first packets to 80' },
      { name: 'a SYN to 81', packet: tcp('1.1.1.1', '2.2.2.2', 81), verdict: 'ACCEPT', by: null },
      { name: 'a NEW ACK to 81', packet: tcp('1.1.1.1', '2.2.2.2', 81, { tcpFlags: ['ACK'] }), verdict: 'DROP', by: 'mid-stream' },
      { name: 'an ESTABLISHED ACK', packet: tcp('1.1.1.1', '2.2.2.2', 81, { ctstate: 'ESTABLISHED' }), verdict: 'ACCEPT', by: null },
    ]);
  });
});

describe('renderer: the address type', () => {
  const line = (match: Ruleset['chains'][number]['rules'][number]['match']) => renderedMatch(match, 'return');

  it('as iptables-nft-save 1.8.9 prints it back: one -m addrtype, `!` before the option, the source first, before set lookups', () => {
    expect(line({ addrType: { src: { type: 'LOCAL' } } })).toBe('-A PCTL-T -m addrtype --src-type LOCAL');
    expect(line({ addrType: { src: { type: 'LOCAL', negate: true }, dst: { type: 'LOCAL' } } })).toBe('-A PCTL-T -m addrtype ! --src-type LOCAL --dst-type LOCAL');
    expect(line({ srcNet: '10.0.0.0/8', addrType: { dst: { type: 'LOCAL' } }, sets: [{ set: 'PCTL-s', dirs: 'src' }] })).toBe('-A PCTL-T -s 10.0.0.0/8 -m addrtype --dst-type LOCAL -m set --match-set PCTL-s src');
    expect(line({ addrType: {} })).toBe('-A PCTL-T');
  });

  it('traced as the kernel tests it', () => {
    const rs: Ruleset = {
      node: 'n',
      sets: [],
      chains: [{ name: 'PCTL-T', rules: [{ match: { addrType: { src: { type: 'LOCAL' } } }, action: { kind: 'return' }, comment: 'own' }, { match: {}, action: { kind: 'drop' }, comment: 'rest' }] }],
      hooks: [{ table: 'filter', chain: 'OUTPUT', target: 'PCTL-T', comment: 'test' }],
    };
    const t = parseIptablesRestore(renderIptablesRestore(rs));
    runCases(t, NO_SETS, [
      { name: 'the node\'s own', hook: 'OUTPUT', local: ['192.168.50.11'], packet: tcp('192.168.50.11', '10.244.1.10', 80), verdict: 'ACCEPT', by: null },
      { name: 'a client IPVS forwards', hook: 'OUTPUT', local: ['192.168.50.11'], packet: tcp('8.8.8.8', '10.244.1.10', 80), verdict: 'DROP', by: 'rest' },
    ]);
  });
});

describe('ipsets', () => {
  const rules = (set: string, dirs: string) =>
    parseIptablesRestore(filter(':FORWARD DROP [0:0]', `-A FORWARD -m set --match-set ${set} ${dirs} -j ACCEPT`));

  it('hash:net: the most specific entry decides and nomatch excludes', () => {
    const sets = parseIpsetRestore(
      [
        'create N hash:net family inet hashsize 1024 maxelem 65536',
        'add N 10.0.0.0/8',
        'add N 10.1.0.0/16 nomatch',
        'add N 10.1.2.0/24',
        'add N 192.168.1.7',
      ].join('\n'),
    );
    runCases(rules('N', 'src'), sets, [
      { name: '10.1.2.5 in the /24 inside the nomatch /16', packet: tcp('10.1.2.5', '1.1.1.1', 1), verdict: 'ACCEPT' },
      { name: '10.1.3.5 in the nomatch /16', packet: tcp('10.1.3.5', '1.1.1.1', 1), verdict: 'DROP' },
      { name: '10.2.0.1 in the /8 only', packet: tcp('10.2.0.1', '1.1.1.1', 1), verdict: 'ACCEPT' },
      { name: '11.0.0.1 outside', packet: tcp('11.0.0.1', '1.1.1.1', 1), verdict: 'DROP' },
      { name: 'plain IP is a /32', packet: tcp('192.168.1.7', '1.1.1.1', 1), verdict: 'ACCEPT' },
      { name: 'next to the /32', packet: tcp('192.168.1.8', '1.1.1.1', 1), verdict: 'DROP' },
    ]);
  });

  it('hash:net: 0.0.0.0/1 + 128.0.0.0/1 covers everything, a /0 is refused', () => {
    const sets = parseIpsetRestore('create ALL hash:net\nadd ALL 0.0.0.0/1\nadd ALL 128.0.0.0/1\n');
    runCases(
      rules('ALL', 'dst'),
      sets,
      ['0.0.0.0', '1.2.3.4', '127.255.255.255', '128.0.0.0', '255.255.255.255'].map((d) => ({
        name: d,
        packet: tcp('10.0.0.1', d, 1),
        verdict: 'ACCEPT' as const,
      })),
    );
    expect(() => parseIpsetRestore('create Z hash:net\nadd Z 0.0.0.0/0\n')).toThrow(/line 2: .*\/0/);
  });

  it('hash:ip,port compares ip, protocol and port; a bare port is tcp', () => {
    const sets = parseIpsetRestore(
      ['create P hash:ip,port family inet', 'add P 10.0.0.1,tcp:80', 'add P 10.0.0.1,udp:53', 'add P 10.0.0.2,8080', 'add P 10.0.0.3,sctp:9000'].join('\n'),
    );
    runCases(rules('P', 'dst,dst'), sets, [
      { name: 'tcp 80', packet: tcp('1.1.1.1', '10.0.0.1', 80), verdict: 'ACCEPT' },
      { name: 'udp 80', packet: udp('1.1.1.1', '10.0.0.1', 80), verdict: 'DROP' },
      { name: 'udp 53', packet: udp('1.1.1.1', '10.0.0.1', 53), verdict: 'ACCEPT' },
      { name: 'tcp 53', packet: tcp('1.1.1.1', '10.0.0.1', 53), verdict: 'DROP' },
      { name: 'bare 8080 is tcp', packet: tcp('1.1.1.1', '10.0.0.2', 8080), verdict: 'ACCEPT' },
      { name: 'bare 8080 is not udp', packet: udp('1.1.1.1', '10.0.0.2', 8080), verdict: 'DROP' },
      { name: 'sctp 9000', packet: { src: '1.1.1.1', dst: '10.0.0.3', protocol: 'sctp', dport: 9000 }, verdict: 'ACCEPT' },
      { name: 'icmp never', packet: { src: '1.1.1.1', dst: '10.0.0.1', protocol: 'icmp' }, verdict: 'DROP' },
      { name: 'other ip', packet: tcp('1.1.1.1', '10.0.0.9', 80), verdict: 'DROP' },
    ]);
    // src,dst: source address with destination port.
    runCases(rules('P', 'src,dst'), sets, [
      { name: 'src ip + dport', packet: tcp('10.0.0.1', '9.9.9.9', 80), verdict: 'ACCEPT' },
      { name: 'dst ip does not count', packet: tcp('9.9.9.9', '10.0.0.1', 80), verdict: 'DROP' },
    ]);
    // The kernel silently never matches when a rule gives fewer directions than the set has.
    runCases(rules('P', 'dst'), sets, [{ name: 'one direction', packet: tcp('1.1.1.1', '10.0.0.1', 80), verdict: 'DROP' }]);
    expect(checkReferences(rules('P', 'dst'), sets).join('\n')).toMatch(/needs 2 directions/);
  });

  it('hash:net,net pairs with nomatch, most specific first dimension first', () => {
    const sets = parseIpsetRestore(
      ['create S hash:net,net', 'add S 10.0.0.1,10.0.0.1', 'add S 10.0.0.0/8,10.0.0.0/8', 'add S 10.1.0.0/16,10.0.0.0/8 nomatch'].join('\n'),
    );
    runCases(rules('S', 'src,dst'), sets, [
      { name: 'self pair', packet: tcp('10.0.0.1', '10.0.0.1', 1), verdict: 'ACCEPT' },
      { name: '/8 pair', packet: tcp('10.2.0.1', '10.3.0.1', 1), verdict: 'ACCEPT' },
      { name: 'nomatch pair', packet: tcp('10.1.0.1', '10.3.0.1', 1), verdict: 'DROP' },
      { name: 'outside', packet: tcp('11.0.0.1', '10.3.0.1', 1), verdict: 'DROP' },
    ]);
  });

  it('negated set match', () => {
    const sets = parseIpsetRestore('create I hash:ip\nadd I 10.0.0.1\n');
    const t = parseIptablesRestore(filter('-A FORWARD -m set ! --match-set I src -j DROP'));
    runCases(t, sets, [
      { name: 'member', packet: tcp('10.0.0.1', '1.1.1.1', 1), verdict: 'ACCEPT' },
      { name: 'non-member', packet: tcp('10.0.0.2', '1.1.1.1', 1), verdict: 'DROP' },
    ]);
  });

  it('restore commands: -exist, duplicates, del, flush, destroy, swap', () => {
    expect(() => parseIpsetRestore('create A hash:ip\nadd A 10.0.0.1\nadd A 10.0.0.1\n')).toThrow(/line 3: .*already/);
    const s = parseIpsetRestore(
      [
        'create A hash:ip',
        'create A hash:ip -exist',
        'add A 10.0.0.1',
        'add A 10.0.0.1 -exist',
        'add A 10.0.0.2',
        'del A 10.0.0.2',
        'create B hash:ip',
        'add B 10.9.9.9',
        'swap A B',
        'create C hash:net',
        'flush C',
        'destroy C',
      ].join('\n'),
    );
    expect([...s.sets.keys()].sort()).toEqual(['A', 'B']);
    expect([...s.sets.get('A')!.entries.keys()]).toEqual(['10.9.9.9']);
    expect([...s.sets.get('B')!.entries.keys()]).toEqual(['10.0.0.1']);
    expect(() => parseIpsetRestore('create A hash:ip\ncreate B hash:net\nswap A B\n')).toThrow(/line 3/);
    expect(() => parseIpsetRestore('create A hash:ip maxelem 1\nadd A 10.0.0.1\nadd A 10.0.0.2\n')).toThrow(/line 3: .*full/);
    expect(() => parseIpsetRestore('create A hash:ip\nadd A 10.0.0.1 nomatch\n')).toThrow(/line 2: hash:ip does not support nomatch/);
  });

  it('adding to an undefined set throws with the line number', () => {
    expect(() => parseIpsetRestore('create A hash:ip\n\nadd B 10.0.0.1\n')).toThrow(/line 3: .*does not exist: B/);
  });

  it('a rule naming an unknown set throws when traced', () => {
    const t = parseIptablesRestore(filter('-A FORWARD -m set --match-set GHOST src -j DROP'));
    expect(() => trace(t, NO_SETS, 'FORWARD', tcp('1.1.1.1', '2.2.2.2', 1))).toThrow(/line 2.*GHOST.*does not exist/s);
  });
});

describe('iptables-restore structure', () => {
  it('-I FORWARD 1 goes before existing rules; -I N inserts at N', () => {
    const t = parseIptablesRestore(
      filter(
        ':A - [0:0]',
        '-A FORWARD -j ACCEPT',
        '-I FORWARD 1 -s 10.0.0.1 -j DROP',
        '-I FORWARD 2 -s 10.0.0.2 -j A',
        '-I FORWARD -s 10.0.0.3 -j DROP',
        '-A A -j DROP',
      ),
    );
    expect(t.tables.get('filter')!.chains.get('FORWARD')!.rules.map((r) => r.line)).toEqual([6, 4, 5, 3]);
    runCases(t, NO_SETS, [
      { name: '-I 1', packet: tcp('10.0.0.1', '9.9.9.9', 1), verdict: 'DROP', by: '10.0.0.1' },
      { name: '-I 2', packet: tcp('10.0.0.2', '9.9.9.9', 1), verdict: 'DROP', by: '-A A -j DROP' },
      { name: 'default position 1', packet: tcp('10.0.0.3', '9.9.9.9', 1), verdict: 'DROP', by: '10.0.0.3' },
      { name: 'falls to the appended rule', packet: tcp('10.0.0.4', '9.9.9.9', 1), verdict: 'ACCEPT', by: '-A FORWARD -j ACCEPT' },
    ]);
    expect(() => parseIptablesRestore(filter('-I FORWARD 2 -j DROP'))).toThrow(/line 2: index of insertion too big/);
  });

  it('--noflush onto a base state: our hook lands before flannel and kube rules, declaring our chain flushes it', () => {
    const base = parseIptablesRestore(
      filter(
        ':FORWARD ACCEPT [0:0]',
        ':FLANNEL-FWD - [0:0]',
        ':PCTL-FORWARD - [0:0]',
        '-A FORWARD -j FLANNEL-FWD',
        '-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT',
        '-A PCTL-FORWARD -j ACCEPT',
      ),
    );
    const t = parseIptablesRestore(
      filter(':PCTL-FORWARD - [0:0]', '-A PCTL-FORWARD -d 10.244.1.5 -j DROP', '-I FORWARD 1 -m comment --comment "pctl hook" -j PCTL-FORWARD'),
      { base, noflush: true },
    );
    runCases(t, NO_SETS, [
      { name: 'our DROP wins over flannel', packet: tcp('10.244.2.1', '10.244.1.5', 80), verdict: 'DROP', by: '-d 10.244.1.5' },
      { name: 'falls through to flannel', packet: tcp('10.244.2.1', '10.244.1.6', 80), verdict: 'ACCEPT', by: 'FLANNEL-FWD' },
    ]);
    // The base was not modified.
    expect(base.tables.get('filter')!.chains.get('FORWARD')!.rules).toHaveLength(1);
    // Without --noflush the table is replaced: flannel's chain is gone.
    const replaced = parseIptablesRestore(filter(':PCTL-FORWARD - [0:0]'), { base });
    expect(replaced.tables.get('filter')!.chains.has('FLANNEL-FWD')).toBe(false);
  });

  it('keeps several tables by name', () => {
    const t = parseIptablesRestore(
      [
        '# Generated by hand',
        '*nat',
        ':POSTROUTING ACCEPT [0:0]',
        '-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE --random-fully',
        'COMMIT',
        '*filter',
        ':INPUT DROP [3:180]',
        'COMMIT',
      ].join('\n'),
    );
    expect([...t.tables.keys()]).toEqual(['nat', 'filter']);
    expect(t.tables.get('nat')!.chains.get('POSTROUTING')!.rules).toHaveLength(1);
    runCases(t, NO_SETS, [{ name: 'INPUT policy', packet: tcp('1.1.1.1', '2.2.2.2', 1), verdict: 'DROP', by: null, hook: 'INPUT' }]);
  });

  it.each([
    ['unknown option', '-A FORWARD -p tcp -m tcp --tcp-option 2 -j DROP', /line 3: unknown option "--tcp-option"/],
    ['unknown match', '-A FORWARD -m limit --limit 5/s -j ACCEPT', /line 3: unsupported match "-m limit"/],
    ['option of a match not loaded', '-A FORWARD --ctstate NEW -j ACCEPT', /line 3: unknown option "--ctstate"/],
    ['option of a completed match', '-A FORWARD -m comment --comment x -m comment -j ACCEPT', /line 3: -m comment needs --comment/],
    ['-m tcp without -p tcp', '-A FORWARD -m tcp --dport 80 -j ACCEPT', /line 3: -m tcp needs "-p tcp"/],
    ['-m udp with -p tcp', '-A FORWARD -p tcp -m udp --dport 80 -j ACCEPT', /line 3: -m udp needs "-p udp"/],
    ['multiport without -p', '-A FORWARD -m multiport --dports 80,81 -j ACCEPT', /line 3: multiport needs/],
    ['multiport over 15 slots', '-A FORWARD -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16 -j ACCEPT', /line 3: multiport: too many/],
    ['multiport x:x', '-A FORWARD -p tcp -m multiport --dports 80:80 -j ACCEPT', /line 3: multiport: invalid port range/],
    ['reversed --dport range', '-A FORWARD -p tcp -m tcp --dport 90:80 -j ACCEPT', /line 3: invalid port range/],
    ['octal-looking port', '-A FORWARD -p tcp -m tcp --dport 080 -j ACCEPT', /line 3: invalid port "080"/],
    ['hostname', '-A FORWARD -s example.com -j ACCEPT', /line 3: -s: unsupported address/],
    ['twice -s', '-A FORWARD -s 1.1.1.1 -s 2.2.2.2 -j ACCEPT', /line 3: multiple -s/],
    ['dangling !', '-A FORWARD -j ACCEPT !', /line 3: "!" at the end/],
    ['! before -m', '-A FORWARD ! -m comment --comment x -j ACCEPT', /line 3: unexpected "!" before -m/],
    ['unknown chain', '-A NOPE -j ACCEPT', /line 3: no chain "NOPE"/],
    ['goto a verdict', '-A FORWARD -g ACCEPT', /line 3: goto "ACCEPT" is not a chain/],
    ['chain name too long', ':PCTL-0123456789012345678901234 - [0:0]', /line 3: chain name .* 30 characters \(max 28\)/],
    ['unknown command', '-Z FORWARD', /line 3: unsupported command "-Z"/],
    ['MASQUERADE in filter', '-A FORWARD -j MASQUERADE', /line 3: MASQUERADE is only valid in the nat table/],
  ])('%s throws with the line number', (_name, line, error) => {
    expect(() => parseIptablesRestore(['*filter', ':X - [0:0]', line, 'COMMIT'].join('\n'))).toThrow(error);
  });

  it('multiport takes exactly 15 slots, a range counting two', () => {
    const t = parseIptablesRestore(filter(':FORWARD DROP [0:0]', '-A FORWARD -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14:15 -j ACCEPT'));
    runCases(t, NO_SETS, [
      { name: 'port 13', packet: tcp('1.1.1.1', '2.2.2.2', 13), verdict: 'ACCEPT' },
      { name: 'port 15', packet: tcp('1.1.1.1', '2.2.2.2', 15), verdict: 'ACCEPT' },
      { name: 'port 16', packet: tcp('1.1.1.1', '2.2.2.2', 16), verdict: 'DROP' },
    ]);
  });

  it('refuses text outside a table and a missing COMMIT', () => {
    expect(() => parseIptablesRestore('-A FORWARD -j ACCEPT\n')).toThrow(/line 1: rule or declaration outside/);
    expect(() => parseIptablesRestore('*filter\n-A FORWARD -j ACCEPT\n')).toThrow(/COMMIT expected/);
  });

  it('-D by spec and by number, -X refuses a referenced chain', () => {
    const t = parseIptablesRestore(
      filter(
        ':A - [0:0]',
        '-A FORWARD -m comment --comment "pctl hook" -j A',
        '-A FORWARD -s 10.0.0.1 -j DROP',
        '-D FORWARD -m comment --comment "pctl hook" -j A',
        '-D FORWARD 1',
        '-X A',
      ),
    );
    expect(t.tables.get('filter')!.chains.get('FORWARD')!.rules).toHaveLength(0);
    expect(t.tables.get('filter')!.chains.has('A')).toBe(false);
    expect(() => parseIptablesRestore(filter(':A - [0:0]', '-A FORWARD -j A', '-X A'))).toThrow(/line 4: chain A is still referenced/);
  });
});

describe('checkReferences', () => {
  it('finds a dangling jump, an undefined set, a late declaration, an unreferenced chain and a loop', () => {
    const t = parseIptablesRestore(
      filter(
        ':USED - [0:0]',
        ':ORPHAN - [0:0]',
        '-A FORWARD -j USED',
        '-A FORWARD -j MISSING',
        '-A USED -m set --match-set NOSET src -j DROP',
        '-A USED -j LATE',
        ':LATE - [0:0]',
        ':L1 - [0:0]',
        ':L2 - [0:0]',
        '-A L1 -j L2',
        '-A L2 -j L1',
      ),
    );
    const problems = checkReferences(t, NO_SETS);
    expect(problems).toContain('filter FORWARD line 5: jump to undefined chain MISSING');
    expect(problems).toContain('filter USED line 6: matches undefined set NOSET');
    expect(problems).toContain('filter USED line 7: jump to chain LATE before it is declared (iptables-restore fails)');
    expect(problems).toContain('unreferenced: chain ORPHAN in table filter is never jumped to');
    expect(problems.some((p) => /loop L1 -> L2 -> L1/.test(p))).toBe(true);
    expect(problems.some((p) => p.includes('unreferenced: chain USED'))).toBe(false);
  });

  it('flags a comment longer than the kernel keeps', () => {
    const long = 'c'.repeat(256);
    const t = parseIptablesRestore(filter(`-A FORWARD -m comment --comment "${long}" -j ACCEPT`));
    expect(checkReferences(t, NO_SETS)).toEqual([
      'warning: filter FORWARD line 2: comment of 256 characters; the kernel keeps 255, so iptables-save will differ from the rendered rule',
    ]);
    expect(checkReferences(parseIptablesRestore(filter(`-A FORWARD -m comment --comment "${long.slice(1)}" -j ACCEPT`)), NO_SETS)).toEqual([]);
  });
});

describe('renderer output', () => {
  // A hand-built Ruleset (not compiled) exercising every construct the renderer emits.
  const rs: Ruleset = {
    node: 'node-1',
    sets: [
      {
        name: 'PCTL-b-except',
        type: 'hash:net',
        purpose: 'ipBlock 10.0.0.0/8 except 10.1.0.0/16',
        members: [{ entry: '10.0.0.0/8' }, { entry: '10.1.0.0/16', nomatch: true }],
      },
      { name: 'PCTL-n-web', type: 'hash:ip,port', purpose: 'named port http', members: [{ entry: '10.244.1.5,tcp:8080' }] },
      { name: 'PCTL-p-web', type: 'hash:ip', purpose: 'pods app=web', members: [{ entry: '10.244.1.5' }] },
      { name: 'PCTL-p-client', type: 'hash:ip', purpose: 'pods app=client', members: [{ entry: '10.244.2.7' }] },
      { name: 'PCTL-self', type: 'hash:net,net', purpose: 'self', members: [{ entry: '10.244.1.5,10.244.1.5' }] },
    ],
    chains: [
      {
        name: 'PCTL-FORWARD',
        rules: [
          { match: { ctstate: ['ESTABLISHED', 'RELATED'] }, action: { kind: 'return' }, comment: 'established' },
          // goto: PCTL-G-self's end returns to FORWARD itself, skipping the ingress jump below.
          { match: { sets: [{ set: 'PCTL-self', dirs: 'src,dst' }] }, action: { kind: 'goto', chain: 'PCTL-G-self' }, comment: 'a pod may reach itself' },
          { match: { sets: [{ set: 'PCTL-p-web', dirs: 'dst' }] }, action: { kind: 'jump', chain: 'PCTL-I-web' }, comment: 'ingress of app=web "quoted" \\ é' },
        ],
      },
      {
        name: 'PCTL-G-self',
        rules: [{ match: { protocol: 'tcp', dports: [{ from: 9999, to: 9999 }] }, action: { kind: 'drop' }, comment: 'test: self on 9999 dropped' }],
      },
      {
        name: 'PCTL-I-web',
        rules: [
          {
            match: { protocol: 'tcp', dports: [{ from: 80, to: 80 }], sets: [{ set: 'PCTL-p-client', dirs: 'src' }] },
            action: { kind: 'return' },
            comment: 'default/allow-client rule 0',
          },
          {
            match: { protocol: 'udp', dports: [{ from: 53, to: 53 }, { from: 5000, to: 5010 }], srcNet: '10.0.0.0/8' },
            action: { kind: 'return' },
            comment: 'default/dns rule 0',
          },
          {
            match: { protocol: 'tcp', sets: [{ set: 'PCTL-b-except', dirs: 'src' }, { set: 'PCTL-n-web', dirs: 'dst,dst' }] },
            action: { kind: 'return' },
            comment: 'default/named rule 0',
          },
          { match: { sets: [{ set: 'PCTL-p-client', dirs: 'src', negate: true }], dstNet: '10.244.1.5/32' }, action: { kind: 'drop' }, comment: 'not client' },
          { match: {}, action: { kind: 'drop' }, comment: 'default deny' },
        ],
      },
    ],
    hooks: [{ table: 'filter', chain: 'FORWARD', target: 'PCTL-FORWARD', comment: 'policyctl: enforce NetworkPolicy' }],
  };
  const iptablesText = renderIptablesRestore(rs);
  const ipsetText = renderIpsetRestore(rs.sets);
  const table = parseIptablesRestore(iptablesText, { noflush: true });
  const ipsets = parseIpsetRestore(ipsetText);

  it('parses without problems', () => {
    expect(checkReferences(table, ipsets)).toEqual([]);
    expect(table.tables.get('filter')!.chains.get('FORWARD')!.rules[0]!.text).toMatch(/^-I FORWARD 1 -m comment --comment "policyctl: /);
  });

  const web = '10.244.1.5';
  const client = '10.244.2.7';
  it.each<Case>([
    { name: 'client to web:80', packet: tcp(client, web, 80), verdict: 'ACCEPT', by: null, hit: 'allow-client' },
    { name: 'client to web:81', packet: tcp(client, web, 81), verdict: 'DROP', by: 'default deny' },
    { name: 'established reply', packet: tcp(web, client, 40000, { ctstate: 'ESTABLISHED' }), verdict: 'ACCEPT', by: null, hit: 'established' },
    { name: 'web to itself (goto skips its ingress chain)', packet: tcp(web, web, 80), verdict: 'ACCEPT', by: null, hit: 'reach itself' },
    { name: 'web to itself on 9999', packet: tcp(web, web, 9999), verdict: 'DROP', by: 'self on 9999' },
    { name: 'not to a selected pod', packet: tcp(web, client, 80), verdict: 'ACCEPT', by: null },
    { name: 'udp 5005 from 10/8', packet: udp('10.9.9.9', web, 5005), verdict: 'ACCEPT', by: null, hit: 'default/dns' },
    { name: 'udp 5011 from 10/8', packet: udp('10.9.9.9', web, 5011), verdict: 'DROP' },
    { name: 'named port from ipBlock', packet: tcp('10.9.9.9', web, 8080), verdict: 'ACCEPT', by: null, hit: 'default/named' },
    { name: 'named port from except', packet: tcp('10.1.9.9', web, 8080), verdict: 'DROP', by: 'not client' },
    { name: 'named port, wrong protocol', packet: udp('10.9.9.9', web, 8080), verdict: 'DROP' },
  ])('$name', (c) => {
    runCases(table, ipsets, [c]);
  });

  it('sanitized comments survive the round trip', () => {
    const rules = table.tables.get('filter')!.chains.get('PCTL-FORWARD')!.rules;
    const comment = rules[2]!.matches.find((m) => m.kind === 'comment');
    if (comment?.kind !== 'comment') throw new Error('no comment match');
    // The renderer may prefix a rule id; what matters is that quotes, backslash and non-ASCII
    // arrive as the sanitized text and nothing spills into other arguments.
    expect(comment.text).toMatch(/(^| )ingress of app=web _quoted_ _ _$/);
    expect(comment.givenLength).toBe(comment.text.length);
  });
});
