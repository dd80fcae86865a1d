import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { CaseRunner, cellKey, listCaseFiles, loadCase } from '../../test/support/conformance.ts';
import { createNetns, kernelTestsEnabled } from '../../test/support/netns.ts';
import { runCli } from '../../test/support/cli.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tempDir(files: Record<string, string>): string {
  const d = mkdtempSync(join(tmpdir(), 'policyctl-cli-'));
  dirs.push(d);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
  return d;
}

const run = runCli;

const CLUSTER = `
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: prod, labels: {env: prod}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: dev, labels: {env: dev}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: prod, labels: {app: web}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
  status: {phase: Running, podIP: 10.244.1.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: prod, labels: {app: client}}
  spec: {nodeName: n2, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.244.2.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: intruder, namespace: dev, labels: {app: client}}
  spec: {nodeName: n2, containers: [{name: c}]}
  status: {phase: Running, podIP: 10.244.2.11}
`;

const POLICIES = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: prod}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
`;

describe('policyctl reach', () => {
  // Done-when of the core issue: the JSON contract reproduces every off-diagonal cell of every
  // conformance case, through the real command on manifests written to disk.
  it.each(listCaseFiles().map((f) => [f.split('/').pop()!, f] as const))('reproduces %s', async (_n, file) => {
    for (const step of new CaseRunner(loadCase(file)).steps()) {
      const dir = tempDir({ 'objects.yaml': step.objects.map((o) => stringify(o)).join('---\n') });
      for (const probe of step.probes) {
        const r = await run(['reach', '-f', dir, '--port', String(probe.port), '--protocol', probe.protocol, '-o', 'json']);
        expect(r.code, r.err).toBe(0);
        const results = JSON.parse(r.out).results as { from: string; to: string; port: number; protocol: string; allowed: boolean }[];
        expect(results).toHaveLength(81); // every ordered pair, self included
        expect(results.every((x) => x.port === probe.port && x.protocol === probe.protocol)).toBe(true);
        const got = new Map(results.map((x) => [cellKey(x.from, x.to), x.allowed]));
        const wrong = [...probe.matrix].filter(([cell, want]) => cell.split('|')[0] !== cell.split('|')[1] && got.get(cell) !== want);
        expect(wrong, `step ${step.index} ${probe.port}/${probe.protocol}`).toEqual([]);
      }
    }
  });

  it('prints a grid, and every declared port when --port is absent', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES });
    const r = await run(['reach', '-f', dir]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('8080/TCP');
    const row = r.out.split('\n').find((l) => l.startsWith('dev/intruder'))!;
    expect(row.split(/\s+/).slice(1)).toEqual(['-', '-', 'X']); // columns dev/intruder, prod/client, prod/web
    const json = JSON.parse((await run(['reach', '-f', dir, '-o', 'json'])).out);
    expect(json.results).toHaveLength(3); // only prod/web declares a port: 3 sources x 1 port
  });
});

describe('policyctl explain', () => {
  it('says why an allowed peer is allowed and a denied peer is denied, naming policy and rule', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES });
    const ok = await run(['explain', 'pod/prod/web', '-f', dir, '--from', 'pod/prod/client']);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toContain('Flow prod/client -> prod/web 8080/TCP: ALLOWED');
    expect(ok.out).toContain('by prod/allow-client ingress rule 0');
    expect(ok.out).toContain('named port http/TCP resolves to 8080 on prod/web');
    const no = await run(['explain', '-n', 'prod', 'web', '-f', dir, '--from', 'pod/dev/intruder', '--port', '8080']);
    expect(no.out).toContain('Flow dev/intruder -> prod/web 8080/TCP: DENIED');
    expect(no.out).toContain('isolated by prod/allow-client, prod/deny-all, no rule matches');
    expect(no.out).toContain('podSelector applies only in namespace prod; pod is in dev');
  });

  it('shows the selector requirement by requirement, defaulted policyTypes, and resolved peers', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES });
    const r = await run(['explain', 'pod/prod/web', '-f', dir]);
    expect(r.out).toContain('Ingress  isolated by prod/allow-client, prod/deny-all');
    expect(r.out).toContain('match    app=web (matchLabels; pod has app=web)');
    expect(r.out).toContain('policyTypes: Ingress (defaulted: policyTypes absent)');
    expect(r.out).toContain('from: pods matching app=client in namespace prod -> prod/client');
    const json = JSON.parse((await run(['explain', 'pod/prod/web', '-f', dir, '-o', 'json'])).out);
    expect(json.isolation[0]).toEqual({ direction: 'Ingress', isolated: true, by: ['prod/allow-client', 'prod/deny-all'] });
  });

  it('reads standard input with -f -', async () => {
    const r = await run(['explain', 'pod/prod/web', '-f', '-'], `${CLUSTER}\n---\n${POLICIES}`);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('Pod:         prod/web');
  });
});

describe('bad input', () => {
  const BROKEN = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-ports, namespace: prod}
spec:
  podSelector: {matchLabels: {app: client}}
  ingress:
  - ports: [{endPort: 90}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-except, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]
---
kind: Pod
metadata: {name: [unclosed
`;

  it('reports file, object, field and value; loads and enforces everything else', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES, 'broken.yaml': BROKEN });
    const r = await run(['reach', '-f', dir, '--port', '8080', '-o', 'json']);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/broken\.yaml:\d+: networkpolicy\/prod\/bad-ports: spec\.ingress\[0\]\.ports\[0\]\.endPort: .*90/);
    expect(r.err).toMatch(/broken\.yaml:\d+: networkpolicy\/prod\/bad-except: spec\.egress\[0\]\.to\[0\]\.ipBlock\.except\[0\]: .*192\.168\.0\.0\/16/);
    expect(r.err).toMatch(/broken\.yaml:\d+:.*(YAML|yaml|flow|collection)/);
    const cells = new Map((JSON.parse(r.out).results as { from: string; to: string; allowed: boolean }[]).map((x) => [`${x.from}>${x.to}`, x.allowed]));
    // The valid policies still apply; the invalid ones isolate what they select, allowing nothing.
    expect(cells.get('prod/client>prod/web')).toBe(true); // allow-client still allows it
    expect(cells.get('dev/intruder>prod/web')).toBe(false);
    // bad-except would have given web egress rules: invalid, it isolates web's egress instead.
    expect(cells.get('prod/web>prod/client')).toBe(false);
  });

  it('keeps pods selected by an invalid policy isolated (fail closed)', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'broken.yaml': BROKEN });
    const r = await run(['explain', 'pod/prod/client', '-f', dir, '--from', 'pod/dev/intruder', '--port', '80']);
    expect(r.out).toContain('[INVALID: isolates the pods it selects and allows nothing]');
    expect(r.out).toContain('DENIED');
    const c = await run(['compile', '-f', dir, '--node', 'n2']);
    expect(c.out).toMatch(/default deny ingress: isolated by prod\/bad-ports/);
  });

  it('exit codes mean something', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'broken.yaml': BROKEN });
    expect((await run(['explain', 'pod/prod/nope', '-f', dir])).code).toBe(1);
    expect((await run(['explain', 'pod/prod/web', '-f', dir, '--bogus'])).code).toBe(2);
    expect((await run(['reach', '-f', dir, '--port', '99999'])).code).toBe(2);
    expect((await run(['reach', '-f', dir, '--strict'])).code).toBe(3);
    expect((await run(['reach', '-f', join(dir, 'missing.yaml')])).code).toBe(1);
    expect((await run(['--help'])).code).toBe(0);
    const nf = await run(['explain', 'pod/web', '-f', dir]);
    expect(nf.err).toContain('pod/default/web not found; did you mean pod/prod/web?');
  });
});

describe('policyctl compile', () => {
  it('prints both payloads, and JSON', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES });
    const r = await run(['compile', '-f', dir, '--node', 'n1']);
    expect(r.out).toContain('# ipset restore payload');
    expect(r.out).toContain('-I FORWARD 1');
    const json = JSON.parse((await run(['compile', '-f', dir, '--node', 'n1', '-o', 'json'])).out);
    expect(json.node).toBe('n1');
    expect(json.chains.length).toBeGreaterThan(3);
  });

  it('agent --pod-cidr wider than /8 is a usage error naming the flag and the value: every address in it would be taken for a pod', async () => {
    const r = await run(['agent', '--node', 'n1', '--manifests', 'examples', '--pod-cidr', '0.0.0.0/0', '--dry-run']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('--pod-cidr must be an IPv4 CIDR such as 10.244.1.0/24, got "0.0.0.0/0": a node\'s pod CIDR must be /8 or narrower');
  });

  it('--revoke-established: the layout of an agent with that flag (PCTL-MIDSTREAM after the replies rule, the set of held UDP answers, PCTL-OUTPUT for the node\'s own packets), and nothing else changes', async () => {
    const base = ['compile', '-f', 'examples', '--node', 'node-1'];
    const plain = await run(base);
    const revoke = await run([...base, '--revoke-established']);
    expect(revoke.code).toBe(0);
    expect(revoke.out).toMatch(/^-A PCTL-FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW .*-j PCTL-MIDSTREAM$/m);
    expect(revoke.out).toMatch(/^-A PCTL-MIDSTREAM -s 10\.244\.1\.0\/24 .*--nflog-prefix "PCTL E midstream" /m);
    expect(revoke.out).toMatch(/^-I OUTPUT 1 -m comment --comment "PCTL: mid-stream TCP of the node to its pods \(--revoke-established\), keep first" -j PCTL-OUTPUT$/m);
    expect(revoke.out).toMatch(/^create PCTL-revoked hash:ip,port,ip family inet hashsize 1024 maxelem 1048576 timeout 120$/m);
    expect(revoke.out).toMatch(/^-A PCTL-FORWARD -p udp -m set --match-set PCTL-revoked dst,dst,src .*-j PCTL-MIDSTREAM$/m);
    expect(revoke.out.split('\n').filter((l) => !/PCTL-MIDSTREAM|PCTL-OUTPUT|PCTL-revoked/.test(l))).toEqual(plain.out.split('\n'));
  });

  it("shows the agent's default layout, the verdict cache on; --no-verdict-cache leaves out its set and its four rules, and nothing else", async () => {
    const base = ['compile', '-f', 'examples', '--node', 'node-1'];
    const cached = await run(base);
    const off = await run([...base, '--no-verdict-cache']);
    expect(off.code).toBe(0);
    expect(cached.out).toMatch(/^create PCTL-verdicts hash:ip,port,ip family inet hashsize 1024 maxelem 65536 timeout 10$/m);
    const rules = cached.out.split('\n').filter((l) => l.includes('PCTL-verdicts') && l.startsWith('-A '));
    expect(rules).toHaveLength(4);
    expect(rules.every((l) => l.startsWith('-A PCTL-FORWARD '))).toBe(true);
    expect(cached.out.split('\n').filter((l) => !l.includes('PCTL-verdicts'))).toEqual(off.out.split('\n'));
  });

  it('agent --dry-run writes the verdict cache unless --no-verdict-cache (the flag reaches the agent)', { skip: !kernelTestsEnabled() }, async () => {
    const net = createNetns('pctl-cli-vc');
    try {
      const bin = new URL('../../bin/policyctl.js', import.meta.url).pathname;
      const node = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
      const dry = (extra: string[]) => spawnSync('ip', ['netns', 'exec', net.name, node, bin, 'agent', '--node', 'node-1', '--manifests', 'examples', '--dry-run', ...extra], { encoding: 'utf8', timeout: 30_000 });
      const on = dry([]);
      const off = dry(['--no-verdict-cache']);
      expect(on.status, on.stderr).toBe(0);
      expect(off.status, off.stderr).toBe(0);
      expect(on.stdout).toContain('create PCTL-verdicts hash:ip,port,ip');
      expect(on.stdout).toMatch(/-j SET --add-set PCTL-verdicts src,dst,dst --exist --timeout 10/);
      expect(off.stdout).not.toContain('PCTL-verdicts');
    } finally {
      net.remove();
    }
  });
});

describe('ClusterNetworkPolicies: explain shows the tier path', () => {
  const TIERS = `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: tenant-wall}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  - {name: no-dev, action: Deny, from: [{namespaces: {matchLabels: {env: dev}}}], protocols: [{tcp: {destinationPort: {number: 9000}}}]}
  - {name: no-cross, action: Pass, from: [{namespaces: {}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default-deny}
spec:
  tier: Baseline
  priority: 50
  subject: {namespaces: {}}
  egress:
  - {name: deny-all, action: Deny, to: [{networks: [0.0.0.0/0]}]}
`;

  it('an Admin Deny, an Admin Pass landing on a NetworkPolicy, a Baseline Deny', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES, 't.yaml': TIERS });
    const deny = await run(['explain', 'pod/prod/web', '-f', dir, '--from', 'pod/dev/intruder', '--port', '9000']);
    expect(deny.code, deny.err).toBe(0);
    expect(deny.out).toContain('Flow dev/intruder -> prod/web 9000/TCP: DENIED');
    expect(deny.out).toContain('ingress: [Admin 10 cnp/tenant-wall rule "no-dev"] Deny -> DENIED');
    expect(deny.out).toContain('Admin 10 cnp/tenant-wall');
    const pass = await run(['explain', 'pod/prod/web', '-f', dir, '--from', 'pod/dev/intruder', '--port', '8080']);
    expect(pass.out).toContain('ingress: [Admin 10 cnp/tenant-wall rule "no-cross"] Pass -> [NetworkPolicy] isolated by prod/allow-client, prod/deny-all, no rule matches -> DENIED');
    const ok = await run(['explain', 'pod/prod/web', '-f', dir, '--from', 'pod/prod/client', '--port', '8080']);
    expect(ok.out).toContain('ingress: [Admin 10 cnp/tenant-wall rule "no-cross"] Pass -> [NetworkPolicy] allowed by prod/allow-client ingress rule 0 -> ALLOWED');
    // The client's own egress: no NetworkPolicy isolates it, so the Baseline Deny decides.
    expect(ok.out).toContain('egress: [NetworkPolicy] not isolated for egress -> [Baseline 50 cnp/default-deny rule "deny-all"] Deny -> DENIED');
    expect(ok.out).toContain('Flow prod/client -> prod/web 8080/TCP: DENIED');
  });

  it('-o json gives the path as data; reach keeps its JSON contract', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES, 't.yaml': TIERS });
    const r = await run(['explain', 'pod/prod/web', '-f', dir, '--from', 'pod/dev/intruder', '--port', '8080', '-o', 'json']);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out);
    expect(json.clusterPolicies.map((c: { name: string; tier: string }) => [c.tier, c.name])).toEqual([
      ['Admin', 'tenant-wall'],
      ['Baseline', 'default-deny'],
    ]);
    const ingress = json.flows[0].verdict.ingress;
    expect(ingress.path.map((s: { tier: string; outcome: string }) => [s.tier, s.outcome])).toEqual([
      ['Admin', 'Pass'],
      ['NetworkPolicy', 'denied'],
    ]);
    expect(ingress.decidedBy).toEqual({ tier: 'NetworkPolicy' });
    expect(json.flows[0].verdict.egress.decidedBy).toMatchObject({ tier: 'Baseline', policy: 'default-deny', ruleIndex: 0, ruleName: 'deny-all', action: 'Deny' });
    const reach = JSON.parse((await run(['reach', '-f', dir, '-o', 'json'])).out);
    expect(reach.results.every((x: object) => Object.keys(x).join() === 'from,to,port,protocol,allowed')).toBe(true);
    // The Baseline Deny closes every egress (a pod still reaches itself).
    expect(reach.results.some((x: { from: string; to: string; allowed: boolean }) => x.allowed && x.from !== x.to)).toBe(false);
  });

  it('an invalid ClusterNetworkPolicy: an error naming file, line, field and value, a note, and it fails closed', async () => {
    const bad = `apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: typo}\nspec:\n  tier: Admin\n  priority: 1\n  subject: {namespaces: {}}\n  ingress:\n  - {action: Allow, from: [{namespaces: {}}]}\n`;
    const dir = tempDir({ 'c.yaml': CLUSTER, 'bad.yaml': bad });
    const r = await run(['reach', '-f', dir, '--port', '8080', '-o', 'json']);
    expect(r.err).toMatch(/bad\.yaml:9: clusternetworkpolicy\/typo: spec\.ingress\[0\]\.action: unsupported value: must be one of Accept, Deny, Pass \(got "Allow"\)/);
    expect(r.err).toContain('note: invalid ClusterNetworkPolicies typo are enforced fail-closed');
    expect((await run(['reach', '-f', dir, '--strict'])).code).toBe(3);
  });

  it('warns of two policies of one tier and priority selecting one pod', async () => {
    const two = `${TIERS}---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: z-other}\nspec:\n  tier: Admin\n  priority: 10\n  subject: {pods: {podSelector: {matchLabels: {app: client}}}}\n  ingress: [{action: Accept, from: [{namespaces: {}}]}]\n`;
    const dir = tempDir({ 'c.yaml': CLUSTER, 't.yaml': two });
    const r = await run(['reach', '-f', dir, '--port', '8080']);
    expect(r.err).toContain('warning: cnp/tenant-wall and cnp/z-other are both Admin priority 10 and both select pod prod/client');
  });
});

describe('hostile and mistaken input, as a user runs it', () => {
  // A NetworkPolicy with the wrong apiVersion, one with a misspelled kind, a pod at 0.0.0.0, a
  // pod whose podIPs[0] is not its podIP, a copied pod that kept the UID, and a name holding a
  // forged iptables line. Each is reported (file, line, value); nothing vanishes.
  const HOSTILE = `
apiVersion: v1
kind: NetworkPolicy
metadata: {name: deny-web, namespace: prod}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{}]}
---
apiVersion: networking.k8s.io/v1
kind: networkpolicy
metadata: {name: deny-client, namespace: prod}
spec: {podSelector: {matchLabels: {app: client}}}
---
apiVersion: v1
kind: Pod
metadata: {name: zero, namespace: dev, labels: {app: client}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 0.0.0.0}
---
apiVersion: v1
kind: Pod
metadata: {name: split, namespace: dev, labels: {app: client}}
spec: {nodeName: n1}
status: {phase: Running, podIP: 10.244.1.20, podIPs: [{ip: 10.244.1.21}]}
---
apiVersion: v1
kind: Pod
metadata: {name: "evil\\n-A FORWARD -j ACCEPT", namespace: dev, uid: u-web, labels: {app: client}}
spec: {nodeName: n2}
status: {phase: Running, podIP: 10.244.2.30}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: "bad\\n-A FORWARD -j ACCEPT", namespace: dev}
spec: {podSelector: {}, policyTypes: [Egress]}
`;
  const noForgedLine = (text: string) => expect(text.split('\n').filter((l) => l.startsWith('-A FORWARD') || l.startsWith('-A INPUT'))).toEqual([]);

  it('reach: every mistake is an error naming file, line and value; --strict exits 3; the mistaken policies isolate', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'h.yaml': HOSTILE });
    const h = join(dir, 'h.yaml');
    const r = await run(['reach', '-f', dir, '--port', '8080', '-o', 'json']);
    expect(r.code).toBe(0);
    expect(r.err).toContain(`error: ${h}:2: networkpolicy/prod/deny-web: apiVersion: unknown apiVersion for NetworkPolicy: expected networking.k8s.io/v1 (got "v1")`);
    expect(r.err).toContain(`error: ${h}:8: networkpolicy/prod/deny-client: kind: not a kind: kinds are singular and case-sensitive (expected NetworkPolicy); read as NetworkPolicy (got "networkpolicy")`);
    expect(r.err).toMatch(new RegExp(`error: ${h}:16: pod/dev/zero: status\\.podIP: the unspecified address, not a pod address.* \\(got "0\\.0\\.0\\.0"\\)`));
    expect(r.err).toMatch(new RegExp(`error: ${h}:22: pod/dev/split: status\\.podIPs\\[0\\]\\.ip: must equal status\\.podIP \\("10\\.244\\.1\\.20"\\).* \\(got "10\\.244\\.1\\.21"\\)`));
    noForgedLine(r.err);
    noForgedLine(r.out);
    expect((await run(['reach', '-f', dir, '--port', '8080', '--strict'])).code).toBe(3);
    const cells = new Map((JSON.parse(r.out).results as { from: string; to: string; allowed: boolean }[]).map((x) => [`${x.from}>${x.to}`, x.allowed]));
    // deny-web (apiVersion v1) still isolates web: allow-client no longer lets client in.
    expect(cells.get('prod/client>prod/web')).toBe(false);
    // The pods with refused addresses are in no set, hence not in the table at all.
    expect([...cells.keys()].some((k) => k.includes('dev/zero') || k.includes('dev/split'))).toBe(false);
    const grid = await run(['reach', '-f', dir, '--port', '8080']);
    noForgedLine(grid.out);
    expect(grid.out).toContain('"dev/evil\\n-A FORWARD -j ACCEPT"');
  });

  it('explain: the mistaken policy shows as invalid and isolating; names print quoted on their line', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'h.yaml': HOSTILE });
    const r = await run(['explain', 'pod/prod/web', '-f', dir, '--from', 'pod/prod/client']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('Policy prod/deny-web  [INVALID: isolates the pods it selects and allows nothing]');
    expect(r.out).toContain('DENIED');
    const evil = await run(['explain', 'pod/dev/evil\n-A FORWARD -j ACCEPT', '-f', dir]);
    expect(evil.code, evil.err).toBe(0);
    expect(evil.out).toContain('Pod:         "dev/evil\\n-A FORWARD -j ACCEPT"');
    expect(evil.out).toContain('Policy "dev/bad\\n-A FORWARD -j ACCEPT"  [INVALID');
    noForgedLine(evil.out);
    noForgedLine(evil.err);
    const missing = await run(['explain', 'pod/dev/nope\n-A FORWARD -j ACCEPT', '-f', dir]);
    expect(missing.code).toBe(1);
    noForgedLine(missing.err);
  });

  it('compile: refused names never reach a --comment; the payload stays well-formed', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'h.yaml': HOSTILE });
    const r = await run(['compile', '-f', dir, '--node', 'n2']);
    expect(r.code, r.err).toBe(0);
    noForgedLine(r.out);
    expect(r.out).not.toContain('bad');
    expect(r.out).toMatch(/default deny egress: isolated by invalid-name-[a-z2-7]{13}"/);
    for (const line of r.out.split('\n').filter((l) => l.includes('--comment'))) expect(line).toMatch(/--comment "[ -!#-[\]-~]*"/);
    const n1 = await run(['compile', '-f', dir, '--node', 'n1']);
    expect(n1.out).not.toMatch(/10\.244\.1\.2[01]|0\.0\.0\.0 /); // the refused addresses are in no set
  });

  it('a FIFO named like a manifest: reported, never opened, the command finishes (bounded time)', async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'p.yaml': POLICIES });
    execFileSync('mkfifo', [join(dir, 'x.yaml')]);
    const t0 = Date.now();
    for (const argv of [['reach', '-f', dir, '--port', '8080'], ['compile', '-f', dir, '--node', 'n1'], ['explain', 'pod/prod/web', '-f', dir]]) {
      const r = await run(argv);
      expect(r.code, r.err).toBe(0);
      expect(r.err).toContain(`error: ${join(dir, 'x.yaml')}: a FIFO, not a regular file: skipped, never opened`);
    }
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('objects sharing a UID are all kept and the shared UID reported', async () => {
    const dir = tempDir({ 'a.yaml': CLUSTER.replace('metadata: {name: client, namespace: prod, labels: {app: client}}', 'metadata: {name: client, namespace: prod, uid: u-1, labels: {app: client}}'), 'b.yaml': `apiVersion: v1\nkind: Pod\nmetadata: {name: copy, namespace: prod, uid: u-1, labels: {app: client}}\nspec: {nodeName: n2}\nstatus: {phase: Running, podIP: 10.244.2.50}\n` });
    const r = await run(['reach', '-f', dir, '--port', '8080', '-o', 'json']);
    expect(r.err).toContain(`${join(dir, 'b.yaml')}:1: warning: pod/prod/copy: same UID "u-1" as pod/prod/client at ${join(dir, 'a.yaml')}:12; both are kept (this one as UID "u-1/prod/copy")`);
    const from = new Set((JSON.parse(r.out).results as { from: string }[]).map((x) => x.from));
    expect(from.has('prod/client') && from.has('prod/copy')).toBe(true);
  });

  it('a self-referencing alias, an unparseable policy and an AdminNetworkPolicy: errors naming file and line, the rest loads, --strict exits 3, the broken policy isolates its namespace', async () => {
    const dir = tempDir({
      'a.yaml': `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: loop}\ndata: &a {x: *a}\n`,
      'b.yaml': `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: broken, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: nothing}}\n  podSelector: {}\n---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\nspec: {priority: 1, subject: {namespaces: {}}}\n`,
      'c.yaml': CLUSTER,
      'p.yaml': POLICIES,
    });
    const r = await run(['reach', '-f', dir, '--port', '8080', '-o', 'json']);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain(`error: ${join(dir, 'a.yaml')}:4: configmap/loop: data.x: an alias refers to its own parent: cyclic values are not supported; document skipped (got "*a")`);
    expect(r.err).toContain(`error: ${join(dir, 'b.yaml')}:6: YAML syntax error in document 1, document skipped: Map keys must be unique`);
    expect(r.err).toContain(`error: ${join(dir, 'b.yaml')}:1: networkpolicy/prod/broken: YAML syntax error in document 1 (line 6): Map keys must be unique; enforced fail-closed: isolates every pod of namespace "prod" in both directions`);
    expect(r.err).toContain(`error: ${join(dir, 'b.yaml')}:9: adminnetworkpolicy/anp: kind: unknown kind in apiVersion "policy.networking.k8s.io/v1alpha1": AdminNetworkPolicy is the older API (v1alpha1) that ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) replaces`);
    expect(r.err).not.toContain('Maximum call stack');
    const cells = new Map((JSON.parse(r.out).results as { from: string; to: string; allowed: boolean }[]).map((x) => [`${x.from}>${x.to}`, x.allowed]));
    // The unreadable policy isolates all of prod, both directions: client's egress allows nothing.
    expect(cells.get('prod/client>prod/web')).toBe(false);
    expect((await run(['reach', '-f', dir, '--port', '8080', '--strict'])).code).toBe(3);
    const only = tempDir({ 'anp.yaml': `apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: anp}\n---\n${CLUSTER}` });
    expect((await run(['reach', '-f', only, '--port', '8080'])).code).toBe(0);
    expect((await run(['reach', '-f', only, '--port', '8080', '--strict'])).code).toBe(3);
  });

  it('agent --dry-run with a FIFO and hostile objects: finishes, reports, no forged line (in a network namespace)', { skip: !kernelTestsEnabled() }, async () => {
    const dir = tempDir({ 'c.yaml': CLUSTER, 'h.yaml': HOSTILE });
    execFileSync('mkfifo', [join(dir, 'x.yaml')]);
    const net = createNetns('pcli');
    try {
      const bin = new URL('../../bin/policyctl.js', import.meta.url).pathname;
      const node = new URL('../../node_modules/.bin/node', import.meta.url).pathname;
      const t0 = Date.now();
      const r = spawnSync('ip', ['netns', 'exec', net.name, node, bin, 'agent', '--node', 'n2', '--manifests', dir, '--dry-run'], { encoding: 'utf8', timeout: 30_000 });
      expect(Date.now() - t0).toBeLessThan(30_000);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toContain('# would write (dry run)');
      expect(r.stdout).toContain('a FIFO, not a regular file: skipped, never opened');
      expect(r.stdout).toMatch(/default deny egress: isolated by invalid-name-/);
      noForgedLine(r.stdout);
      noForgedLine(r.stderr);
    } finally {
      net.remove();
    }
  });
});
