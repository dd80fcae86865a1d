// Where the verdict cache's rules sit in the layout (layout.ts VERDICT_CACHE_SET, docs/design.md
// "The verdict cache"): after every test that does not depend on the connection's four things
// alone (replies, mid-stream pickups, the unknown-address drops), before both directions are
// judged, and remembering only what both allowed; in PCTL-FORWARD only.

import { describe, expect, it } from 'vitest';
import { sampleCluster } from '../../test/support/clusters.ts';
import { compile, type CompileOptions } from './compile.ts';
import { IncrementalCompiler } from './incremental.ts';
import { VERDICT_CACHE_SET, VERDICT_CACHE_TIMEOUT_S } from './layout.ts';
import type { Rule, Ruleset } from './ruleset.ts';

/** A PCTL-FORWARD rule by what it does, in order. */
function kinds(rs: Ruleset, chain = 'PCTL-FORWARD'): string[] {
  const c = rs.chains.find((x) => x.name === chain);
  if (!c) return [];
  return c.rules.map((r: Rule) => {
    if (r.action.kind === 'remember') return `remember ${r.match.protocol}`;
    if (r.match.sets?.some((s) => s.set === VERDICT_CACHE_SET)) return `cached ${r.match.protocol}`;
    if (r.match.ctstate?.includes('ESTABLISHED')) return 'replies';
    if (r.action.kind === 'jump' && r.action.chain === 'PCTL-MIDSTREAM') return 'midstream';
    if (r.action.kind === 'goto' && r.action.chain.startsWith('PCTL-UNKNOWN-')) return 'unknown';
    if (r.action.kind === 'jump') return `evaluate ${r.action.chain}`;
    return r.comment;
  });
}

const CACHE: CompileOptions = { verdictCache: true };

describe('the verdict cache in the layout', () => {
  it('is checked after the replies and the unknown-address drops, and filled after both directions allowed', () => {
    expect(kinds(compile(sampleCluster(), 'n1', CACHE))).toEqual([
      'replies',
      'unknown',
      'unknown',
      'cached tcp',
      'cached udp',
      'evaluate PCTL-EGRESS',
      'evaluate PCTL-INGRESS',
      'remember tcp',
      'remember udp',
    ]);
  });

  it('comes after the mid-stream drops (--revoke-established): a revoked connection never meets a remembered verdict', () => {
    const k = kinds(compile(sampleCluster(), 'n1', { ...CACHE, dropMidstream: true }));
    expect(k.indexOf('cached tcp')).toBeGreaterThan(k.lastIndexOf('midstream'));
    expect(k.lastIndexOf('midstream')).toBeGreaterThan(0);
  });

  it('lives in PCTL-FORWARD only: PCTL-INPUT, and under IPVS PCTL-OUTPUT, walk every time', () => {
    const ipvs = compile(sampleCluster(), 'n1', { ...CACHE, proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } });
    expect(kinds(ipvs)).toContain('cached tcp');
    for (const chain of ['PCTL-INPUT', 'PCTL-OUTPUT']) expect(kinds(ipvs, chain).filter((k) => k.startsWith('cached') || k.startsWith('remember')), chain).toEqual([]);
  });

  it('its set is created empty, bounded, expiring, and emptied by every write (IpSet.runtime)', () => {
    const set = compile(sampleCluster(), 'n1', CACHE).sets.find((s) => s.name === VERDICT_CACHE_SET)!;
    expect(set).toMatchObject({ type: 'hash:ip,port,ip', members: [], runtime: { timeout: VERDICT_CACHE_TIMEOUT_S, flushOnChange: true, maxelem: 65536 } });
  });

  it('is absent unless asked for (a bare compile; the agent asks unless --no-verdict-cache)', () => {
    const rs = compile(sampleCluster(), 'n1');
    expect(rs.sets.some((s) => s.name === VERDICT_CACHE_SET)).toBe(false);
    expect(kinds(rs).some((k) => k.startsWith('cached') || k.startsWith('remember'))).toBe(false);
  });

  it('the incremental compiler lays it out as compile() does', () => {
    const m = sampleCluster();
    const ic = new IncrementalCompiler(m, 'n1', CACHE);
    expect(ic.ruleset()).toEqual(compile(m, 'n1', CACHE));
    ic.dispose();
  });
});
