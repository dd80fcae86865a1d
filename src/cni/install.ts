// Installing policyctl-cni on a node (`policyctl install-cni`, the DaemonSet's init container).
//
// The container runtime runs CNI plugins on the host, by name, from its CNI bin folder; the
// plugin is a Node script, and the host has no Node of its own (or an old one). So the install
// puts beside the plugins a folder holding this Node binary, the plugin's two files and a
// package.json, and a small `policyctl-cni` shell script that runs them:
//
//   /opt/cni/bin/policyctl-cni                    #!/bin/sh  exec <dir>/node <dir>/bin/policyctl-cni.js
//   /opt/cni/bin/policyctl-cni.d/<version>/node   the image's Node (glibc, libstdc++ on the host)
//   /opt/cni/bin/policyctl-cni.d/<version>/{bin/policyctl-cni.js, src/cni/plugin.ts, package.json}
//
// Each step replaces by rename, so a plugin run by the runtime during an upgrade sees the old
// install or the new one, never half of one. Other versions' folders are removed afterwards.

import { chmod, copyFile, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export const PLUGIN_NAME = 'policyctl-cni';

export interface InstallOptions {
  /** The host's CNI bin folder (as mounted), e.g. /opt/cni/bin. */
  readonly binDir: string;
  readonly version: string;
  /** The Node binary to copy; default: this process's. */
  readonly node?: string;
  /** Where bin/ and src/ are; default: this checkout or image. */
  readonly appDir?: string;
}

export async function installPlugin(o: InstallOptions): Promise<{ wrapper: string; dir: string }> {
  const appDir = o.appDir ?? join(import.meta.dirname, '..', '..');
  const base = join(o.binDir, `${PLUGIN_NAME}.d`);
  const dir = join(base, o.version);
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(join(tmp, 'bin'), { recursive: true });
  await mkdir(join(tmp, 'src', 'cni'), { recursive: true });
  await copyFile(o.node ?? process.execPath, join(tmp, 'node'));
  await chmod(join(tmp, 'node'), 0o755);
  await copyFile(join(appDir, 'bin', `${PLUGIN_NAME}.js`), join(tmp, 'bin', `${PLUGIN_NAME}.js`));
  await copyFile(join(appDir, 'src', 'cni', 'plugin.ts'), join(tmp, 'src', 'cni', 'plugin.ts'));
  await writeFile(join(tmp, 'package.json'), JSON.stringify({ name: PLUGIN_NAME, version: o.version, type: 'module', private: true }) + '\n');
  const old = `${dir}.old-${process.pid}`;
  await rename(dir, old).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e;
  });
  await rename(tmp, dir);
  const wrapper = join(o.binDir, PLUGIN_NAME);
  const script = `#!/bin/sh\n# policyctl-cni ${o.version}, installed by \`policyctl install-cni\`: the chained CNI plugin that waits for the\n# node's policyctl agent to enforce a pod (ADD) and to forget its address (DEL).\nexec '${dir}/node' '${dir}/bin/${PLUGIN_NAME}.js' "$@"\n`;
  await writeFile(`${wrapper}.tmp`, script, { mode: 0o755 });
  await rename(`${wrapper}.tmp`, wrapper);
  for (const e of await readdir(base)) if (e !== o.version) await rm(join(base, e), { recursive: true, force: true });
  return { wrapper, dir };
}
