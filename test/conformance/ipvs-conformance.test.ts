// The upstream NetworkPolicy and ClusterNetworkPolicy conformance corpora
// (test/fixtures/conformance, test/fixtures/conformance-cnp) through Services
// under kube-proxy's IPVS mode (issue 13): upstream probes every pod through a Service, so each
// off-diagonal cell of each step is traced along IPVS's path (Dataplane.traverseIpvs: the
// client node's INPUT with the VIP, its OUTPUT with the backend, the backend node's FORWARD)
// through rules compiled for IPVS, and must give the case's expected verdict. Pods are spread
// over two nodes, so backends on the client's node and on the other node are both exercised.

import { describe, expect, it } from 'vitest';
import type { CompileOptions } from '../../src/compiler/compile.ts';
import { CaseRunner, STANDARD_NODES, listCaseFiles, listCnpCaseFiles, loadCase } from '../support/conformance.ts';
import { Dataplane } from '../support/dataplane.ts';

const IPVS: CompileOptions = { proxy: { mode: 'ipvs', serviceCidrs: ['10.96.0.0/12'] } };
const VIP = { kind: 'clusterIP' as const, vip: '10.96.0.10', port: 8443 };

describe.each([...listCaseFiles(), ...listCnpCaseFiles()].map((f) => [f.split('/').pop()!, f] as const))('%s through a ClusterIP under IPVS', (_name, file) => {
  const c = loadCase(file);
  const steps = [...new CaseRunner(c).steps()];

  it.each(steps.map((s) => [s.index, s] as const))('step %i', (_i, s) => {
    const plane = new Dataplane(s.model, STANDARD_NODES.map((n) => n.name), undefined, IPVS);
    let traced = 0;
    let cells = 0;
    for (const probe of s.probes) {
      cells += [...probe.matrix.keys()].filter((k) => k.split('|')[0] !== k.split('|')[1]).length;
      const wrong: string[] = [];
      for (const [cell, expected] of probe.matrix) {
        const [from, to] = cell.split('|') as [string, string];
        if (from === to) continue; // hairpin: informational upstream, another path under IPVS
        const src = s.model.findPod(...(from.split('/') as [string, string]))!;
        const dst = s.model.findPod(...(to.split('/') as [string, string]))!;
        const got = plane.traverseIpvs({ src: { kind: 'pod', pod: src }, dst: { kind: 'pod', pod: dst }, port: probe.port, protocol: probe.protocol }, VIP).allowed;
        traced++;
        if (got !== expected) wrong.push(`${from} -> ${to} ${probe.port}/${probe.protocol} through a ClusterIP: got ${got}, expected ${expected}`);
      }
      expect(wrong).toEqual([]);
    }
    expect(traced).toBe(cells); // every off-diagonal cell, none skipped
    expect(traced).toBeGreaterThan(0);
  });
});
