// policyctl-cni against a real unix socket: a scripted agent (what it was asked, what it
// answers), and the plugin's own errors. The agent's real side is tested in
// src/agent/cni-server.test.ts; both together on the real kernel in test/e2e/pod-start.test.ts.

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { agentBudget, ipv4Addresses, parseCniArgs, runPlugin, type AgentReply, type AgentRequest } from './plugin.ts';

const dir = mkdtempSync(join(tmpdir(), 'pctl-cni-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  servers = [];
});

/** A scripted agent: records requests, answers with `answer(req)` (undefined: never answers). */
async function fakeAgent(answer: (req: AgentRequest) => AgentReply | undefined | Promise<AgentReply | undefined>): Promise<{ socket: string; requests: AgentRequest[] }> {
  const socket = join(dir, `a${servers.length}-${Math.random().toString(36).slice(2, 8)}.sock`);
  const requests: AgentRequest[] = [];
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', async (d: string) => {
      buf += d;
      if (!buf.includes('\n')) return;
      const req = JSON.parse(buf.split('\n')[0]!) as AgentRequest;
      requests.push(req);
      const reply = await answer(req);
      if (reply) sock.end(JSON.stringify(reply) + '\n');
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  servers.push(server);
  return { socket, requests };
}

const PREV = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '10.244.1.5/24', gateway: '10.244.1.1', interface: 0 }, { address: 'fd00::5/64' }], routes: [] };
const conf = (socket: string, extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'policyctl-cni', socket, timeoutSeconds: 2, prevResult: PREV, ...extra });
const env = (command: string, args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api;K8S_POD_INFRA_CONTAINER_ID=c1') => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: 'c1',
  CNI_NETNS: '/var/run/netns/x',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
  CNI_ARGS: args,
});
const errorOf = (stdout: string) => JSON.parse(stdout) as { cniVersion: string; code: number; msg: string };

describe('policyctl-cni', () => {
  it('ADD asks the agent for the pod and prints prevResult once the agent says it is enforced', async () => {
    const a = await fakeAgent(() => ({ ok: true }));
    const out = await runPlugin({ env: env('ADD'), stdin: conf(a.socket) });
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual(PREV);
    expect(a.requests).toEqual([{ v: 1, command: 'ADD', containerId: 'c1', namespace: 'shop', name: 'api', ips: ['10.244.1.5'], timeoutMs: agentBudget(2000) }]);
    expect(agentBudget(2000)).toBeLessThan(2000);
  });

  it('ADD fails with the agent’s reason when it refuses, and with a CNI error when nobody answers in time', async () => {
    const refuse = await fakeAgent(() => ({ ok: false, code: 11, msg: "the agent's source has no pod shop/api after 2 s" }));
    const r1 = await runPlugin({ env: env('ADD'), stdin: conf(refuse.socket) });
    expect(r1.exitCode).toBe(1);
    expect(errorOf(r1.stdout)).toEqual({ cniVersion: '1.0.0', code: 11, msg: expect.stringMatching(/^policyctl-cni: ADD of pod shop\/api \(10\.244\.1\.5\): the agent's source has no pod shop\/api/) });

    const silent = await fakeAgent(() => undefined);
    const t0 = Date.now();
    const r2 = await runPlugin({ env: env('ADD'), stdin: conf(silent.socket, { timeoutSeconds: 0.3 }) });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(r2.exitCode).toBe(1);
    expect(errorOf(r2.stdout).code).toBe(11);
    expect(errorOf(r2.stdout).msg).toMatch(/did not answer within 0\.3 s \(timeoutSeconds in the conflist\).*not enforced, so it gets no network/);
  });

  it('ADD with no agent: the socket missing, or nobody listening, is an error naming the cause', async () => {
    const missing = await runPlugin({ env: env('ADD'), stdin: conf(join(dir, 'none.sock')) });
    expect(missing.exitCode).toBe(1);
    expect(errorOf(missing.stdout)).toMatchObject({ code: 11, msg: expect.stringContaining('none.sock does not exist') });
    const stale = join(dir, 'stale.sock');
    writeFileSync(stale, ''); // not a listening socket: connect() is refused
    const refused = await runPlugin({ env: env('ADD'), stdin: conf(stale) });
    expect(errorOf(refused.stdout)).toMatchObject({ code: 11, msg: expect.stringContaining(`no policyctl agent listening on ${stale}`) });
    expect(refused.stderr).toContain('no policyctl agent');
  });

  it('ADD refuses what it cannot enforce: no prevResult, no IPv4 address, no pod name', async () => {
    const a = await fakeAgent(() => ({ ok: true }));
    const noPrev = await runPlugin({ env: env('ADD'), stdin: conf(a.socket, { prevResult: undefined }) });
    expect(errorOf(noPrev.stdout)).toMatchObject({ code: 7, msg: expect.stringContaining('list policyctl-cni after the plugins that give the pod its address') });
    const v6 = await runPlugin({ env: env('ADD'), stdin: conf(a.socket, { prevResult: { cniVersion: '1.0.0', ips: [{ address: 'fd00::5/64' }] } }) });
    expect(errorOf(v6.stdout)).toMatchObject({ code: 7, msg: expect.stringContaining('no IPv4 address') });
    const noName = await runPlugin({ env: env('ADD', 'IgnoreUnknown=1'), stdin: conf(a.socket) });
    expect(errorOf(noName.stdout)).toMatchObject({ code: 4, msg: expect.stringContaining('K8S_POD_NAMESPACE') });
    expect(a.requests).toEqual([]);
  });

  it('rejects a bad configuration, environment or version', async () => {
    expect(errorOf((await runPlugin({ env: env('ADD'), stdin: '{' })).stdout).code).toBe(6);
    expect(errorOf((await runPlugin({ env: env('ADD'), stdin: conf('relative.sock') })).stdout)).toMatchObject({ code: 7, msg: expect.stringContaining('"socket" must be an absolute path') });
    expect(errorOf((await runPlugin({ env: env('ADD'), stdin: conf('/x.sock', { timeoutSeconds: 0 }) })).stdout)).toMatchObject({ code: 7, msg: expect.stringContaining('timeoutSeconds') });
    expect(errorOf((await runPlugin({ env: env('ADD'), stdin: conf('/x.sock', { cniVersion: '9.9.9' }) })).stdout)).toMatchObject({ code: 1 });
    expect(errorOf((await runPlugin({ env: env('NOPE'), stdin: conf('/x.sock') })).stdout)).toMatchObject({ code: 4 });
    expect(errorOf((await runPlugin({ env: { ...env('ADD'), CNI_CONTAINERID: '' }, stdin: conf('/x.sock') })).stdout)).toMatchObject({ code: 4 });
  });

  it('VERSION works without an agent or a config', async () => {
    const out = await runPlugin({ env: { CNI_COMMAND: 'VERSION' }, stdin: '{"cniVersion":"0.4.0"}' });
    expect(out.exitCode).toBe(0);
    expect(JSON.parse(out.stdout)).toEqual({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    expect(JSON.parse((await runPlugin({ env: { CNI_COMMAND: 'VERSION' }, stdin: '' })).stdout).cniVersion).toBe('1.1.0');
  });

  it('CHECK asks the agent whether the pod is enforced and prints nothing on success', async () => {
    const a = await fakeAgent((req) => (req.command === 'CHECK' ? { ok: true } : { ok: false, code: 100, msg: 'no' }));
    const out = await runPlugin({ env: env('CHECK'), stdin: conf(a.socket) });
    expect(out).toEqual({ stdout: '', stderr: '', exitCode: 0 });
    expect(a.requests[0]).toMatchObject({ command: 'CHECK', ips: ['10.244.1.5'] });
    const no = await fakeAgent(() => ({ ok: false, code: 100, msg: 'address 10.244.1.5 is not enforced for pod shop/api' }));
    expect(errorOf((await runPlugin({ env: env('CHECK'), stdin: conf(no.socket) })).stdout)).toMatchObject({ code: 100, msg: expect.stringContaining('is not enforced') });
  });

  it('DEL tells the agent the sandbox addresses; without an agent it fails unless there is nothing to undo', async () => {
    const a = await fakeAgent(() => ({ ok: true, detail: '10.244.1.5 gone' }));
    const out = await runPlugin({ env: env('DEL'), stdin: conf(a.socket) });
    expect(out).toEqual({ stdout: '', stderr: '', exitCode: 0 });
    expect(a.requests[0]).toMatchObject({ command: 'DEL', containerId: 'c1', namespace: 'shop', name: 'api', ips: ['10.244.1.5'] });
    // No agent, an address known: fail, so the runtime retries and host-local keeps the address.
    const noAgent = await runPlugin({ env: env('DEL'), stdin: conf(join(dir, 'none.sock')) });
    expect(noAgent.exitCode).toBe(1);
    expect(errorOf(noAgent.stdout)).toMatchObject({ code: 11, msg: expect.stringContaining('the address stays allocated until the agent confirms') });
    // No agent, no address (no prevResult): nothing to undo, so DEL succeeds.
    const nothing = await runPlugin({ env: env('DEL', ''), stdin: conf(join(dir, 'none.sock'), { prevResult: undefined }) });
    expect(nothing.exitCode).toBe(0);
    expect(nothing.stderr).toContain('nothing to undo');
    // The agent refusing DEL is a failure too.
    const refuse = await fakeAgent(() => ({ ok: false, code: 11, msg: 'the agent did not apply the removal' }));
    expect((await runPlugin({ env: env('DEL'), stdin: conf(refuse.socket) })).exitCode).toBe(1);
  });

  it('STATUS is ready only when the agent says so; GC has nothing to collect', async () => {
    const ready = await fakeAgent(() => ({ ok: true }));
    expect((await runPlugin({ env: { CNI_COMMAND: 'STATUS' }, stdin: conf(ready.socket) })).exitCode).toBe(0);
    const notReady = await fakeAgent(() => ({ ok: false, code: 50, msg: 'not ready: source not synced yet' }));
    expect(errorOf((await runPlugin({ env: { CNI_COMMAND: 'STATUS' }, stdin: conf(notReady.socket) })).stdout)).toMatchObject({ code: 50 });
    expect(errorOf((await runPlugin({ env: { CNI_COMMAND: 'STATUS' }, stdin: conf(join(dir, 'none.sock')) })).stdout)).toMatchObject({ code: 50 });
    expect((await runPlugin({ env: { CNI_COMMAND: 'GC' }, stdin: conf(join(dir, 'none.sock')) })).exitCode).toBe(0);
  });

  it('reads CNI_ARGS and both result formats', () => {
    expect([...parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b=c;junk')]).toEqual([
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAMESPACE', 'a'],
      ['K8S_POD_NAME', 'b=c'],
    ]);
    expect(ipv4Addresses({ ip4: { ip: '10.1.2.3/24' } })).toEqual(['10.1.2.3']);
    expect(ipv4Addresses({ ips: [{ address: '10.1.2.3/24' }, { address: '10.1.2.3/24' }, { address: 'x' }, null] })).toEqual(['10.1.2.3']);
    expect(ipv4Addresses(undefined)).toEqual([]);
  });

  it('runs as an executable: stdout, exit code', async () => {
    const a = await fakeAgent(() => ({ ok: true }));
    const bin = join(import.meta.dirname, '..', '..', 'bin', 'policyctl-cni.js');
    const run = (e: Record<string, string>, input: string) =>
      new Promise<{ code: number; stdout: string }>((resolve) => {
        const child = execFile(process.execPath, [bin], { env: { ...e, NODE_COMPILE_CACHE: join(dir, 'cc') } }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout }));
        child.stdin!.end(input);
      });
    const ok = await run(env('ADD'), conf(a.socket));
    expect(ok).toEqual({ code: 0, stdout: JSON.stringify(PREV) + '\n' });
    const fail = await run(env('ADD'), conf(join(dir, 'none.sock')));
    expect(fail.code).toBe(1);
    expect(errorOf(fail.stdout).code).toBe(11);
  });
});
