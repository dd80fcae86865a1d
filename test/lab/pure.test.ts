// Pure parts of the lab: names, IPv4 helpers, the other agents' rules. No kernel needed.

import { describe, expect, it } from 'vitest';
import {
  MAX_IFNAME,
  labNetnsPrefix,
  labOfNetns,
  nodeNetnsName,
  parsePodKey,
  podContainerId,
  podNetnsName,
  switchNetns,
  switchPortName,
  validateLabName,
  validateNodeName,
} from '../../src/lab/names.ts';
import { cidrContainsCidr, formatIpv4, parseIpv4, parseIpv4Cidr } from '../../src/lab/ipv4.ts';
import { renderNodeFilter, renderNodeNat, renderServices, serviceChains } from '../../src/lab/rules.ts';
import { cniConfig } from '../../src/lab/cni.ts';
import { resolveNodes, resolvePod, resolveService } from '../../src/lab/spec.ts';
import type { LabState } from '../../src/lab/state.ts';

describe('lab names', () => {
  it('accepts short [a-z0-9-] lab names and rejects the rest, naming the value', () => {
    expect(validateLabName('demo-1')).toBe('demo-1');
    for (const bad of ['', 'Demo', 'a.b', 'a_b', '-a', 'a-', 'abcdefghijklm']) {
      expect(() => validateLabName(bad)).toThrow(JSON.stringify(bad));
    }
    expect(() => validateNodeName('node-12345678')).toThrow(/node name/);
  });

  it('gives every namespace the lab prefix, and no lab prefix matches another lab', () => {
    expect(switchNetns('a')).toBe('pl-a.sw');
    expect(nodeNetnsName('a', 'n1')).toBe('pl-a.n.n1');
    expect(podNetnsName('a', 'ns/pod')).toMatch(/^pl-a\.p\.[a-z2-7]{10}$/);
    expect(podNetnsName('a', 'ns/pod')).toBe(podNetnsName('a', 'ns/pod'));
    expect(podNetnsName('a', 'ns/pod')).not.toBe(podNetnsName('a', 'ns/pod2'));
    // Lab "a" must not sweep lab "a-b".
    expect(switchNetns('a-b').startsWith(labNetnsPrefix('a'))).toBe(false);
    expect(nodeNetnsName('a-n', 'x').startsWith(labNetnsPrefix('a'))).toBe(false);
    expect(labOfNetns(podNetnsName('a-b', 'x/y'))).toBe('a-b');
    expect(labOfNetns('cni-1234')).toBeUndefined();
  });

  it('keeps interface names within 15 characters', () => {
    expect(switchPortName('abcdefghijkl').length).toBeLessThanOrEqual(MAX_IFNAME);
    expect(podContainerId('lab', 'a/b')).toMatch(/^pl-lab-[a-z2-7]{16}$/);
  });

  it('parses pod keys', () => {
    expect(parsePodKey('ns/name')).toEqual({ namespace: 'ns', name: 'name' });
    expect(() => parsePodKey('name')).toThrow(/namespace\/name/);
  });
});

describe('lab IPv4 helpers', () => {
  it('parses strictly', () => {
    expect(parseIpv4('10.244.1.10')).toBe(0x0af4010a);
    expect(formatIpv4(0x0af4010a)).toBe('10.244.1.10');
    for (const bad of ['10.244.1', '10.244.1.256', '010.1.1.1', '1.2.3.4.5', 'a.b.c.d']) expect(parseIpv4(bad)).toBeUndefined();
    expect(() => parseIpv4Cidr('10.244.1.1/24', 'podCIDR')).toThrow(/host bits.*10\.244\.1\.0\/24/);
    expect(cidrContainsCidr(parseIpv4Cidr('10.244.0.0/16'), parseIpv4Cidr('10.244.3.0/24'))).toBe(true);
    expect(cidrContainsCidr(parseIpv4Cidr('10.244.0.0/16'), parseIpv4Cidr('10.245.0.0/24'))).toBe(false);
  });
});

describe('other agents rules', () => {
  const input = { clusterCIDR: '10.244.0.0/16', podCIDR: '10.244.1.0/24' };

  it('renders flannel FORWARD and masquerade rules as flannel does', () => {
    const filter = renderNodeFilter(input);
    expect(filter).toContain('-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD');
    expect(filter.indexOf('-j KUBE-FORWARD')).toBeLessThan(filter.indexOf('-j FLANNEL-FWD'));
    const nat = renderNodeNat(input);
    expect(nat.split('\n').filter((l) => l.startsWith('-A FLANNEL-POSTRTG'))).toEqual([
      '-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
      '-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
      '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
    ]);
  });

  it('renders services and deletes the chains of removed ones', () => {
    const svc = { name: 'd/web', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP' as const, backend: { ip: '10.244.1.10', port: 8080 } };
    const { svc: svcChain, sep } = serviceChains(svc);
    expect(svcChain.length).toBeLessThanOrEqual(28);
    const text = renderServices([svc], input.clusterCIDR);
    expect(text).toContain(`-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "d/web cluster IP" -m tcp --dport 80 -j ${svcChain}`);
    expect(text).toContain(`-j DNAT --to-destination 10.244.1.10:8080`);
    const removal = renderServices([], input.clusterCIDR, [svc]);
    expect(removal).toContain(`-X ${svcChain}`);
    expect(removal).toContain(`-X ${sep}`);
  });

  it('configures the CNI bridge plugin the way flannel delegates', () => {
    expect(cniConfig({ ...input, ipamDataDir: '/x' })).toMatchObject({
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      isDefaultGateway: true,
      hairpinMode: true,
      ipMasq: false,
      ipam: { type: 'host-local', dataDir: '/x', ranges: [[{ subnet: '10.244.1.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
    });
  });
});

describe('lab spec validation', () => {
  const nodes = [
    { name: 'n1', podCIDR: '10.244.1.0/24' },
    { name: 'n2', podCIDR: '10.244.2.0/24' },
  ];
  const cluster = '10.244.0.0/16';
  const underlay = '192.168.50.0/24';
  const lab = (): LabState => ({
    version: 1,
    name: 'v',
    dir: '/nowhere',
    createdAt: '',
    clusterCIDR: cluster,
    underlayCIDR: underlay,
    switch: { netns: 'pl-v.sw', bridge: 'br0' },
    external: { ip: '192.168.50.1', ports: [] },
    nodes: resolveNodes({ name: 'v', nodes }, cluster, underlay),
    pods: [],
    services: [],
  });

  it('places nodes on the underlay and derives gateways and namespaces', () => {
    expect(lab().nodes).toEqual([
      { name: 'n1', podCIDR: '10.244.1.0/24', ip: '192.168.50.11', gateway: '10.244.1.1', netns: 'pl-v.n.n1' },
      { name: 'n2', podCIDR: '10.244.2.0/24', ip: '192.168.50.12', gateway: '10.244.2.1', netns: 'pl-v.n.n2' },
    ]);
  });

  it('rejects bad node specs, naming the field and value', () => {
    const bad = (n: Array<{ name: string; podCIDR: string; ip?: string }>) => () => resolveNodes({ name: 'v', nodes: n }, cluster, underlay);
    expect(bad([{ name: 'n1', podCIDR: '10.245.1.0/24' }])).toThrow(/nodes\[0\]\.podCIDR 10\.245\.1\.0\/24 is not inside clusterCIDR/);
    expect(bad([...nodes, { name: 'n3', podCIDR: '10.244.2.0/25' }])).toThrow(/overlaps node n2/);
    expect(bad([nodes[0]!, nodes[0]!])).toThrow(/duplicate node name "n1"/);
    expect(bad([{ ...nodes[0]!, ip: '192.168.50.1' }])).toThrow(/already used/);
    expect(() => resolveNodes({ name: 'v', nodes }, cluster, '10.244.0.0/24')).toThrow(/overlaps clusterCIDR/);
  });

  it('checks pod IPs against the node podCIDR, the gateway and other pods', () => {
    const l = lab();
    const pod = resolvePod(l, { namespace: 'a', name: 'p', node: 'n1', ip: '10.244.1.10', ports: [{ port: 80 }, { port: 80 }, { port: 9, protocol: 'SCTP' }] }, 'pods[0]');
    expect(pod.ports).toEqual([
      { port: 80, protocol: 'TCP' },
      { port: 9, protocol: 'SCTP' },
    ]);
    expect(pod.unserved).toEqual([{ port: 9, protocol: 'SCTP' }]);
    l.pods.push(pod);
    expect(() => resolvePod(l, { namespace: 'a', name: 'q', node: 'n1', ip: '10.244.1.10' }, 'x')).toThrow(/already used by pod a\/p/);
    expect(() => resolvePod(l, { namespace: 'a', name: 'q', node: 'n1', ip: '10.244.1.1' }, 'x')).toThrow(/other than the gateway 10\.244\.1\.1/);
    expect(() => resolvePod(l, { namespace: 'a', name: 'q', node: 'n3' }, 'x')).toThrow(/node "n3"/);
    expect(() => resolvePod(l, { namespace: 'a', name: 'p', node: 'n1' }, 'x')).toThrow(/already exists/);
    expect(() => resolvePod(l, { namespace: 'a', name: 'q', node: 'n1', ports: [{ port: 70000 }] }, 'x')).toThrow(/70000/);
  });

  it('keeps service IPs out of the pod and node networks', () => {
    expect(() => resolveService(lab(), { clusterIP: '10.244.9.9', port: 80, backend: { ip: '10.244.1.10', port: 80 } })).toThrow(/outside/);
    expect(resolveService(lab(), { clusterIP: '10.96.0.1', port: 443, backend: { ip: '10.244.1.10', port: 8443 } })).toMatchObject({
      name: '10.96.0.1:443/TCP',
      protocol: 'TCP',
    });
  });
});
