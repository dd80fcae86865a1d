// Real-kernel test of the lab: a 2-node flannel host-gw cluster in network namespaces.
// Runs as root; under CI=true it never skips for missing tools (a missing install must fail).
// Everything happens inside the lab's namespaces; the test checks that the machine's own
// namespace (iptables, ipsets, links, routes) is the same before and after.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  addPod,
  addService,
  createLab,
  destroyLab,
  execInNode,
  execInPod,
  LabCommandError,
  labNetnsPrefix,
  listLabs,
  listNetns,
  openLab,
  probeAllPairs,
  probeMany,
  removePod,
  startInNode,
  type LabState,
  type ProbeRequest,
} from '../../src/lab/index.ts';

const isRoot = process.getuid?.() === 0;
const inCI = process.env['CI'] === 'true';

function hasTool(argv: string[]): boolean {
  try {
    execFileSync(argv[0]!, argv.slice(1), { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const toolsPresent =
  hasTool(['ip', '-V']) &&
  hasTool(['iptables', '-V']) &&
  hasTool(['ipset', '-v']) &&
  existsSync('/usr/lib/cni/bridge') &&
  existsSync('/usr/lib/cni/host-local');
const runLab = isRoot && (inCI || toolsPresent);

/** The machine's own network state, which the lab must never change. */
function rootSnapshot(): Record<string, string> {
  const out = (argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  return {
    iptables: out(['iptables-save'])
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n'),
    ipsets: out(['ipset', 'list', '-n']),
    links: out(['ip', '-o', 'link', 'show'])
      .split('\n')
      .map((l) => l.replace(/^\d+: /, '').split(':')[0])
      .sort()
      .join('\n'),
    routes: out(['ip', 'route', 'show', 'table', 'all']),
    forwarding: out(['sysctl', '-n', 'net.ipv4.ip_forward']),
  };
}

// Test labs are named lt<pid>-<random> (pid in base 36), so a run can remove the labs of earlier
// runs that were killed before their afterAll (their pid is gone) without touching live ones.
const NAME = `lt${process.pid.toString(36)}-${Math.floor(Math.random() * 1296).toString(36).padStart(2, '0')}`;
const TEST_LAB_RE = /^lt([0-9a-z]+)-[0-9a-z]{2}f?$/;

async function removeLabsOfDeadRuns(): Promise<void> {
  for (const l of await listLabs()) {
    const m = TEST_LAB_RE.exec(l.name);
    if (!m) continue;
    const pid = parseInt(m[1]!, 36);
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive) await destroyLab(l.name);
  }
}

const PORTS = [
  { port: 80, protocol: 'TCP' as const },
  { port: 80, protocol: 'UDP' as const },
  { port: 81, protocol: 'TCP' as const },
  { port: 82, protocol: 'SCTP' as const },
];

const PODS = [
  { namespace: 'x', name: 'a', node: 'n1', ip: '10.244.1.10', ports: PORTS },
  { namespace: 'x', name: 'b', node: 'n1', ip: '10.244.1.11', ports: PORTS },
  { namespace: 'y', name: 'a', node: 'n2', ip: '10.244.2.10', ports: PORTS },
  { namespace: 'y', name: 'b', node: 'n2', ip: '10.244.2.23', ports: PORTS },
];

describe.skipIf(!runLab)('lab on the real kernel', () => {
  let stateDir = '';
  let before: Record<string, string> = {};
  let lab: LabState;
  const started = Date.now();

  beforeAll(async () => {
    await removeLabsOfDeadRuns();
    before = rootSnapshot();
    stateDir = await mkdtemp(join(tmpdir(), 'policyctl-lab-test-'));
    lab = await createLab({
      name: NAME,
      stateDir,
      nodes: [
        { name: 'n1', podCIDR: '10.244.1.0/24' },
        { name: 'n2', podCIDR: '10.244.2.0/24' },
      ],
      pods: PODS,
      externalPorts: [{ port: 8080 }],
    });
  });

  afterAll(async () => {
    // Runs after failures too: nothing of the lab may remain.
    try {
      await destroyLab(NAME, { stateDir });
    } finally {
      if (stateDir) await rm(stateDir, { recursive: true, force: true });
    }
    console.log(`lab test ${NAME}: ${Date.now() - started} ms`);
  });

  it('gives every pod the requested IP, attached by the CNI bridge plugin', async () => {
    for (const spec of PODS) {
      const key = `${spec.namespace}/${spec.name}`;
      const r = await execInPod(lab, key, ['ip', '-j', '-4', 'addr', 'show', 'dev', 'eth0']);
      const info = JSON.parse(r.stdout) as Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>;
      expect(info[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`)).toEqual([`${spec.ip}/24`]);
      expect(lab.pods.find((p) => p.key === key)?.ip).toBe(spec.ip);
      const routes = (await execInPod(lab, key, ['ip', '-4', 'route'])).stdout;
      const gw = spec.node === 'n1' ? '10.244.1.1' : '10.244.2.1';
      expect(routes).toContain(`default via ${gw} dev eth0`);
      expect(routes).toContain(`10.244.0.0/16 via ${gw} dev eth0`);
    }
    const cni0 = await execInNode(lab, 'n1', ['ip', '-4', '-o', 'addr', 'show', 'dev', 'cni0']);
    expect(cni0.stdout).toContain('10.244.1.1/24');
    // SCTP is declared but not served (this kernel has no SCTP).
    expect(lab.pods[0]?.unserved).toEqual([{ port: 82, protocol: 'SCTP' }]);
  });

  it('sets up the nodes like flannel host-gw with kube-proxy', async () => {
    for (const [node, other] of [
      ['n1', { cidr: '10.244.2.0/24', ip: '192.168.50.12' }],
      ['n2', { cidr: '10.244.1.0/24', ip: '192.168.50.11' }],
    ] as const) {
      const sysctl = await execInNode(lab, node, ['sysctl', '-n', 'net.ipv4.ip_forward', 'net.bridge.bridge-nf-call-iptables']);
      expect(sysctl.stdout.trim().split('\n')).toEqual(['1', '1']);
      const routes = (await execInNode(lab, node, ['ip', '-4', 'route'])).stdout;
      expect(routes).toContain(`${other.cidr} via ${other.ip} dev eth0`);
      const filter = (await execInNode(lab, node, ['iptables-save', '-t', 'filter'])).stdout;
      const forward = filter.split('\n').filter((l) => l.startsWith('-A FORWARD '));
      expect(forward).toEqual([
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
      ]);
      expect(filter).toContain('-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT');
      expect(filter).toContain('-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT');
      expect(filter).toContain('-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP');
      expect(filter).toMatch(/-A KUBE-FORWARD .*-m mark --mark 0x4000\/0x4000 -j ACCEPT/);
      expect(filter).toMatch(/-A KUBE-FORWARD .*--ctstate RELATED,ESTABLISHED -j ACCEPT/);
      const nat = (await execInNode(lab, node, ['iptables-save', '-t', 'nat'])).stdout;
      expect(nat).toContain('-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG');
      expect(nat).toMatch(/-A FLANNEL-POSTRTG -s 10\.244\.0\.0\/16 ! -d 224\.0\.0\.0\/4 .*-j MASQUERADE/);
      const mangle = (await execInNode(lab, node, ['iptables-save', '-t', 'mangle'])).stdout;
      expect(mangle).toContain(':KUBE-IPTABLES-HINT');
    }
  });

  it('connects every pod to every pod, TCP and UDP, same node and across nodes, without NAT', async () => {
    const results = await probeAllPairs(lab, { timeoutMs: 2000 });
    expect(results).toHaveLength(4 * 4 * 3);
    const bad = results.filter((r) => !r.allowed);
    expect(bad).toEqual([]);
    for (const r of results) {
      const target = lab.pods.find((p) => p.ip === r.to.ip)!;
      const client = lab.pods.find((p) => p.key === r.from)!;
      expect(r.server).toBe(target.key);
      // flannel masquerades only traffic leaving the cluster CIDR.
      expect(r.seenAs?.split(':')[0]).toBe(client.ip);
    }
  });

  it('sends same-node and cross-node traffic through the node FORWARD chain (br_netfilter)', async () => {
    const victim = lab.pods.find((p) => p.key === 'x/b')!; // on n1
    const toVictim = (from: string): ProbeRequest[] =>
      (['TCP', 'UDP'] as const).map((protocol) => ({ from, to: { ip: victim.ip, port: 80, protocol } }));
    const control: ProbeRequest = { from: 'y/a', to: { ip: '10.244.1.10', port: 80, protocol: 'TCP' } };
    const requests = [...toVictim('x/a'), ...toVictim('y/a'), control];
    const rule = ['-d', `${victim.ip}/32`, '-m', 'comment', '--comment', 'lab test', '-j', 'DROP'];
    await execInNode(lab, 'n1', ['iptables', '-w', '-I', 'FORWARD', '1', ...rule]);
    try {
      const blocked = await probeMany(lab, requests, { timeoutMs: 1000 });
      expect(blocked.map((r) => [r.from, r.to.protocol, r.allowed])).toEqual([
        ['x/a', 'TCP', false], // same node: bridged on cni0, seen by FORWARD only via br_netfilter
        ['x/a', 'UDP', false],
        ['y/a', 'TCP', false], // cross node: routed
        ['y/a', 'UDP', false],
        ['y/a', 'TCP', true], // another pod on n1 stays reachable
      ]);
    } finally {
      await execInNode(lab, 'n1', ['iptables', '-w', '-D', 'FORWARD', ...rule]);
    }
    const again = await probeMany(lab, requests, { timeoutMs: 2000 });
    expect(again.every((r) => r.allowed)).toBe(true);
  });

  it('DNATs a ClusterIP service to its backend on every node', async () => {
    await addService(lab, {
      name: 'y/web:http',
      clusterIP: '10.96.0.10',
      port: 8000,
      protocol: 'TCP',
      backend: { ip: '10.244.2.10', port: 81 },
    });
    await addService(lab, { clusterIP: '10.96.0.10', port: 53, protocol: 'UDP', backend: { ip: '10.244.1.11', port: 80 } });
    const results = await probeMany(
      lab,
      [
        { from: 'x/a', to: { ip: '10.96.0.10', port: 8000, protocol: 'TCP' } },
        { from: 'y/b', to: { ip: '10.96.0.10', port: 8000, protocol: 'TCP' } },
        { from: 'y/b', to: { ip: '10.96.0.10', port: 53, protocol: 'UDP' } },
        { from: { node: 'n1' }, to: { ip: '10.96.0.10', port: 8000, protocol: 'TCP' } },
      ],
      { timeoutMs: 2000 },
    );
    expect(results.map((r) => [r.allowed, r.server])).toEqual([
      [true, 'y/a'],
      [true, 'y/a'],
      [true, 'x/b'],
      [true, 'y/a'],
    ]);
    // Policies see the backend pod IP and the client pod IP (no SNAT for pod clients).
    expect(results[0]!.seenAs?.split(':')[0]).toBe('10.244.1.10');
  });

  it('masquerades traffic leaving the cluster CIDR to the node IP (flannel)', async () => {
    const [r] = await probeMany(lab, [{ from: 'y/a', to: { ip: lab.external.ip, port: 8080, protocol: 'TCP' } }], { timeoutMs: 2000 });
    expect(r).toMatchObject({ allowed: true, server: 'external' });
    expect(r!.seenAs?.split(':')[0]).toBe('192.168.50.12');
    const [back] = await probeMany(lab, [{ from: { external: true }, to: { ip: '10.244.2.10', port: 80, protocol: 'UDP' } }], {
      timeoutMs: 2000,
    });
    expect(back).toMatchObject({ allowed: true, server: 'y/a', seenAs: expect.stringMatching(/^192\.168\.50\.1:/) });
  });

  it('adds and removes pods, releasing the IP; state is readable from another process', async () => {
    await addPod(lab, { namespace: 'z', name: 'late', node: 'n2', ip: '10.244.2.50', ports: [{ port: 9000 }] });
    const reopened = await openLab(NAME, { stateDir });
    expect(reopened.pods.map((p) => p.key)).toContain('z/late');
    const [r] = await probeMany(lab, [{ from: 'x/a', to: { ip: '10.244.2.50', port: 9000, protocol: 'TCP' } }], { timeoutMs: 2000 });
    expect(r).toMatchObject({ allowed: true, server: 'z/late' });
    const netns = lab.pods.find((p) => p.key === 'z/late')!.netns;
    await removePod(lab, 'z/late');
    expect(await listNetns()).not.toContain(netns);
    // The IP went back to host-local: the same address can be taken again.
    await addPod(lab, { namespace: 'z', name: 'again', node: 'n2', ip: '10.244.2.50' });
    await removePod(lab, 'z/again');
    // Without an IP, host-local picks a free one of the node's podCIDR.
    const auto = await addPod(lab, { namespace: 'z', name: 'auto', node: 'n2', ports: [{ port: 80, protocol: 'UDP' }] });
    expect(auto.ip).toMatch(/^10\.244\.2\.\d+$/);
    expect(lab.pods.filter((p) => p.ip === auto.ip)).toHaveLength(1);
    const [u] = await probeMany(lab, [{ from: 'x/b', to: { ip: auto.ip, port: 80, protocol: 'UDP' } }], { timeoutMs: 2000 });
    expect(u).toMatchObject({ allowed: true, server: 'z/auto' });
    await removePod(lab, 'z/auto');
    await expect(addPod(lab, { namespace: 'z', name: 'bad', node: 'n2', ip: '10.244.1.99' })).rejects.toThrow(/podCIDR 10\.244\.2\.0\/24/);
    const labs = await listLabs({ stateDir });
    expect(labs.find((l) => l.name === NAME)?.status).toBe('up');
  });

  let agentPid = 0;
  it('starts a long-lived process (an agent) inside a node namespace', async () => {
    agentPid = await startInNode(lab, 'n1', ['sh', '-c', 'echo ready; exec sleep 300'], { logName: 'agent-n1' });
    const where = execFileSync('ip', ['netns', 'identify', String(agentPid)], { encoding: 'utf8' }).trim();
    expect(where).toBe(lab.nodes[0]!.netns);
  });

  it('refuses a second lab of the same name', async () => {
    await expect(createLab({ name: NAME, stateDir, nodes: [{ name: 'n1', podCIDR: '10.244.1.0/24' }] })).rejects.toThrow(/already exists/);
  });

  it('destroys everything and leaves the machine namespace unchanged', async () => {
    const result = await destroyLab(NAME, { stateDir });
    expect(result.netns).toHaveLength(1 + 2 + 4);
    expect(result.pids.length).toBe(6); // 4 pod servers, the external server, the agent
    expect(result.pids).toContain(agentPid);
    expect((await listNetns()).filter((n) => n.startsWith(labNetnsPrefix(NAME)))).toEqual([]);
    expect((await listLabs({ stateDir })).map((l) => l.name)).not.toContain(NAME);
    for (const pid of result.pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(rootSnapshot()).toEqual(before);
    expect(Date.now() - started).toBeLessThan(60_000);
  });
});

describe.skipIf(!runLab)('lab cleanup', () => {
  const name = `${NAME}f`;
  let stateDir = '';

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), 'policyctl-lab-test-'));
  });

  afterAll(async () => {
    try {
      await destroyLab(name, { stateDir });
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  });

  const spec = () => ({
    name,
    stateDir,
    nodes: [{ name: 'n1', podCIDR: '10.244.1.0/24' }],
    pods: [
      { namespace: 'x', name: 'a', node: 'n1', ip: '10.244.1.10', ports: [{ port: 80 }] },
      { namespace: 'x', name: 'b', node: 'n1', ip: '10.244.1.11', ports: [{ port: 80 }] },
    ],
  });

  it('removes everything when creation fails half-way, and says which command failed', async () => {
    // host-local already holds 10.244.1.11 for another container: the second CNI ADD fails.
    const held = join(stateDir, name, 'ipam', 'n1', 'cbr0');
    await mkdir(held, { recursive: true });
    await writeFile(join(held, '10.244.1.11'), 'someone-else\neth0');
    const err = await createLab(spec()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LabCommandError);
    const e = err as LabCommandError;
    expect(e.command).toContain('/usr/lib/cni/bridge');
    expect(e.exitCode).not.toBe(0);
    expect(e.message).toContain('x/b');
    expect(e.message).toContain('10.244.1.11');
    expect((await listNetns()).filter((n) => n.startsWith(labNetnsPrefix(name)))).toEqual([]);
    expect(existsSync(join(stateDir, name))).toBe(false);
  });

  it('destroys a lab by name after its state file is lost', async () => {
    await createLab(spec());
    await rm(join(stateDir, name, 'lab.json'));
    expect((await listLabs({ stateDir })).find((l) => l.name === name)?.status).toBe('orphaned');
    const result = await destroyLab(name, { stateDir });
    expect(result.netns).toHaveLength(1 + 1 + 2);
    expect(result.pids).toHaveLength(2);
    expect((await listNetns()).filter((n) => n.startsWith(labNetnsPrefix(name)))).toEqual([]);
  });
});
