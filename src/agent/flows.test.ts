// Established flows and health on the real kernel (a test namespace): conntrack entries of an
// address that leaves the cluster are deleted, `--revoke-established` ends the connections a
// change denies (and only with it), and readiness follows bridge-nf-call-iptables and the age
// of the last good sync.

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { modelOf, node, pod, podsPeer, policy, ports, rule, sel } from '../../test/support/builders.ts';
import { agentNode, type AgentNode, type AgentOptions } from '../../test/support/agent-node.ts';
import { kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { createHash } from 'node:crypto';
import { setDigestForTests } from '../util/digest.ts';
import { listFlows, parseConntrackList, type ConntrackFlow } from '../sync/conntrack.ts';
import type { Runner } from '../sync/runner.ts';
import { folderRevision } from '../watchers/files.ts';
import { Agent } from './agent.ts';
import { deniedFlows, revokeDenied } from './flows.ts';
import { answerTuple } from '../sync/revoked-answers.ts';
import { parseLocalAddresses } from '../sync/local-addresses.ts';
import { until } from '../../test/support/until.ts';

describe('deniedFlows', () => {
  const m = modelOf(
    node('n1', '10.244.1.0/24', '192.168.50.11'),
    pod('app', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1' }),
    pod('app', 'client', { app: 'client' }, { ip: '10.244.2.10', node: 'n2' }),
    pod('app', 'other', { app: 'other' }, { ip: '10.244.2.11', node: 'n2' }),
    policy('app', 'allow', sel({ app: 'web' }), { ingress: [rule([podsPeer('app', sel({ app: 'client' }))])] }),
  );
  const f = (src: string, dst: string, dport: number, extra: Partial<ConntrackFlow> = {}): ConntrackFlow => ({ protocol: 'tcp', src, dst, sport: 40000, dport, ...extra });
  /** web admits the client on TCP 80 only. */
  const clientOnTcp80 = () =>
    modelOf(
      node('n1', '10.244.1.0/24', '192.168.50.11'),
      pod('app', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1' }),
      pod('app', 'client', { app: 'client' }, { ip: '10.244.2.10', node: 'n2' }),
      policy('app', 'tcp-80', sel({ app: 'web' }), { ingress: [rule([podsPeer('app', sel({ app: 'client' }))], ports(80))] }),
    );

  it('judges connections with a local pod at either end, by the backend behind a Service', () => {
    const flows = [
      f('10.244.2.10', '10.244.1.10', 80), // client -> web: allowed
      f('10.244.2.11', '10.244.1.10', 80), // other -> web: denied
      f('10.244.2.11', '10.96.0.10', 80, { replySrc: '10.244.1.10', replyDst: '10.244.2.11' }), // other -> Service -> web: denied
      f('10.244.2.11', '10.244.2.10', 80), // not local: not ours to judge
      f('10.244.2.11', '10.244.1.10', 0, { protocol: 'icmp' }), // a protocol without ports, other -> web: denied too
      f('10.244.1.77', '10.244.2.10', 80), // unknown address of the node's pod CIDR... not a local pod: the release path handles it
    ];
    expect(deniedFlows(m, 'n1', flows).map((x) => `${x.src}>${x.dst}${x.protocol === 'tcp' ? '' : `/${x.protocol}`}`)).toEqual(['10.244.2.11>10.244.1.10', '10.244.2.11>10.96.0.10', '10.244.2.11>10.244.1.10/icmp']);
  });

  it('judges a protocol without ports (ICMP, GRE, one conntrack only numbers) as only rules without ports allow it', () => {
    const flows = [f('10.244.2.10', '10.244.1.10', 0, { protocol: 'icmp', dport: undefined, sport: undefined }), f('10.244.2.10', '10.244.1.10', 0, { protocol: '47', dport: undefined, sport: undefined }), f('10.244.2.10', '10.244.1.10', 80)];
    // The client may reach web on TCP 80 only: its ICMP and GRE flows are denied, its TCP is not.
    expect(deniedFlows(clientOnTcp80(), 'n1', flows)).toEqual([flows[0], flows[1]]);
    // In the first model the client may reach web on every protocol: nothing to end.
    expect(deniedFlows(m, 'n1', flows.map((x) => ({ ...x, src: '10.244.2.10' })))).toEqual([]);
  });

  it("judges a Service's connection on the backend's port (the targetPort), not the Service's", () => {
    const viaService = (servicePort: number, targetPort: number) =>
      f('10.244.2.10', '10.96.0.10', servicePort, { replySrc: '10.244.1.10', replyDst: '10.244.2.10', replySport: targetPort, replyDport: 40000 });
    const flows = [viaService(80, 8443), viaService(8080, 80), f('10.244.2.10', '10.244.1.10', 80, { replySrc: '10.244.1.10', replySport: 80 })];
    // Service port 80 to targetPort 8443: denied (8443 is not allowed); 8080 to 80: allowed.
    expect(deniedFlows(clientOnTcp80(), 'n1', flows)).toEqual([flows[0]]);
  });

  it("judges the node's bridge address as the node's: its probes are the node's own traffic, a pod's connections to it meet the pod's egress only", () => {
    const flows = [
      f('10.244.1.1', '10.244.1.10', 80), // the bridge's address (kubelet's probes) -> web: the node's own traffic
      f('10.244.1.10', '10.244.1.1', 10250), // web -> the bridge's address: web's egress allows it (not isolated)
      f('10.244.1.2', '10.244.1.10', 80), // another unprogrammed address of the pod CIDR -> web: nothing
      f('10.244.2.11', '10.244.1.10', 80), // other -> web: denied
    ];
    expect(deniedFlows(m, 'n1', flows).map((x) => `${x.src}>${x.dst}`)).toEqual(['10.244.1.2>10.244.1.10', '10.244.2.11>10.244.1.10']);
    // Under egress isolation with no rule for the node, the pod's connection to the bridge is denied, as the rules deny it.
    const isolated = modelOf(
      node('n1', '10.244.1.0/24', '192.168.50.11'),
      pod('app', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1' }),
      policy('app', 'no-egress', sel({ app: 'web' }), { types: ['Egress'] }),
    );
    expect(deniedFlows(isolated, 'n1', flows.slice(0, 2)).map((x) => `${x.src}>${x.dst}`)).toEqual(['10.244.1.10>10.244.1.1']);
  });

  it("leaves alone the connections the node opens from its own addresses, those the model does not name too", () => {
    const flows = [
      f('172.16.9.9', '10.244.1.10', 80), // another address of the node (docker0, say) -> web: the semantics judge it an outside host
      f('10.244.2.11', '10.244.1.10', 80), // other -> web: denied
    ];
    expect(deniedFlows(m, 'n1', flows).map((x) => `${x.src}>${x.dst}`)).toEqual(['172.16.9.9>10.244.1.10', '10.244.2.11>10.244.1.10']);
    const own = parseLocalAddresses(
      '1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n' +
        '2: eth0    inet 192.168.50.11/24 brd 192.168.50.255 scope global eth0\\       valid_lft forever preferred_lft forever\n' +
        '3: cni0    inet 10.244.1.1/24 brd 10.244.1.255 scope global cni0\\       valid_lft forever preferred_lft forever\n' +
        '4: docker0    inet 172.16.9.9/16 brd 172.16.255.255 scope global docker0\\       valid_lft forever preferred_lft forever\n',
    );
    expect([...own]).toEqual(['127.0.0.1', '192.168.50.11', '10.244.1.1', '172.16.9.9']);
    expect(deniedFlows(m, 'n1', flows, own).map((x) => `${x.src}>${x.dst}`)).toEqual(['10.244.2.11>10.244.1.10']);
  });
});

describe('revokeDenied: the answers of a revoked UDP flow are held back before its entry goes', () => {
  const m = modelOf(
    node('n1', '10.244.1.0/24', '192.168.50.11'),
    pod('app', 'web', { app: 'web' }, { ip: '10.244.1.10', node: 'n1' }),
    pod('app', 'other', { app: 'other' }, { ip: '10.244.2.11', node: 'n2' }),
    policy('app', 'deny', sel({ app: 'web' }), { ingress: [] }),
  );
  const conntrack = [
    'ipv4 2 udp 17 170 src=10.244.2.11 dst=10.244.1.10 sport=40000 dport=53 src=10.244.1.10 dst=10.244.2.11 sport=53 dport=40000 [ASSURED] mark=0 use=1',
    // Through a Service: the answers come from the backend (the reply's source).
    'ipv4 2 udp 17 170 src=10.244.2.11 dst=10.96.0.10 sport=40001 dport=53 src=10.244.1.10 dst=10.244.2.11 sport=5353 dport=40001 [ASSURED] mark=0 use=1',
    'ipv4 2 tcp 6 431999 ESTABLISHED src=10.244.2.11 dst=10.244.1.10 sport=40002 dport=80 src=10.244.1.10 dst=10.244.2.11 sport=80 dport=40002 [ASSURED] mark=0 use=1',
  ].join('\n');
  /** A runner that answers conntrack -L and ip addr, records every call, and fails ipset when told. */
  const recorder = (ipsetExit = 0) => {
    const calls: string[] = [];
    const runner: Runner = {
      run: async (cmd, args, opts) => {
        calls.push(`${cmd} ${args.join(' ')}${opts?.input ? ` <<${opts.input}` : ''}`);
        if (cmd === 'conntrack' && args[0] === '-L') return { exitCode: 0, stdout: conntrack, stderr: '' };
        if (cmd === 'ipset') return { exitCode: ipsetExit, stdout: '', stderr: ipsetExit ? "ipset v7.17: The set with the given name does not exist" : '' };
        return { exitCode: 0, stdout: '', stderr: cmd === 'conntrack' ? '1 flow entries have been deleted.' : '' };
      },
    };
    return { calls, runner };
  };

  it("answerTuple: the client, its port and the server (the reply tuple's destination, port and source); none for other protocols", () => {
    expect(parseConntrackList(conntrack).map(answerTuple)).toEqual(['10.244.2.11,udp:40000,10.244.1.10', '10.244.2.11,udp:40001,10.244.1.10', undefined]);
  });

  it('holds the UDP answer tuples in one ipset call, then deletes each entry', async () => {
    const { calls, runner } = recorder();
    const r = await revokeDenied(m, 'n1', runner);
    expect(r.denied).toHaveLength(3);
    expect(r.holdError).toBeUndefined();
    const writes = calls.filter((c) => !c.startsWith('conntrack -L') && !c.startsWith('ip '));
    expect(writes[0]).toBe('ipset restore -exist <<add PCTL-revoked 10.244.2.11,udp:40000,10.244.1.10\nadd PCTL-revoked 10.244.2.11,udp:40001,10.244.1.10\n');
    expect(writes.slice(1).map((c) => c.split(' ').slice(0, 3).join(' '))).toEqual(['conntrack -D -p', 'conntrack -D -p', 'conntrack -D -p']);
  });

  it('when the tuples cannot be held, still ends the flows, and says why', async () => {
    const { calls, runner } = recorder(1);
    const r = await revokeDenied(m, 'n1', runner);
    expect(r.holdError).toMatch(/answer tuple\(s\) of revoked UDP flows to PCTL-revoked failed with exit code 1: ipset v7.17: The set with the given name does not exist/);
    expect(calls.filter((c) => c.startsWith('conntrack -D'))).toHaveLength(3);
  });
});

const PODS = `
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: cli, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.244.2.10}
`;
const DENY = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: app}
spec: {podSelector: {}, policyTypes: [Ingress]}
`;



describe.runIf(kernelTestsEnabled())('Agent: established flows and health, on the real kernel', () => {
  let node: AgentNode;
  let net: TestNetns;
  let dir: string;
  let bridgeNf: string;

  beforeEach(() => {
    node = agentNode('pctl-flows', { 'pods.yaml': PODS });
    ({ net, dir, bridgeNf } = node);
  });
  let releaseStuck = () => {};
  afterEach(async () => {
    releaseStuck();
    await node.remove();
  });

  const makeAgent = (runner: Runner, extra: Partial<AgentOptions> = {}): Agent => node.agent({ runner, pollMs: 100, extra });

  const insert = (src: string, dst: string, proto: 'tcp' | 'udp', sport: number, dport: number) =>
    net.sh(`conntrack -I -s ${src} -d ${dst} -p ${proto} --sport ${sport} --dport ${dport} ${proto === 'tcp' ? '--state ESTABLISHED ' : ''}--timeout 300 2>&1`);
  const flows = async () => (await listFlows(net.runner)).map((f) => `${f.protocol} ${f.src}:${f.sport} > ${f.dst}:${f.dport}`).sort();

  it('deletes the connections of a pod address that leaves the cluster once its removal is in force, and no other', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    insert('10.244.2.10', '10.244.1.10', 'udp', 4000, 53);
    insert('10.244.1.10', '10.244.2.10', 'tcp', 4001, 80);
    insert('10.244.2.10', '10.244.2.99', 'udp', 4002, 53);
    expect(await flows()).toHaveLength(3);
    // The web pod goes: its address may be given to another pod, which must not inherit them.
    writeFileSync(join(dir, 'pods.yaml'), PODS.split('---').filter((d) => !d.includes('name: web')).join('---'));
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the removal to be applied');
    expect(await flows()).toEqual(['udp 10.244.2.10:4002 > 10.244.2.99:53']);
    expect(net.sh('ipset list PCTL-programmed')).not.toContain('10.244.1.10');
    expect(await a.metrics.registry.getSingleMetricAsString('policyctl_conntrack_entries_deleted_total')).toMatch(/reason="address-released"} 2/);
  });

  it('at start, deletes the connections of pod-CIDR addresses no pod holds (released while no agent watched), and no other (the bridge\'s address is the node\'s)', async () => {
    insert('10.244.2.10', '10.244.1.77', 'udp', 4000, 53); // 10.244.1.77: in n1's pod CIDR, no pod
    insert('10.244.2.10', '10.244.1.10', 'udp', 4001, 53); // web
    insert('10.244.2.10', '192.168.7.7', 'udp', 4002, 53); // outside every pod CIDR
    // The bridge's address (the pod CIDR's first) is the node's: kubelet's probe of web, web's
    // connection to a node-local service. Both stay.
    insert('10.244.1.1', '10.244.1.10', 'tcp', 4003, 8080);
    insert('10.244.1.10', '10.244.1.1', 'udp', 4004, 53);
    const a = makeAgent(net.runner);
    await a.start();
    expect(await flows()).toEqual(['tcp 10.244.1.1:4003 > 10.244.1.10:8080', 'udp 10.244.1.10:4004 > 10.244.1.1:53', 'udp 10.244.2.10:4001 > 10.244.1.10:53', 'udp 10.244.2.10:4002 > 192.168.7.7:53']);
  });

  it('an address two pods claim is in no set and not programmed until one goes; the conflict is reported', async () => {
    const a = makeAgent(net.runner);
    await a.start();
    insert('10.244.2.10', '10.244.1.10', 'udp', 4000, 53);
    const twin = `
---
apiVersion: v1
kind: Pod
metadata: {name: twin, namespace: other, labels: {app: web}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.10}
`;
    writeFileSync(join(dir, 'twin.yaml'), twin);
    let rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the twin to be applied');
    expect(net.sh('ipset save')).not.toContain('10.244.1.10');
    expect(await a.metrics.registry.getSingleMetricAsString('policyctl_address_conflicts')).toMatch(/policyctl_address_conflicts 1/);
    // The address left every set: its old flows went with it.
    expect(await flows()).toEqual([]);
    rmSync(join(dir, 'twin.yaml'));
    rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the twin removal to be applied');
    expect(net.sh('ipset list PCTL-programmed')).toContain('10.244.1.10');
    expect(await a.metrics.registry.getSingleMetricAsString('policyctl_address_conflicts')).toMatch(/policyctl_address_conflicts 0/);
  });

  it('reports a forced chain-name collision (logged, gauge), whose pods stay isolated', async () => {
    // Every policy chain gets one name: the deny and the allow chains of web and other collide.
    setDigestForTests((text, use) => (use === 'chain' && text.includes('ingress') ? new Uint8Array(32) : new Uint8Array(createHash('sha256').update(text).digest())));
    try {
      writeFileSync(join(dir, 'deny.yaml'), DENY);
      writeFileSync(
        join(dir, 'open.yaml'),
        `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open, namespace: other}
spec: {podSelector: {}, ingress: [{}]}
---
apiVersion: v1
kind: Pod
metadata: {name: o, namespace: other}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.11}
`,
      );
      const a = makeAgent(net.runner);
      await a.start();
      expect(await a.metrics.registry.getSingleMetricAsString('policyctl_name_collisions')).toMatch(/policyctl_name_collisions 1/);
      expect(net.sh('iptables-save -t filter')).toMatch(/-A PCTL-IX-\S+ .*-j DROP/);
    } finally {
      setDigestForTests(undefined);
    }
  });

  for (const revoke of [true, false]) {
    it(`${revoke ? 'with' : 'without'} --revoke-established, connections a new policy denies ${revoke ? 'end within 1 s' : 'keep their entries'}`, async () => {
      const a = makeAgent(net.runner, { revokeEstablished: revoke });
      await a.start();
      // Revoke mode lays the node out to drop mid-stream pickups (layout.ts MIDSTREAM_CHAIN), so a
      // deleted entry is not taken up again by the next packet of either end; only in that mode.
      const midstream = /^-A PCTL-FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW .*-j PCTL-MIDSTREAM$/m;
      if (revoke) expect(net.sh('iptables-save -t filter')).toMatch(midstream);
      else expect(net.sh('iptables-save -t filter')).not.toContain('PCTL-MIDSTREAM');
      insert('10.244.2.10', '10.244.1.10', 'tcp', 4001, 80);
      insert('10.244.2.10', '10.244.1.10', 'udp', 4002, 53);
      insert('10.244.1.10', '10.244.2.10', 'tcp', 4003, 80); // egress of web: not denied by an ingress policy
      // The node's own connection to web (a kubelet probe from the bridge's address): not judged.
      net.sh('ip addr add 10.244.1.1/32 dev lo');
      insert('10.244.1.1', '10.244.1.10', 'tcp', 4004, 80);
      writeFileSync(join(dir, 'deny.yaml'), DENY);
      const rev = await folderRevision(dir);
      await until(() => a.status().revision === rev, 'the policy to be applied');
      if (revoke) {
        // The agent records a revision as applied only after the entries of the flows it denies
        // are gone: they go with the sync that puts the policy in force, not a resync later.
        expect(await flows()).toEqual(['tcp 10.244.1.10:4003 > 10.244.2.10:80', 'tcp 10.244.1.1:4004 > 10.244.1.10:80']);
      } else {
        await new Promise((r) => setTimeout(r, 300));
        expect(await flows()).toHaveLength(4);
      }
    });
  }

  it('with --revoke-established, a judging that failed is done again at the next resync, which writes nothing', async () => {
    // `conntrack -L` fails once, in the sync that puts the policy in force.
    let failNext = false;
    const runner: Runner = {
      run: (cmd, args, opts) => {
        if (failNext && cmd === 'conntrack' && args[0] === '-L') {
          failNext = false;
          return Promise.resolve({ exitCode: 1, stdout: '', stderr: 'conntrack v1.4.7 (conntrack-tools): injected failure' });
        }
        return net.runner.run(cmd, args, opts);
      },
    };
    const a = makeAgent(runner, { revokeEstablished: true, resyncMs: 300 });
    await a.start();
    insert('10.244.2.10', '10.244.1.10', 'tcp', 4001, 80);
    failNext = true;
    writeFileSync(join(dir, 'deny.yaml'), DENY);
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the policy to be applied');
    expect(failNext).toBe(false); // the failure happened
    // The entry goes with a later resync, though that one writes nothing.
    await until(async () => (await flows()).length === 0, 'the denied connection to end after the failure');
  });

  it('with --revoke-established and the verdict cache, a sync whose every step landed but whose flush failed still ends the connections it denies', async () => {
    // The flush of PCTL-verdicts fails twice (the apply's, then its retry within the same apply),
    // in the sync that puts the policy in force: the sync fails after the rules landed, and the
    // retry finds nothing left to write.
    let failures = 0;
    const runner: Runner = {
      run: (cmd, args, opts) => {
        if (failures > 0 && opts?.input?.includes('flush PCTL-verdicts')) {
          failures--;
          return Promise.resolve({ exitCode: 1, stdout: '', stderr: 'ipset v7.17: injected failure' });
        }
        return net.runner.run(cmd, args, opts);
      },
    };
    const a = makeAgent(runner, { revokeEstablished: true, verdictCache: true, backoffMinMs: 100, backoffMaxMs: 100 });
    await a.start();
    insert('10.244.2.10', '10.244.1.10', 'tcp', 4001, 80);
    failures = 2;
    writeFileSync(join(dir, 'deny.yaml'), DENY);
    const rev = await folderRevision(dir);
    await until(() => a.status().revision === rev, 'the policy to be applied');
    expect(failures).toBe(0); // both failures happened
    expect(await flows()).toEqual([]);
  });

  it('readiness follows bridge-nf-call-iptables both ways, read on every resync', async () => {
    const a = makeAgent(net.runner, { resyncMs: 100 });
    await a.start();
    expect(a.status().ready).toBe(true);
    writeFileSync(bridgeNf, '0\n');
    await until(() => !a.status().ready, 'not ready');
    expect(a.status().reasons).toContain('net.bridge.bridge-nf-call-iptables is not 1');
    writeFileSync(bridgeNf, '1\n');
    await until(() => a.status().ready, 'ready again');
  });

  it('starts with bridge-nf-call-iptables at 0: not ready, and ready soon after it is set to 1', async () => {
    writeFileSync(bridgeNf, '0\n');
    const a = makeAgent(net.runner, { resyncMs: 100 });
    await a.start();
    expect(a.status().ready).toBe(false);
    writeFileSync(bridgeNf, '1\n');
    await until(() => a.status().ready, 'ready', 2000);
  });

  it('with setBridgeNf, sets a 0 back to 1 and stays ready', async () => {
    const a = makeAgent(net.runner, { resyncMs: 100, setBridgeNf: true });
    await a.start();
    writeFileSync(bridgeNf, '0\n');
    await until(() => readFileSync(bridgeNf, 'utf8').trim() === '1', 'the agent to set it back');
    expect(a.status().ready).toBe(true);
  });

  it('with setBridgeNf but no br_netfilter (the file cannot be written): not ready, with the reason', async () => {
    const a = makeAgent(net.runner, { resyncMs: 100, setBridgeNf: true, bridgeNfPath: join(dir, 'no-such-dir', 'bridge-nf-call-iptables') });
    await a.start();
    expect(a.status().ready).toBe(false);
    expect(a.status().reasons).toContain('net.bridge.bridge-nf-call-iptables is not 1');
  });

  it('turns not ready when the last good sync is too old (a sync that hangs)', async () => {
    let hang = false;
    const stuck: (() => void)[] = [];
    const runner: Runner = {
      run: (cmd, args, opts) =>
        hang ? new Promise((resolve) => stuck.push(() => resolve({ stdout: '', stderr: 'released by the test', exitCode: 1 }))) : net.runner.run(cmd, args, opts),
    };
    releaseStuck = () => {
      hang = false;
      for (const r of stuck.splice(0)) r();
    };
    const a = makeAgent(runner, { resyncMs: 100, staleAfterMs: 400 });
    await a.start();
    expect(a.status().ready).toBe(true);
    hang = true;
    await until(() => !a.status().ready, 'not ready', 3000);
    expect(a.status().reasons.join(';')).toMatch(/last good sync \d+ s ago/);
    // Its status file (the lab reads it) carries when it was written and the resync interval.
    expect(a.status()).toMatchObject({ resyncMs: 100 });
    expect(Date.parse(a.status().updatedAt)).toBeGreaterThan(Date.now() - 1000);
  });
});
