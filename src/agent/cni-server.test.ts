// The agent's CNI server with a real model, a scripted agent (applies what it is asked at once,
// or never) and a runner that records conntrack calls; and once through the socket with the
// real plugin.

import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pod } from '../../test/support/builders.ts';
import { runPlugin, type AgentRequest } from '../cni/plugin.ts';
import { scriptedCniServer, type ScriptedAgentOptions } from '../../test/support/cni-agent.ts';

const dir = mkdtempSync(join(tmpdir(), 'pctl-cnisrv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const setup = (o: ScriptedAgentOptions = {}) => scriptedCniServer(dir, o);

const req = (command: AgentRequest['command'], extra: Partial<AgentRequest> = {}): AgentRequest => ({ v: 1, command, namespace: 'x', name: 'a', containerId: 'c1', ips: ['10.244.1.5'], timeoutMs: 1000, ...extra });
const noIp = pod('x', 'a', { app: 'a' }, { ip: null, node: 'n1', phase: 'Pending' });

describe('CniServer', () => {
  it('ADD waits for the pod to appear in the source, gives it the reported address, and answers once applied', async () => {
    const { model, server } = setup();
    setTimeout(() => model.upsert({ ...noIp, nodeName: undefined }), 100);
    const t0 = Date.now();
    expect(await server.handle(req('ADD'))).toEqual({ ok: true, detail: 'pod enforced with 10.244.1.5' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
    expect(model.getPod(noIp.uid)).toMatchObject({ ips: ['10.244.1.5'], nodeName: 'n1' });
    expect(await server.handle(req('CHECK'))).toMatchObject({ ok: true });
    expect(await server.handle(req('CHECK', { ips: ['10.244.1.6'] }))).toMatchObject({ ok: false, code: 100, msg: expect.stringContaining('10.244.1.6 is not enforced') });
  });

  it('ADD fails, naming the cause, when the pod never comes, is elsewhere, or is never applied', async () => {
    const a = setup();
    expect(await a.server.handle(req('ADD', { timeoutMs: 300 }))).toEqual({ ok: false, code: 11, msg: "the agent's source (watching /cluster) has no pod x/a after 0.3 s" });
    a.model.upsert({ ...noIp, nodeName: 'n2' });
    expect(await a.server.handle(req('ADD'))).toMatchObject({ ok: false, code: 100, msg: expect.stringContaining('bound to node n2, and this agent enforces node n1') });
    a.model.upsert({ ...noIp, hostNetwork: true });
    expect(await a.server.handle(req('ADD'))).toMatchObject({ ok: false, code: 100, msg: expect.stringContaining('host network') });

    const b = setup({ applies: false });
    b.model.upsert(noIp);
    expect(await b.server.handle(req('ADD', { timeoutMs: 200 }))).toEqual({ ok: false, code: 11, msg: 'the agent did not apply pod x/a within 0.2 s (last sync failed: iptables-restore failed)' });

    const c = setup({ synced: false });
    c.model.upsert(noIp);
    expect(await c.server.handle(req('ADD', { timeoutMs: 300 }))).toMatchObject({ ok: false, code: 11, msg: expect.stringContaining('not synced yet') });
    setTimeout(() => c.setSynced(true), 100);
    expect(await c.server.handle(req('ADD'))).toMatchObject({ ok: true });
  });

  it('ADD of an address another pod still claims fails closed and names that pod', async () => {
    const { model, server } = setup();
    model.upsert(noIp);
    model.upsert(pod('y', 'old', {}, { ip: '10.244.1.5', node: 'n1' }));
    expect(await server.handle(req('ADD'))).toMatchObject({ ok: false, code: 11, msg: expect.stringContaining('10.244.1.5 by pod y/old') });
    expect(model.getPod(noIp.uid)!.ips).toEqual([]);
  });

  it('DEL withholds the address even while the source reports it, and deletes its conntrack entries', async () => {
    const { model, server, calls } = setup();
    model.upsert(noIp);
    expect(await server.handle(req('ADD'))).toMatchObject({ ok: true });
    model.upsert({ ...noIp, ips: ['10.244.1.5'], phase: 'Running' }); // the API caught up
    expect(await server.handle(req('DEL', { ips: [] }))).toEqual({ ok: true, detail: '10.244.1.5 gone from every set; 1 conntrack entries deleted' });
    expect(model.getPod(noIp.uid)!.ips).toEqual([]);
    expect(calls).toEqual(['conntrack -L -f ipv4 -o extended', 'conntrack -D -p udp -s 10.244.1.5 -d 10.244.2.3 --sport 4000 --dport 53']);
    // A later status update with the old address does not bring it back.
    model.upsert({ ...noIp, ips: ['10.244.1.5'], labels: { app: 'b' } });
    expect(model.getPod(noIp.uid)).toMatchObject({ ips: [], labels: { app: 'b' } });
    expect(await server.handle(req('CHECK'))).toMatchObject({ ok: false });
  });

  it('DEL with nothing known succeeds without touching anything; DEL by container alone finds the pod', async () => {
    const { model, server, calls } = setup();
    expect(await server.handle(req('DEL', { ips: [] }))).toEqual({ ok: true, detail: 'nothing to undo (no address known for this sandbox)' });
    expect(calls).toEqual([]);
    model.upsert(noIp);
    await server.handle(req('ADD'));
    const { namespace: _n, name: _m, ...anonymous } = req('DEL', { ips: [] });
    expect(await server.handle(anonymous)).toMatchObject({ ok: true, detail: expect.stringContaining('10.244.1.5 gone') });
    expect(model.getPod(noIp.uid)!.ips).toEqual([]);
  });

  it('rejects malformed requests', async () => {
    const { server } = setup();
    expect(await server.handle({ v: 2, command: 'ADD' })).toMatchObject({ ok: false, code: 1 });
    expect(await server.handle({ v: 1, command: 'ADD', ips: ['10.1.1'], timeoutMs: 1 })).toMatchObject({ ok: false, code: 6 });
    expect(await server.handle({ v: 1, command: 'RUN', timeoutMs: 1 })).toMatchObject({ ok: false, code: 4 });
    expect(await server.handle(req('ADD', { ips: [] }))).toMatchObject({ ok: false, code: 4 });
  });

  it('serves the plugin on a socket only root can use, and removes it on close', async () => {
    const { model, server } = setup();
    await server.listen();
    const socket = (server as unknown as { o: { socketPath: string } }).o.socketPath;
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(statSync(join(socket, '..')).mode & 0o777).toBe(0o700);
    model.upsert(noIp);
    const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'policyctl-cni', socket, timeoutSeconds: 2, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.244.1.5/24' }] } });
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=x;K8S_POD_NAME=a' };
    expect((await runPlugin({ env, stdin: conf })).exitCode).toBe(0);
    expect(model.getPod(noIp.uid)!.ips).toEqual(['10.244.1.5']);
    await server.close();
    expect(() => statSync(socket)).toThrow();
    const after = await runPlugin({ env, stdin: conf });
    expect(after.exitCode).toBe(1);
    expect(after.stdout).toContain('does not exist');
  });
});
