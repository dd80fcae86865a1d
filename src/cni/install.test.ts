// The host install the DaemonSet's init container makes: the native front end, and beside it the
// plugin with the copied Node (what the front end runs when no agent answers, and the whole
// install where no front end can be built), from any working directory; an upgrade replaces the
// previous version.

import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { installPlugin, pluginJavaScript } from './install.ts';

const dir = mkdtempSync(join(tmpdir(), 'pctl-cni-install-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(file: string, env: Record<string, string>, input: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    const child = execFile(file, [], { env: { PATH: '/usr/bin:/bin', ...env }, cwd: '/' }, (err, stdout) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout }));
    child.stdin!.end(input);
  });
}

describe('policyctl install-cni', () => {
  it('installs the front end, which falls back to the plugin with its own Node when no agent answers, and replaces an older version', async () => {
    await installPlugin({ binDir: dir, version: '0.0.9' });
    const { wrapper, frontEnd } = await installPlugin({ binDir: dir, version: '0.1.0' });
    expect(frontEnd).toEqual({ native: true });
    // A relative link: the host's runtime follows it wherever the folder was mounted at install.
    expect(lstatSync(wrapper).isSymbolicLink()).toBe(true);
    expect(readlinkSync(wrapper)).toBe('policyctl-cni.d/0.1.0/policyctl-cni');
    expect(statSync(wrapper).mode & 0o111).not.toBe(0);
    expect(readFileSync(wrapper).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(readdirSync(join(dir, 'policyctl-cni.d'))).toEqual(['0.1.0']);
    const version = await run(wrapper, { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}');
    expect(version).toEqual({ code: 0, stdout: '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n' });
    const add = await run(
      wrapper,
      { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_ARGS: 'K8S_POD_NAMESPACE=a;K8S_POD_NAME=b', NODE_COMPILE_CACHE: join(dir, 'cache') },
      JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', type: 'policyctl-cni', socket: join(dir, 'none.sock'), prevResult: { ips: [{ address: '10.244.1.5/24' }] } }),
    );
    expect(add.code).toBe(1);
    expect(JSON.parse(add.stdout)).toMatchObject({ code: 11, msg: expect.stringContaining('none.sock does not exist') });
    expect(existsSync(`${wrapper}.tmp`)).toBe(false);
  }, 30_000);

  it('installs the plugin as JavaScript with a warmed compile cache, so a run loads no TypeScript stripper', async () => {
    const { wrapper, dir: installed, frontEnd } = await installPlugin({ binDir: dir, version: '0.2.0', linkNode: true, shim: false });
    expect(frontEnd).toEqual({ native: false, reason: 'not asked for' });
    expect(readFileSync(wrapper, 'utf8')).toContain(`NODE_COMPILE_CACHE='${installed}/cache' exec '${installed}/node' '${installed}/policyctl-cni.mjs'`);
    expect(readdirSync(installed).sort()).toEqual(['cache', 'node', 'package.json', 'plugin.mjs', 'policyctl-cni.mjs']);
    expect(readdirSync(join(installed, 'cache')).length).toBeGreaterThan(0);
    const js = readFileSync(join(installed, 'plugin.mjs'), 'utf8');
    const ts = readFileSync(join(import.meta.dirname, 'plugin.ts'), 'utf8');
    expect(js.split('\n').length).toBe(ts.split('\n').length); // stack traces keep the source's lines
    expect(js).not.toMatch(/\binterface\s+AgentRequest\b/);
    // It runs with Node's TypeScript support off: nothing in it is TypeScript any more.
    const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
      const child = execFile(join(installed, 'node'), ['--no-experimental-strip-types', join(installed, 'policyctl-cni.mjs')], { env: { CNI_COMMAND: 'VERSION' } }, (err, stdout) => resolve({ code: err ? 1 : 0, stdout }));
      child.stdin!.end('{"cniVersion":"1.0.0"}');
    });
    expect(r).toMatchObject({ code: 0, stdout: expect.stringContaining('supportedVersions') });
  }, 30_000);

  it('refuses a plugin source that imports anything but Node built-ins, naming the import', () => {
    expect(() => pluginJavaScript("import { x } from 'node:fs';\nimport pino from 'pino';\n")).toThrow(/imports "pino"/);
    expect(() => pluginJavaScript("const m = await import('../model/types.ts');\n")).toThrow(/imports "..\/model\/types.ts"/);
    expect(pluginJavaScript("import { connect } from 'node:net';\nconst n: number = 1;\n")).toBe("import { connect } from 'node:net';\nconst n         = 1;\n");
  });
});
