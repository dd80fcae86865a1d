// The README's pictures: the example cluster's connectivity graph before its policies
// (examples/workloads alone) and after them (examples/), as `policyctl reach -o dot` prints it,
// rendered by Graphviz. The DOT sources are committed next to the SVGs, and each SVG names the
// SHA-256 of the source it was rendered from, so test/docs/reach-images.test.ts can tell a stale
// picture from a current one without depending on the Graphviz version that drew it.
//
//   npm run docs:images              rewrite docs/img/reach-{before,after}.{dot,svg}
//   npm run docs:images -- --check   exit 1, naming the files, when they are not up to date

import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Io } from '../src/cli/io.ts';
import { main } from '../src/cli/main.ts';

export const root = new URL('../', import.meta.url).pathname;

export interface Picture {
  /** File name in docs/img, without extension. */
  readonly name: string;
  /** The `-f` arguments, relative to the repository. */
  readonly files: readonly string[];
}

export const PICTURES: readonly Picture[] = [
  { name: 'reach-before', files: ['examples/workloads'] },
  { name: 'reach-after', files: ['examples'] },
];

export const imgDir = join(root, 'docs/img');

/** What `policyctl reach -f ... -o dot` prints for the picture now (run in-process). */
export async function dotOf(p: Picture): Promise<string> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t), readStdin: async () => '' };
  const code = await main(['reach', ...p.files.flatMap((f) => ['-f', join(root, f)]), '-o', 'dot'], io);
  if (code !== 0) throw new Error(`policyctl reach for ${p.name} exited ${code}: ${err}`);
  return out;
}

export const digestOf = (text: string) => createHash('sha256').update(text).digest('hex');

/** The provenance line each SVG carries right after Graphviz's own comment. */
export const provenance = (p: Picture, dot: string) => `<!-- rendered from ${p.name}.dot sha256:${digestOf(dot)} by scripts/render-reach-images.ts -->`;

/** `dot -Tsvg` of the source, with the provenance line added after Graphviz's header comment. */
export function renderSvg(p: Picture, dot: string): string {
  const svg = execFileSync('dot', ['-Tsvg'], { input: dot, encoding: 'utf8' });
  const at = svg.indexOf('<svg');
  if (at < 0) throw new Error(`dot printed no <svg> element for ${p.name}`);
  return `${svg.slice(0, at)}${provenance(p, dot)}\n${svg.slice(at)}`;
}

async function run(check: boolean): Promise<number> {
  const stale: string[] = [];
  for (const p of PICTURES) {
    const dot = await dotOf(p);
    const dotPath = join(imgDir, `${p.name}.dot`);
    const svgPath = join(imgDir, `${p.name}.svg`);
    const read = (f: string) => {
      try {
        return readFileSync(f, 'utf8');
      } catch {
        return undefined;
      }
    };
    const current = read(dotPath) === dot && !!read(svgPath)?.includes(provenance(p, dot));
    if (check) {
      if (!current) stale.push(`docs/img/${p.name}.{dot,svg}`);
      continue;
    }
    writeFileSync(dotPath, dot);
    writeFileSync(svgPath, renderSvg(p, dot));
    process.stdout.write(`wrote docs/img/${p.name}.dot and .svg\n`);
  }
  if (stale.length) process.stderr.write(`not up to date (run npm run docs:images): ${stale.join(', ')}\n`);
  return stale.length ? 1 : 0;
}

if (import.meta.main) process.exitCode = await run(process.argv.includes('--check'));
