// policyctl-cni's native front end (src/cni/shim/policyctl-cni.c), installed as the runtime runs
// it, against the agent's real CNI server (scripted agent): every call gives byte for byte what
// the Node plugin gives; when the agent cannot answer, it falls back to the Node plugin beside it
// (same errors); only a timeout and VERSION are its own. Needs a C compiler (scripts/setup.sh installs gcc).

import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pod } from '../../test/support/builders.ts';
import { scriptedCniServer } from '../../test/support/cni-agent.ts';
import { installPlugin } from './install.ts';
import { SUPPORTED_VERSIONS, runPlugin } from './plugin.ts';
import { encodeCall, readCall } from './shim-frame.ts';

const dir = mkdtempSync(join(tmpdir(), 'pctl-shim-'));
let wrapper = '';
const servers: Server[] = [];
const connections = new Set<Socket>();
const { model, server, socket } = scriptedCniServer(dir);

beforeAll(async () => {
  const r = await installPlugin({ binDir: join(dir, 'bin'), version: 't', linkNode: true });
  expect(r.frontEnd, 'the native front end must build here (gcc and libc6-dev)').toEqual({ native: true });
  wrapper = r.wrapper;
  await server.listen();
  model.upsert(pod('x', 'a', { app: 'a' }, { ip: null, node: 'n1', phase: 'Pending' }));
}, 120_000);

afterAll(async () => {
  await server.close();
  for (const c of connections) c.destroy(); // a server closes once its connections are gone
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(dir, { recursive: true, force: true });
});

interface Output {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The installed plugin, run as the runtime runs it (only the given environment). */
function runInstalled(env: Record<string, string>, stdin: string): Promise<Output & { ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = execFile(wrapper, [], { env, cwd: '/' }, (err, stdout, stderr) =>
      resolve({ exitCode: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr, ms: performance.now() - t0 }),
    );
    child.stdin!.end(stdin);
  });
}

const conf = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'cbr0', type: 'policyctl-cni', socket, timeoutSeconds: 2, prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.244.1.5/24' }] }, ...extra });
const env = (command: string, extra: Record<string, string> = {}) => ({ CNI_COMMAND: command, CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAMESPACE=x;K8S_POD_NAME=a', CNI_PATH: '/opt/cni/bin', ...extra });

describe('policyctl-cni front end', () => {
  // [what, environment, stdin, whether the front end forwards it (else: falls back to Node)]
  const cases: [string, Record<string, string>, string, boolean][] = [
    ['VERSION without a configuration', { CNI_COMMAND: 'VERSION' }, '', false],
    ['VERSION asking for 0.4.0', { CNI_COMMAND: 'VERSION' }, JSON.stringify({ cniVersion: '0.4.0' }), false],
    ['ADD of a known pod', env('ADD'), JSON.stringify(conf()), true],
    ['CHECK', env('CHECK'), JSON.stringify(conf()), true],
    ['CHECK of an address the agent does not enforce', env('CHECK'), JSON.stringify(conf({ prevResult: { ips: [{ address: '10.244.1.99/24' }] } })), true],
    ['ADD without CNI_ARGS', env('ADD', { CNI_ARGS: '' }), JSON.stringify(conf()), true],
    ['ADD without prevResult', env('ADD'), JSON.stringify(conf({ prevResult: undefined })), true],
    ['ADD of a pod the source never has (timeout inside the agent)', env('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=x;K8S_POD_NAME=nobody' }), JSON.stringify(conf({ timeoutSeconds: 0.3 })), true],
    ['an unsupported cniVersion', env('ADD'), JSON.stringify(conf({ cniVersion: '9.9.9' })), true],
    ['an unknown CNI_COMMAND', env('FOO'), JSON.stringify(conf()), true],
    ['a timeout out of range (the front end falls back)', env('ADD'), JSON.stringify(conf({ timeoutSeconds: -1 })), false],
    ['a configuration that is not JSON (falls back)', env('ADD'), '{"cniVersion": ', false],
    ['trailing bytes after the object (falls back)', env('ADD'), `${JSON.stringify(conf())} x`, false],
    ['a decoy socket inside prevResult, the real one escaped', env('ADD'), JSON.stringify(conf({ prevResult: { ips: [{ address: '10.244.1.5/24' }], socket: '/nowhere' } })).replace(/\//g, '\\/'), true],
    ['a \\u escape in the socket path (falls back)', env('ADD'), JSON.stringify(conf()).replace('"socket":"/', '"socket":"\\u002f'), false],
    ['GC', env('GC'), JSON.stringify(conf()), true],
    ['STATUS', env('STATUS'), JSON.stringify(conf()), true],
    ['DEL', env('DEL'), JSON.stringify(conf()), true],
  ];
  for (const [what, e, stdin, forwarded] of cases) {
    it(`gives what the Node plugin gives: ${what}`, async () => {
      const want = await runPlugin({ env: e, stdin });
      const before = { ...server.received };
      const got = await runInstalled(e, stdin);
      expect({ exitCode: got.exitCode, stdout: got.stdout, stderr: got.stderr }).toEqual(want);
      // Which way it went: forwarded as a whole call, or (falling back) the Node plugin's JSON
      // request; a config with no socket of ours (VERSION) reaches neither.
      const sent = { call: server.received.call - before.call, json: server.received.json - before.json };
      if (forwarded) expect(sent).toEqual({ call: 1, json: 0 });
      else expect(sent.call).toBe(0);
    }, 20_000);
  }

  it('answers VERSION itself, as the Node plugin does, for every version it supports and one it does not, with no Node plugin beside it', async () => {
    // The binary alone in a folder of its own: a fallback would find no Node plugin to run.
    const alone = join(dir, 'alone');
    mkdirSync(alone);
    copyFileSync(realpathSync(wrapper), join(alone, 'policyctl-cni'));
    for (const stdin of ['', ...SUPPORTED_VERSIONS.map((v) => JSON.stringify({ cniVersion: v })), JSON.stringify({ cniVersion: '9.9.9' }), JSON.stringify({ cniVersion: '0.4.0', name: 'x', plugins: [{ type: 'y' }] })]) {
      const e = { CNI_COMMAND: 'VERSION' };
      const want = await runPlugin({ env: e, stdin });
      const got = await new Promise<Output>((resolve) => {
        const child = execFile(join(alone, 'policyctl-cni'), [], { env: e, cwd: '/' }, (err, stdout, stderr) => resolve({ exitCode: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
        child.stdin!.end(stdin);
      });
      expect(got, stdin).toEqual(want);
    }
  }, 20_000);

  it('with no agent, falls back to the Node plugin: the same CNI error, and DEL with nothing to undo succeeds', async () => {
    for (const [e, stdin] of [
      [env('ADD'), JSON.stringify(conf({ socket: join(dir, 'none.sock') }))],
      [env('DEL'), JSON.stringify(conf({ socket: join(dir, 'none.sock'), prevResult: undefined }))],
      [{ CNI_COMMAND: 'VERSION' }, ''],
    ] as const) {
      const want = await runPlugin({ env: e, stdin });
      const got = await runInstalled(e, stdin);
      expect({ exitCode: got.exitCode, stdout: got.stdout, stderr: got.stderr }).toEqual(want);
    }
  }, 20_000);

  it('an agent that closes without answering: the fallback asks again and reports it', async () => {
    const s = join(dir, 'closes.sock');
    servers.push(await listen(s, (sock) => sock.end()));
    const e = env('ADD');
    const stdin = JSON.stringify(conf({ socket: s }));
    const got = await runInstalled(e, stdin);
    expect(got).toMatchObject({ exitCode: 1, stdout: expect.stringContaining('closed the connection without an answer') });
    expect(JSON.parse(got.stdout)).toMatchObject({ code: 11 });
  }, 20_000);

  it('an agent that never answers: a CNI error once timeoutSeconds have passed, not twice that', async () => {
    const s = join(dir, 'silent.sock');
    servers.push(await listen(s, () => {}));
    const got = await runInstalled(env('ADD'), JSON.stringify(conf({ socket: s, timeoutSeconds: 0.5 })));
    expect(got.exitCode).toBe(1);
    expect(JSON.parse(got.stdout)).toEqual({ cniVersion: '1.0.0', code: 11, msg: `policyctl-cni: the policyctl agent at ${s} did not answer within 0.5 s (timeoutSeconds in the conflist)` });
    expect(got.ms).toBeGreaterThanOrEqual(480);
    expect(got.ms).toBeLessThan(900);
  }, 20_000);

  it('forwards the CNI_* variables and stdin byte for byte, nothing else of its environment', async () => {
    const s = join(dir, 'records.sock');
    const frames: Buffer[] = [];
    servers.push(
      await listen(s, (sock) => {
        const parts: Buffer[] = [];
        sock.on('data', (d: Buffer) => parts.push(d));
        sock.on('end', () => {
          frames.push(Buffer.concat(parts));
          sock.end('0 3 2\nok\nhi');
        });
      }),
    );
    const stdin = JSON.stringify(conf({ socket: s, note: 'ünïcode ✓' }));
    const got = await runInstalled({ ...env('ADD'), SECRET: 'not for the agent', HOME: '/root' }, stdin);
    expect(got).toMatchObject({ exitCode: 0, stdout: 'ok\n', stderr: 'hi' });
    const call = readCall(frames[0]!, 1 << 20);
    expect(call).toEqual({ env: env('ADD'), stdin });
    expect(frames[0]).toEqual(encodeCall({ env: env('ADD'), stdin }));
  }, 20_000);
});

describe('readCall', () => {
  it('waits for the whole call, refuses what is not one', () => {
    const full = encodeCall({ env: { CNI_COMMAND: 'ADD' }, stdin: '{}' });
    expect(readCall(full.subarray(0, 10), 1000)).toBeUndefined();
    expect(readCall(full.subarray(0, full.length - 1), 1000)).toBeUndefined();
    expect(readCall(full, 1000)).toEqual({ env: { CNI_COMMAND: 'ADD' }, stdin: '{}' });
    expect(() => readCall(Buffer.from('GET / HTTP/1.1\r\n\r\n'), 1000)).toThrow(/not a policyctl-cni call header: "GET/);
    expect(() => readCall(Buffer.from('policyctl-cni 1 5 999999\n'), 1000)).toThrow(/larger than 1000/);
    expect(() => readCall(Buffer.concat([full, Buffer.from('x')]), 1000)).toThrow(/longer than its header/);
    expect(() => readCall(Buffer.from('policyctl-cni 1 6 0\nPATH=/'), 1000)).toThrow(/not NUL-terminated/);
    expect(() => readCall(Buffer.from('policyctl-cni 1 7 0\nPATH=/\0'), 1000)).toThrow(/not CNI_NAME=VALUE: "PATH=\/"/);
    expect(() => readCall(Buffer.alloc(100, 0x70), 1000)).toThrow(/no header line/);
  });
});

async function listen(path: string, onConnection: (sock: Socket) => void): Promise<Server> {
  const s = createServer((sock) => {
    connections.add(sock);
    onConnection(sock);
  });
  await new Promise<void>((r) => s.listen(path, r));
  return s;
}
