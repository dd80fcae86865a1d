// The verdict cache on the real kernel (docs/design.md, "The verdict cache"; invariant
// verdicts-of-the-rules-in-force): the Syncer empties PCTL-verdicts after every write, again a
// moment later, owes a flush that failed, and a connection the kernel remembered as allowed is
// denied as soon as a sync that denies it returns, whether the change rewrote rules or only
// set members.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { node, ns, pod, podsPeer, policy, port, rule, sel } from '../../test/support/builders.ts';
import { FOREIGN_FILTER } from '../../test/support/dataplane.ts';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { sampleCluster } from '../../test/support/clusters.ts';
import { compile } from '../compiler/compile.ts';
import { VERDICT_CACHE_SET } from '../compiler/layout.ts';
import { Model } from '../model/store.ts';
import type { PortSpec } from '../model/types.ts';
import { createLab, destroyLab, execInNode, probe, type LabState } from '../lab/index.ts';
import { NFT } from './backend.ts';
import { processRunner, RecordingRunner, type Runner, type RunResult } from './runner.ts';
import { ApplyError, Syncer } from './syncer.ts';

const CACHE = { verdictCache: true } as const;
const entriesOf = (net: TestNetns) => net.sh(`ipset list ${VERDICT_CACHE_SET}`).split('Members:\n')[1]!.split('\n').filter(Boolean);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Fails the commands whose input matches, while `failing` is on (a flush the kernel refuses). */
class FailingRunner implements Runner {
  failing = true;
  private readonly inner: Runner;
  private readonly matches: (input: string) => boolean;
  constructor(inner: Runner, matches: (input: string) => boolean) {
    this.inner = inner;
    this.matches = matches;
  }
  run(cmd: string, args: readonly string[], opts: { input?: string } = {}): Promise<RunResult> {
    if (this.failing && opts.input !== undefined && this.matches(opts.input)) return Promise.resolve({ exitCode: 1, stdout: '', stderr: 'ipset v7.17: injected failure' });
    return this.inner.run(cmd, args, opts);
  }
}

/** sampleCluster with pod x/b relabelled: set members change, no rule does. */
function relabelled(): Model {
  const m = sampleCluster();
  m.upsert({ ...m.findPod('x', 'b')!, labels: { app: 'gone' } });
  return m;
}

describe.runIf(kernelTestsEnabled())('the Syncer and the verdict cache, on the real kernel', () => {
  let net: TestNetns;
  beforeEach(() => {
    net = createNetns('pctl-vc');
    net.sh(`iptables-nft-restore <<'EOF'\n${FOREIGN_FILTER}EOF`);
  });
  afterEach(() => net.remove());

  const remember = (entry = '10.244.1.11,tcp:80,10.244.1.10') => net.sh(`ipset add ${VERDICT_CACHE_SET} ${entry}`);

  /** A Syncer that applied sampleCluster with the cache, over a runner that fails what `matches` once armed (`failing`, off at first). */
  const applyThenFail = async (matches: (input: string) => boolean) => {
    const failing = new FailingRunner(net.runner, matches);
    failing.failing = false;
    const syncer = new Syncer({ runner: failing, backend: { ...NFT, reason: 'test' } });
    await syncer.sync(compile(sampleCluster(), 'n1', CACHE));
    return { failing, syncer };
  };

  it('a write empties the cache after its last step, and once more flushAgainMs later', async () => {
    const rec = new RecordingRunner(net.runner);
    const syncer = new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' }, flushAgainMs: 100 });
    await syncer.sync(compile(sampleCluster(), 'n1', CACHE));
    // Created empty, bounded, with its timeout; the rules that read and fill it are in place.
    expect(net.sh(`ipset list -t ${VERDICT_CACHE_SET}`)).toMatch(/Type: hash:ip,port,ip\nRevision: \d+\nHeader: family inet hashsize 1024 maxelem 65536 timeout 10/);
    const fwd = net.sh('iptables-nft-save -t filter').split('\n').filter((l) => l.startsWith('-A PCTL-FORWARD '));
    expect(fwd.filter((l) => l.includes(`--match-set ${VERDICT_CACHE_SET} src,dst,dst`))).toHaveLength(2);
    expect(fwd.slice(-2).every((l) => / -j SET --add-set PCTL-verdicts src,dst,dst --exist --timeout 10$/.test(l))).toBe(true);

    remember();
    rec.calls.length = 0;
    const r = await syncer.sync(compile(relabelled(), 'n1', CACHE));
    expect(r.wrote).toBe(true);
    expect(entriesOf(net)).toEqual([]);
    // The flush is the last write: after the removals, which may deny what a verdict allowed.
    const writes = rec.writes();
    expect(writes.at(-1)!.input).toContain(`flush ${VERDICT_CACHE_SET}\n`);
    expect(writes.slice(0, -1).some((w) => /^del /m.test(w.input ?? ''))).toBe(true);

    // A verdict added right after the sync (a packet that was mid-walk when it landed) goes too.
    remember();
    await sleep(300);
    expect(entriesOf(net)).toEqual([]);
    syncer.dispose();
  });

  it('a write that only widens what the rules allow keeps the cache: a pod of another node that allow rules name', async () => {
    const rec = new RecordingRunner(net.runner);
    const syncer = new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' }, flushAgainMs: 50 });
    const m = sampleCluster();
    await syncer.sync(compile(m, 'n1', CACHE));
    await sleep(150);
    remember();
    rec.calls.length = 0;
    // x/e on n2, app=db: it joins the peer sets of x/allow and y/web, both allows.
    m.upsert(pod('x', 'e', { app: 'db' }, { ip: '10.244.2.20', node: 'n2' }));
    const r = await syncer.sync(compile(m, 'n1', CACHE));
    expect(r.wrote).toBe(true);
    expect(r.plan.writeChains).toEqual([]);
    expect(rec.writes().some((w) => w.input?.includes(`flush ${VERDICT_CACHE_SET}`))).toBe(false);
    await sleep(150);
    expect(entriesOf(net)).toHaveLength(1);
    // It goes again: the allow sets shrink, and the cache is emptied.
    m.remove('pod-x-e', 'Pod');
    await syncer.sync(compile(m, 'n1', CACHE));
    expect(entriesOf(net)).toEqual([]);
    syncer.dispose();
  });

  it('a sync that writes nothing keeps the cache, except the first of a new Syncer (verdicts of an agent before it)', async () => {
    const first = new Syncer({ runner: net.runner, backend: { ...NFT, reason: 'test' } });
    await first.sync(compile(sampleCluster(), 'n1', CACHE));
    remember();
    await first.sync(compile(sampleCluster(), 'n1', CACHE), { readKernel: true });
    expect(entriesOf(net)).toHaveLength(1);
    first.dispose();
    // A restarted agent cannot know what the kernel remembered under which rules.
    const second = new Syncer({ runner: net.runner, backend: { ...NFT, reason: 'test' } });
    const r = await second.sync(compile(sampleCluster(), 'n1', CACHE));
    expect(r.wrote).toBe(false);
    expect(entriesOf(net)).toEqual([]);
    second.dispose();
  });

  it('a flush that fails fails the sync, stays owed by the syncs after it, and runs as soon as it can', async () => {
    const { failing, syncer } = await applyThenFail((input) => input.includes(`flush ${VERDICT_CACHE_SET}`));
    remember();
    failing.failing = true;
    const err = await syncer.sync(compile(relabelled(), 'n1', CACHE)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplyError);
    expect((err as Error).message).toMatch(/flush the verdict cache/);
    expect(syncer.verdictFlushOwed()).toBe(true);
    // Nothing else differs, yet the next sync runs the owed flush: and fails while it fails.
    await expect(syncer.sync(compile(relabelled(), 'n1', CACHE), { readKernel: true })).rejects.toThrow(/flush the verdict cache/);
    expect(entriesOf(net)).toHaveLength(1);
    failing.failing = false;
    await syncer.sync(compile(relabelled(), 'n1', CACHE));
    expect(syncer.verdictFlushOwed()).toBe(false);
    expect(entriesOf(net)).toEqual([]);
    syncer.dispose();
  });

  it('a write that fails midway still empties the cache (what landed may deny what it remembered)', async () => {
    const { failing, syncer } = await applyThenFail((input) => input.startsWith('*filter'));
    remember();
    failing.failing = true;
    // A new policy chain: its sets are added, then iptables-restore fails.
    const m = sampleCluster();
    m.upsert(policy('x', 'extra', sel({ app: 'db' }), { ingress: [rule([podsPeer('y')])] }));
    await expect(syncer.sync(compile(m, 'n1', CACHE))).rejects.toThrow(/iptables-restore/);
    expect(entriesOf(net)).toEqual([]);
    syncer.dispose();
  });

  it('a cache created with other settings (a layout that changed its timeout or bound) is rebuilt, and flushes keep working', async () => {
    net.sh(`ipset create ${VERDICT_CACHE_SET} hash:ip,port,ip family inet hashsize 1024 maxelem 1000 timeout 30`);
    remember();
    const syncer = new Syncer({ runner: net.runner, backend: { ...NFT, reason: 'test' } });
    const r = await syncer.sync(compile(sampleCluster(), 'n1', CACHE));
    expect(r.plan.replaceSets.map((x) => x.name)).toEqual([VERDICT_CACHE_SET]);
    expect(net.sh(`ipset list -t ${VERDICT_CACHE_SET}`)).toMatch(/maxelem 65536 timeout 10/);
    expect(entriesOf(net)).toEqual([]);
    remember();
    await syncer.sync(compile(relabelled(), 'n1', CACHE));
    expect(entriesOf(net)).toEqual([]);
    // What the kernel holds now reads back as wanted: nothing to do.
    expect((await syncer.verify(compile(relabelled(), 'n1', CACHE))).plan.replaceSets).toEqual([]);
    syncer.dispose();
  });

  it('in a piecewise apply a failing flush is owed, never taken for the refusal of the piece it followed', async () => {
    const { failing, syncer } = await applyThenFail((input) => input.includes(`flush ${VERDICT_CACHE_SET}`));
    failing.failing = true;
    // A new pod of this node: additions (a piecewise apply withholds removals), which may deny.
    const m = sampleCluster();
    m.upsert(pod('x', 'n', { app: 'db' }, { ip: '10.244.1.40', node: 'n1' }));
    const r = await syncer.applyInPieces(compile(m, 'n1', CACHE));
    expect(r.applied).toBeGreaterThan(0);
    expect(r.rejected).toEqual([]);
    expect(r.complete).toBe(true);
    expect(syncer.verdictFlushOwed()).toBe(true);
    await expect(syncer.sync(compile(m, 'n1', CACHE))).rejects.toThrow(/flush the verdict cache/);
    failing.failing = false;
    await syncer.sync(compile(m, 'n1', CACHE));
    expect(syncer.verdictFlushOwed()).toBe(false);
    syncer.dispose();
  });

  it('turning the cache off flushes it in that very write, while its rules may still be in force (the write fails midway)', async () => {
    const { failing, syncer } = await applyThenFail((input) => input.startsWith('*filter'));
    remember();
    failing.failing = true;
    await expect(syncer.sync(compile(relabelled(), 'n1'))).rejects.toThrow(/iptables-restore/);
    expect(net.sh('iptables-save -t filter')).toContain(`--match-set ${VERDICT_CACHE_SET}`);
    expect(entriesOf(net)).toEqual([]);
    failing.failing = false;
    await syncer.sync(compile(relabelled(), 'n1'));
    await syncer.collectGarbage();
    expect(net.sh('ipset list -n')).not.toContain(VERDICT_CACHE_SET);
    syncer.dispose();
  });

  it('without the verdict cache nothing is flushed, and a cleanup takes the set away', async () => {
    const rec = new RecordingRunner(net.runner);
    const syncer = new Syncer({ runner: rec, backend: { ...NFT, reason: 'test' } });
    await syncer.sync(compile(sampleCluster(), 'n1'));
    await syncer.sync(compile(relabelled(), 'n1'));
    expect(rec.writes().some((w) => w.input?.includes(`flush ${VERDICT_CACHE_SET}`))).toBe(false);
    await syncer.sync(compile(sampleCluster(), 'n1', CACHE));
    await syncer.cleanup();
    expect(net.sh('ipset list -n')).not.toContain(VERDICT_CACHE_SET);
    syncer.dispose();
  });
});

// Real traffic through a node's bridge (br_netfilter): a remembered connection, then a change.
const NODE = 'n1';
const CLIENT = '10.244.1.10';
const SERVER = '10.244.1.20';

function labModel(clientApp: string, serverPorts: PortSpec[]): Model {
  const m = new Model();
  for (const r of [
    ns('a'),
    node(NODE, '10.244.1.0/24', '192.168.100.11'),
    pod('a', 'client', { app: clientApp }, { ip: CLIENT, node: NODE }),
    pod('a', 'server', { app: 'server' }, { ip: SERVER, node: NODE, ports: [port(80, 'http'), port(5353, 'dns', 'UDP')] }),
    policy('a', 'server-in', sel({ app: 'server' }), { ingress: [rule([podsPeer('a', sel({ app: 'client' }))], serverPorts)] }),
  ])
    m.upsert(r);
  return m;
}
const FLUSH_AGAIN_MS = 30;
const BOTH: PortSpec[] = [
  { protocol: 'TCP', port: 80 },
  { protocol: 'UDP', port: 5353 },
];

describe.runIf(kernelTestsEnabled())('a connection the kernel remembered, on the real kernel', () => {
  let lab: LabState;
  let syncer: Syncer;
  const name = `vc${process.pid % 100000}`;
  beforeAll(async () => {
    lab = await createLab({
      name,
      nodes: [{ name: NODE, podCIDR: '10.244.1.0/24' }],
      pods: [
        { namespace: 'a', name: 'client', node: NODE, ip: CLIENT },
        { namespace: 'a', name: 'server', node: NODE, ip: SERVER, ports: [{ port: 80 }, { port: 5353, protocol: 'UDP' }] },
      ],
    });
    syncer = new Syncer({ runner: processRunner(lab.nodes[0]!.netns), backend: { ...NFT, reason: 'test' }, flushAgainMs: FLUSH_AGAIN_MS });
  });
  afterAll(async () => {
    syncer?.dispose();
    await destroyLab(name).catch(() => {});
  });

  /** A sync, then its second flush over, so what the probes after it leave stays. */
  const sync = async (m: Model) => {
    const r = await syncer.sync(compile(m, NODE, CACHE));
    await sleep(FLUSH_AGAIN_MS * 3);
    return r;
  };
  const tcp = () => probe(lab, 'a/client', { ip: SERVER, port: 80, protocol: 'TCP' }, 500);
  const udp = () => probe(lab, 'a/client', { ip: SERVER, port: 5353, protocol: 'UDP' }, 500);
  const cached = async () => (await execInNode(lab, NODE, ['ipset', 'list', VERDICT_CACHE_SET])).stdout.split('Members:\n')[1]!.split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
  const hits = async () => {
    const out = (await execInNode(lab, NODE, ['iptables', '-t', 'filter', '-L', 'PCTL-FORWARD', '-v', '-x', '-n'])).stdout;
    return out.split('\n').filter((l) => l.includes('verdict cache: tcp') && l.includes('match-set')).reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]), 0);
  };

  it('is denied as soon as a sync that denies it returns: set members only, then rules', async () => {
    await sync(labModel('client', BOTH));
    expect((await tcp()).allowed).toBe(true);
    expect((await udp()).allowed).toBe(true);
    expect(await cached()).toEqual(expect.arrayContaining([`${CLIENT},tcp:80,${SERVER}`, `${CLIENT},udp:5353,${SERVER}`]));
    // Remembered: the next connection skips the walk.
    const before = await hits();
    expect((await tcp()).allowed).toBe(true);
    expect(await hits()).toBeGreaterThan(before);

    // The client is relabelled: only set members change; the next connection is denied at once.
    const relabel = await syncer.sync(compile(labModel('other', BOTH), NODE, CACHE));
    expect(relabel.plan.writeChains).toEqual([]);
    expect(relabel.plan.delMembers.length).toBeGreaterThan(0);
    expect((await tcp()).allowed).toBe(false);
    expect((await udp()).allowed).toBe(false);

    // Back, remembered again; then the policy allows another port: rules change.
    await sync(labModel('client', BOTH));
    expect((await tcp()).allowed).toBe(true);
    expect(await cached()).toContain(`${CLIENT},tcp:80,${SERVER}`);
    const rules = await syncer.sync(compile(labModel('client', [{ protocol: 'TCP', port: 81 }]), NODE, CACHE));
    expect(rules.plan.writeChains.length + rules.plan.appendRules.length).toBeGreaterThan(0);
    expect((await tcp()).allowed).toBe(false);
    // A denied connection is never remembered.
    expect(await cached()).toEqual([]);
  });
});
