// Where policyctl-cni's native front end (src/cni/shim/policyctl-cni.c) comes from at install:
// the image carries it prebuilt (deploy/Dockerfile builds it in a stage of its own); a checkout
// builds it once with the machine's C compiler (src/cni/shim/build.sh, the same flags), cached
// by the source's hash. Without either, the install is the Node plugin alone, which is correct
// but starts slower (src/cni/install.ts).

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Where the image keeps the prebuilt binary, under the app folder. */
export const PREBUILT_SHIM = join('lib', 'policyctl-cni');

export type ShimBinary = { readonly path: string } | { readonly reason: string };

/** The front end's binary for this app folder: prebuilt, cached, or built now. */
export async function shimBinary(appDir: string): Promise<ShimBinary> {
  const prebuilt = join(appDir, PREBUILT_SHIM);
  if (await exists(prebuilt)) return { path: prebuilt };
  const dir = join(appDir, 'src', 'cni', 'shim');
  let source: string;
  try {
    source = await readFile(join(dir, 'policyctl-cni.c'), 'utf8');
  } catch (e) {
    return { reason: `no prebuilt ${prebuilt} and no source to build it: ${(e as Error).message}` };
  }
  const hash = createHash('sha256').update(source).update(await readFile(join(dir, 'build.sh'), 'utf8')).digest('hex').slice(0, 16);
  const cache = join(appDir, 'node_modules', '.cache', 'policyctl-cni');
  const out = join(cache, `policyctl-cni-${hash}`);
  if (await exists(out)) return { path: out };
  try {
    await mkdir(cache, { recursive: true });
    await new Promise<void>((resolve, reject) =>
      execFile('sh', [join(dir, 'build.sh'), out], { timeout: 120_000 }, (err, _stdout, stderr) => (err ? reject(new Error(`${err.message.split('\n')[0]} ${stderr}`.trim())) : resolve())),
    );
  } catch (e) {
    return { reason: `cannot build ${join(dir, 'policyctl-cni.c')} (a C compiler and static libc are needed: gcc, libc6-dev): ${(e as Error).message}` };
  }
  return { path: out };
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
