// Installing policyctl-cni on a node (`policyctl install-cni`, the DaemonSet's init container;
// the lab installs it the same way into its own CNI bin folder).
//
// The container runtime runs CNI plugins on the host, by name, from its CNI bin folder, once per
// pod ADD and DEL: the plugin's start-up is on every pod's critical path. The install puts beside
// the plugins a folder holding a native front end (src/cni/shim: a static binary that forwards the
// call to the agent, which runs the plugin's code itself), and, for when no agent answers it, this
// Node binary with the plugin as plain JavaScript and a compile cache warmed at install:
//
//   /opt/cni/bin/policyctl-cni                    -> policyctl-cni.d/<version>/policyctl-cni (relative symlink)
//   /opt/cni/bin/policyctl-cni.d/<version>/policyctl-cni   the front end (static, any libc)
//   /opt/cni/bin/policyctl-cni.d/<version>/node   the image's Node (glibc, libstdc++ on the host)
//   /opt/cni/bin/policyctl-cni.d/<version>/{policyctl-cni.mjs, plugin.mjs, package.json, cache/}
//
// Where no front end can be had (a checkout without a C compiler), `policyctl-cni` is instead a
// small shell script running the Node plugin:
//   #!/bin/sh  NODE_COMPILE_CACHE=<dir>/cache exec <dir>/node <dir>/policyctl-cni.mjs
//
// plugin.mjs is src/cni/plugin.ts with its types stripped here, once (whitespace keeps the
// lines, so stack traces point at the source lines): a run then loads no TypeScript stripper,
// and the warmed cache spares V8's parse and compile.
//
// Invariants:
// - The plugin imports only `node:` built-ins (checked here; an install that would need more
//   fails, naming the import), so the folder is complete.
// - Each step replaces by rename, so a plugin run by the runtime during an upgrade sees the old
//   install or the new one, never half of one. Other versions' folders are removed afterwards.
// - The front end finds the Node plugin in its own folder (/proc/self/exe): nothing in the
//   install names a path as the container saw it, so the host's mount point does not matter.

import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import { join } from 'node:path';
import { shimBinary, type ShimBinary } from './shim.ts';

export const PLUGIN_NAME = 'policyctl-cni';

export interface InstallOptions {
  /** The host's CNI bin folder (as mounted), e.g. /opt/cni/bin. */
  readonly binDir: string;
  readonly version: string;
  /** The Node binary to copy; default: this process's. */
  readonly node?: string;
  /** Link the Node binary instead of copying it (the lab, whose plugin runs on this machine). */
  readonly linkNode?: boolean;
  /** Where src/cni/plugin.ts is; default: this checkout or image. */
  readonly appDir?: string;
  /** The front end's binary; default: shimBinary(appDir). false: the Node plugin alone. */
  readonly shim?: string | false;
}

export interface Installed {
  /** What the runtime runs: `<binDir>/policyctl-cni`. */
  readonly wrapper: string;
  /** The version's folder. */
  readonly dir: string;
  /** Whether the native front end is installed, or why not. */
  readonly frontEnd: { readonly native: true } | { readonly native: false; readonly reason: string };
}

const ENTRY = `// policyctl-cni's entry point, written by \`policyctl install-cni\`.
import { main } from './plugin.mjs';
process.exitCode = await main();
`;

/** src/cni/plugin.ts as JavaScript; throws when it imports anything but a Node built-in. */
export function pluginJavaScript(source: string): string {
  // stripTypeScriptTypes is marked experimental and would print a warning on each install.
  const emit = process.emitWarning;
  process.emitWarning = () => {};
  let js: string;
  try {
    js = stripTypeScriptTypes(source, { mode: 'strip' });
  } finally {
    process.emitWarning = emit;
  }
  for (const m of js.matchAll(/^\s*(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]/gm)) {
    const spec = m[1] ?? m[2]!;
    if (!spec.startsWith('node:')) throw new Error(`policyctl-cni must import Node built-ins only (its install folder holds nothing else), but src/cni/plugin.ts imports ${JSON.stringify(spec)}`);
  }
  return js;
}

export async function installPlugin(o: InstallOptions): Promise<Installed> {
  const appDir = o.appDir ?? join(import.meta.dirname, '..', '..');
  const base = join(o.binDir, `${PLUGIN_NAME}.d`);
  const dir = join(base, o.version);
  const tmp = `${dir}.tmp-${process.pid}`;
  const node = o.node ?? process.execPath;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  if (o.linkNode) await symlink(node, join(tmp, 'node'));
  else {
    await copyFile(node, join(tmp, 'node'));
    await chmod(join(tmp, 'node'), 0o755);
  }
  await writeFile(join(tmp, 'plugin.mjs'), pluginJavaScript(await readFile(join(appDir, 'src', 'cni', 'plugin.ts'), 'utf8')));
  await writeFile(join(tmp, `${PLUGIN_NAME}.mjs`), ENTRY);
  await writeFile(join(tmp, 'package.json'), JSON.stringify({ name: PLUGIN_NAME, version: o.version, type: 'module', private: true }) + '\n');
  const shim: ShimBinary = o.shim === false ? { reason: 'not asked for' } : o.shim ? { path: o.shim } : await shimBinary(appDir);
  if ('path' in shim) {
    await copyFile(shim.path, join(tmp, PLUGIN_NAME));
    await chmod(join(tmp, PLUGIN_NAME), 0o755);
  }
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(tmp, dir);
  // Warm the compile cache where the wrapper will look for it: one VERSION call from the final
  // path (the cache is keyed by file path and content). A cache the runtime cannot write is
  // ignored by Node, so it only ever saves time.
  await warmCache(dir);
  const wrapper = join(o.binDir, PLUGIN_NAME);
  await rm(`${wrapper}.tmp`, { force: true });
  if ('path' in shim) {
    await symlink(join(`${PLUGIN_NAME}.d`, o.version, PLUGIN_NAME), `${wrapper}.tmp`);
  } else {
    const script = `#!/bin/sh\n# policyctl-cni ${o.version}, installed by \`policyctl install-cni\`: the chained CNI plugin that waits for the\n# node's policyctl agent to enforce a pod (ADD) and to forget its address (DEL).\nNODE_COMPILE_CACHE='${dir}/cache' exec '${dir}/node' '${dir}/${PLUGIN_NAME}.mjs' "$@"\n`;
    await writeFile(`${wrapper}.tmp`, script, { mode: 0o755 });
  }
  await rename(`${wrapper}.tmp`, wrapper);
  for (const e of await readdir(base)) if (e !== o.version) await rm(join(base, e), { recursive: true, force: true });
  return { wrapper, dir, frontEnd: 'path' in shim ? { native: true } : { native: false, reason: shim.reason } };
}

function warmCache(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      join(dir, 'node'),
      [join(dir, `${PLUGIN_NAME}.mjs`)],
      { env: { CNI_COMMAND: 'VERSION', NODE_COMPILE_CACHE: join(dir, 'cache') }, cwd: '/' },
      (err, stdout, stderr) => (err ? reject(new Error(`the installed policyctl-cni in ${dir} does not run (VERSION): ${err.message} ${stderr}`.trim())) : stdout.includes('supportedVersions') ? resolve() : reject(new Error(`the installed policyctl-cni in ${dir} answered VERSION with ${JSON.stringify(stdout)}`))),
    );
    child.stdin!.end('{"cniVersion":"1.0.0"}');
  });
}
