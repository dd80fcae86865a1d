import { spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { sampleCluster } from '../../test/support/clusters.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { until } from '../../test/support/until.ts';
import { dropLogPrefix, loggedDrop } from '../compiler/drop-log.ts';
import { normalize } from '../model/normalize.ts';
import type { ClusterPolicyRecord } from '../model/types.ts';
import { DROP_LOG, renderRule } from '../sync/render.ts';
import { dropsText, getFromSocket, parseDropsBody } from '../cli/drops.ts';
import type { Agent } from './agent.ts';
import { DropLog } from './drop-log.ts';
import { nflogReaderCommand as readerCommand } from '../sync/nflog.ts';
import { serveHealth } from './health.ts';
import { AgentMetrics } from './metrics.ts';

function capture(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { lines, logger: pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }) };
}

const NP_A = dropLogPrefix({ kind: 'np', dir: 'Ingress', policies: ['x/allow', 'x/deny'] });

describe('DropLog: attribution and aggregation', () => {
  it('names the pods and the isolating policies, aggregates a flow per interval, and logs it once', async () => {
    const { logger, lines } = capture();
    const metrics = new AgentMetrics();
    const registry = metrics.registry;
    let now = Date.parse('2026-11-30T12:00:00Z');
    const dl = new DropLog({ node: 'n1', model: sampleCluster(), logger, metrics, now: () => now });
    // y/d -> x/a TCP 5432, twice (two source ports: one flow), and once UDP 53.
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', sport: 40000, dport: 5432 });
    now += 1500;
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', sport: 40001, dport: 5432 });
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'udp', sport: 40002, dport: 53 });
    // Someone else's rule on the same group: not ours, ignored.
    dl.record({ prefix: 'calico-D|default', src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 1 });
    const drops = dl.drops();
    expect(drops).toHaveLength(2);
    expect(drops[0]).toMatchObject({
      node: 'n1',
      from: 'y/d',
      to: 'x/a',
      port: 5432,
      protocol: 'TCP',
      direction: 'Ingress',
      packets: 2,
      decision: { tier: 'NetworkPolicy', policies: ['x/allow', 'x/deny'], reason: '[NetworkPolicy] isolated by x/allow, x/deny, no rule matches' },
      namespaces: ['y', 'x'],
    });
    expect(drops[1]).toMatchObject({ protocol: 'UDP', port: 53, packets: 1 });
    // `since` returns only what changed after a sequence number.
    const seq = drops[1]!.seq;
    expect(dl.drops(seq)).toEqual([]);
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', sport: 40003, dport: 5432 });
    expect(dl.drops(seq).map((d) => [d.port, d.packets])).toEqual([[5432, 3]]);

    expect(lines).toHaveLength(0); // nothing logged before the interval ends
    dl.flush();
    const denied = lines.filter((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('denied:'));
    expect(denied).toHaveLength(2);
    expect(denied[0]).toMatchObject({ from: 'y/d', to: 'x/a', port: 5432, protocol: 'TCP', direction: 'Ingress', node: 'n1', packets: 3, seconds: 1.5 });
    expect(denied[0]!.msg).toBe('denied: y/d -> x/a 5432/TCP (ingress), 3 packets in 1.5s: [NetworkPolicy] isolated by x/allow, x/deny, no rule matches');
    // A new interval starts new flows; the old ones stay readable until the buffer is full.
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 5432 });
    expect(dl.drops().map((d) => d.packets)).toEqual([3, 1, 1]);
    // Counted per isolating policy and direction, without pod labels.
    const text = await registry.metrics();
    expect(text).toContain('policyctl_policy_denied_packets_logged_total{policy="x/deny",tier="NetworkPolicy",direction="Ingress"} 5');
    expect(text).toContain('policyctl_policy_denied_packets_logged_total{policy="x/allow",tier="NetworkPolicy",direction="Ingress"} 5');
    expect(text).not.toMatch(/pod=/);
  });

  it('the denied-packets series of a policy no longer in the cluster is removed before a new one is made', async () => {
    const metrics = new AgentMetrics();
    const m = sampleCluster();
    const dl = new DropLog({ node: 'n1', model: m, logger: capture().logger, metrics });
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 5432 });
    const series = async () => (await metrics.registry.metrics()).split('\n').filter((l) => l.startsWith('policyctl_policy_denied_packets_logged_total{')).map((l) => /policy="([^"]*)"/.exec(l)![1]);
    expect(await series()).toEqual(['x/allow', 'x/deny']);
    m.remove(m.findPolicy('x', 'deny')!.uid, 'NetworkPolicy');
    // A drop counted under a new label set (an unknown address: no policy) prunes the deleted policy's.
    dl.record({ prefix: dropLogPrefix({ kind: 'unknown', dir: 'Egress' }), src: '10.244.1.250', dst: '10.244.1.10', protocol: 'tcp', dport: 80 });
    expect(await series()).toEqual(['x/allow', '']);
  });

  it('a ClusterNetworkPolicy Deny names the tier, policy and rule; an unknown address stays an address', () => {
    const m = sampleCluster();
    const cnp = normalize({
      apiVersion: 'policy.networking.k8s.io/v1alpha2',
      kind: 'ClusterNetworkPolicy',
      metadata: { name: 'tenant-wall' },
      spec: { tier: 'Admin', priority: 7, subject: { namespaces: {} }, egress: [{ name: 'ok', action: 'Accept', to: [{ namespaces: {} }] }, { name: 'no-dns', action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }] },
    }).record as ClusterPolicyRecord;
    m.upsert(cnp);
    const dl = new DropLog({ node: 'n1', model: m, logger: capture().logger, capacity: 2 });
    dl.record({ prefix: dropLogPrefix({ kind: 'cnp', dir: 'Egress', tier: 'Admin', index: 1, name: 'tenant-wall' }), src: '10.244.1.11', dst: '8.8.8.8', protocol: 'udp', dport: 53 });
    dl.record({ prefix: dropLogPrefix({ kind: 'unknown', dir: 'Egress' }), src: '10.244.1.99', dst: '10.244.1.10', protocol: 'icmp' });
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 1 });
    const drops = dl.drops();
    // Bounded: the oldest went.
    expect(drops).toHaveLength(2);
    expect(drops[0]).toMatchObject({ from: '10.244.1.99', to: 'x/a', protocol: 'ICMP', direction: 'Egress', decision: { tier: 'none' } });
    expect(drops[0]!.port).toBeUndefined();
    const all = new DropLog({ node: 'n1', model: m, logger: capture().logger });
    all.record({ prefix: dropLogPrefix({ kind: 'cnp', dir: 'Egress', tier: 'Admin', index: 1, name: 'tenant-wall' }), src: '10.244.1.11', dst: '8.8.8.8', protocol: 'udp', dport: 53 });
    expect(all.drops()[0]).toMatchObject({
      from: 'x/b',
      to: '8.8.8.8',
      direction: 'Egress',
      decision: { tier: 'Admin', policy: 'cnp/tenant-wall', ruleIndex: 1, rule: 'no-dns', reason: '[Admin 7 cnp/tenant-wall rule "no-dns"] Deny' },
    });
  });

  it('a mid-stream pickup (--revoke-established) is attributed to no policy and says why it was dropped', () => {
    const dl = new DropLog({ node: 'n1', model: sampleCluster(), logger: capture().logger });
    dl.record({ prefix: dropLogPrefix({ kind: 'midstream', dir: 'Egress' }), src: '10.244.1.10', dst: '10.244.2.10', protocol: 'tcp', sport: 80, dport: 40000 });
    dl.record({ prefix: dropLogPrefix({ kind: 'midstream', dir: 'Ingress' }), src: '10.244.2.10', dst: '10.244.1.10', protocol: 'tcp', sport: 40000, dport: 80 });
    const [out, back] = dl.drops();
    expect(out).toMatchObject({ from: 'x/a', to: 'y/c', protocol: 'TCP', port: 40000, direction: 'Egress', decision: { tier: 'none' } });
    expect(back).toMatchObject({ from: 'y/c', to: 'x/a', port: 80, direction: 'Ingress', decision: { tier: 'none' } });
    expect(out!.decision.reason).toMatch(/conntrack does not track \(ended by --revoke-established, or its entry lost\).*without SYN/);
    // A UDP answer of a flow the agent ended (layout.ts REVOKED_SET): the same prefix, its own reason.
    dl.record({ prefix: dropLogPrefix({ kind: 'midstream', dir: 'Egress' }), src: '10.244.1.10', dst: '10.244.2.10', protocol: 'udp', sport: 53, dport: 40000 });
    const udp = dl.drops().find((d) => d.protocol === 'UDP')!;
    expect(udp).toMatchObject({ from: 'x/a', to: 'y/c', port: 40000, decision: { tier: 'none' } });
    expect(udp.decision.reason).toMatch(/^a UDP datagram to the port of a flow --revoke-established ended, from its server.*not taken up again in reverse \(for 120 s/);
  });

  it('says so when the policies isolating the pod changed since the drop', () => {
    const dl = new DropLog({ node: 'n1', model: sampleCluster(), logger: capture().logger });
    dl.record({ prefix: dropLogPrefix({ kind: 'np', dir: 'Ingress', policies: ['x/deny'] }), src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 80 });
    expect(dl.drops()[0]!.decision.reason).toMatch(/changed since \(now: x\/allow, x\/deny\)/);
  });
});

describe('/drops on the health server', () => {
  it('serves the recent drops as JSON on a unix socket, `since` filtering; 404 when the log is off', async () => {
    const dl = new DropLog({ node: 'n1', model: sampleCluster(), logger: capture().logger });
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'tcp', dport: 5432 });
    dl.record({ prefix: NP_A, src: '10.244.1.14', dst: '10.244.1.10', protocol: 'udp', dport: 53 });
    const agent = { status: () => ({ node: 'n1' }), metrics: { registry: new Registry() } } as unknown as Agent;
    const sock = join(tmpdir(), `pctl-drops-${process.pid}.sock`);
    const server = await serveHealth(agent, `unix:${sock}`, dl);
    try {
      const all = parseDropsBody('n1', await getFromSocket(sock, '/drops'));
      expect(all.node).toBe('n1');
      expect(all.drops.map((d) => `${d.from} ${d.to} ${d.port}/${d.protocol}`)).toEqual(['y/d x/a 5432/TCP', 'y/d x/a 53/UDP']);
      const later = parseDropsBody('n1', await getFromSocket(sock, `/drops?since=${all.drops[0]!.seq}`));
      expect(later.drops.map((d) => d.protocol)).toEqual(['UDP']);
      expect(dropsText([all])).toBe(
        `x/a:\n  y/d -> port 5432/TCP: ingress denied on n1, 1 packet in 0.0s (last ${all.drops[0]!.last}): [NetworkPolicy] isolated by x/allow, x/deny, no rule matches\n` +
          `  y/d -> port 53/UDP: ingress denied on n1, 1 packet in 0.0s (last ${all.drops[1]!.last}): [NetworkPolicy] isolated by x/allow, x/deny, no rule matches\n`,
      );
      expect(dropsText([all], 'z')).toBe('no denied flow recorded in namespace z\n');
    } finally {
      await new Promise((r) => server.close(r));
    }
    const off = await serveHealth(agent, `unix:${sock}`);
    try {
      await expect(getFromSocket(sock, '/drops')).rejects.toThrow(/HTTP 404: the drop log is off/);
    } finally {
      await new Promise((r) => off.close(r));
    }
  });
});

describe.runIf(kernelTestsEnabled())('DropLog on the real kernel', () => {
  let ns: TestNetns | undefined;
  let dl: DropLog | undefined;
  afterEach(async () => {
    await dl?.stop();
    ns?.remove();
  });

  it('reads the NFLOG records of our log rules within a second; the rate limit bounds a flood', async () => {
    ns = createNetns('pctl-dlog');
    // A denied UDP port on the namespace's loopback, logged and dropped by our rules as rendered.
    const rules = loggedDrop({ protocol: 'udp', dports: [{ from: 9, to: 9 }] }, 'test drop', { kind: 'np', dir: 'Ingress', policies: ['x/allow', 'x/deny'] });
    const file = join(tmpdir(), `${ns.name}.rules`);
    writeFileSync(file, `*filter\n${rules.map((r) => renderRule('OUTPUT', r)).join('\n')}\nCOMMIT\n`);
    try {
      ns.sh(`iptables-restore --noflush ${file}`);
    } finally {
      rmSync(file, { force: true });
    }
    const { logger } = capture();
    dl = new DropLog({ node: 'n1', model: sampleCluster(), logger, command: ['ip', 'netns', 'exec', ns.name, ...readerCommand(DROP_LOG.group)] });
    await dl.start();
    const sent = Date.now();
    ns.sh(`bash -c 'echo x > /dev/udp/127.0.0.1/9' || true`);
    await until(() => dl!.drops().length > 0, 'the drop in /drops', 1000);
    expect(Date.now() - sent).toBeLessThan(1000);
    expect(dl.drops()[0]).toMatchObject({ from: '127.0.0.1', to: '127.0.0.1', port: 9, protocol: 'UDP', direction: 'Ingress', packets: 1, decision: { tier: 'NetworkPolicy' } });
    // A flood of 2,000 packets: all dropped, at most the burst and the rate's share logged.
    ns.sh(`bash -c 'for i in $(seq 1 2000); do echo x > /dev/udp/127.0.0.1/9; done' 2>/dev/null || true`);
    const counters = ns.sh('iptables-save -c -t filter');
    const dropped = Number(/\[(\d+):\d+\] -A OUTPUT .* -j DROP/.exec(counters)![1]);
    expect(dropped).toBe(2001);
    await new Promise((r) => setTimeout(r, 300));
    const logged = dl.drops()[0]!.packets;
    expect(logged).toBeGreaterThan(DROP_LOG.burst / 2);
    expect(logged).toBeLessThan(2001);
    expect(logged).toBeLessThanOrEqual(DROP_LOG.burst + DROP_LOG.ratePerSecond * 5);
  });

  it('the reader ends when the process that started it is gone, freeing the group', async () => {
    ns = createNetns('pctl-dlog');
    const [python, script, group] = readerCommand(DROP_LOG.group);
    // A parent shell that starts the reader and says its pid, then is killed without a word to it.
    const parent = spawn('ip', ['netns', 'exec', ns.name, 'sh', '-c', `${python} ${script} ${group} $$ >/dev/null & echo $!; exec sleep 600`], { stdio: ['ignore', 'pipe', 'ignore'] });
    const pid = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim()))));
    expect(existsSync(`/proc/${pid}`)).toBe(true);
    await new Promise((r) => setTimeout(r, 300)); // bound to the group by now
    parent.kill('SIGKILL');
    await until(() => !existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z'), 'the orphaned reader to exit', 5000);
    // The group is free: a new reader binds it.
    const { logger, lines } = capture();
    dl = new DropLog({ node: 'n1', model: sampleCluster(), logger, command: ['ip', 'netns', 'exec', ns.name, ...readerCommand(DROP_LOG.group)] });
    await dl.start();
    expect(lines.some((l) => l.msg === 'drop log: reading the NFLOG group of our log rules')).toBe(true);
  });

  it('a second reader of the same group says so and exits', async () => {
    ns = createNetns('pctl-dlog');
    const { logger, lines } = capture();
    dl = new DropLog({ node: 'n1', model: sampleCluster(), logger, command: ['ip', 'netns', 'exec', ns.name, ...readerCommand(DROP_LOG.group)] });
    await dl.start();
    const second = new DropLog({ node: 'n1', model: sampleCluster(), logger, command: ['ip', 'netns', 'exec', ns.name, ...readerCommand(DROP_LOG.group)] });
    await second.start();
    await second.stop();
    expect(lines.some((l) => typeof l.err === 'string' && /nflog group \d+: .*another listener/.test(l.err))).toBe(true);
  });
});
