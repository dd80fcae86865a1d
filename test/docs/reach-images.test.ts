// The README's pictures (docs/img/reach-*.svg) must show what `policyctl reach -o dot` prints
// for the example cluster now: a change to the DOT output or to examples/ that is not followed
// by `npm run docs:images` fails here.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PICTURES, dotOf, imgDir, provenance, renderSvg, root } from '../../scripts/render-reach-images.ts';

// Graphviz is installed by scripts/setup.sh: under CI=true its absence fails, never skips.
const renderTests = process.env.CI === 'true' || spawnSync('dot', ['-V'], { stdio: 'ignore' }).status === 0;

/** What a picture shows, whatever Graphviz version laid it out: titles (clusters, nodes, edges) and texts. */
function content(svg: string): { titles: string[]; texts: string[] } {
  const all = (re: RegExp) => [...svg.matchAll(re)].map((m) => m[1]!).sort();
  return { titles: all(/<title>([^<]*)<\/title>/g), texts: all(/<text[^>]*>([^<]*)<\/text>/g) };
}

describe.each(PICTURES.map((p) => [p.name, p] as const))('docs/img/%s', (name, p) => {
  const committedDot = readFileSync(join(imgDir, `${name}.dot`), 'utf8');
  const committedSvg = readFileSync(join(imgDir, `${name}.svg`), 'utf8');

  it('is the DOT that policyctl reach -o dot prints for the example now', async () => {
    expect(committedDot).toBe(await dotOf(p));
  });

  it('was rendered from that DOT source', () => {
    expect(committedSvg).toContain(provenance(p, committedDot));
  });

  it.skipIf(!renderTests)('shows the clusters, pods, edges and labels a fresh rendering shows', () => {
    const fresh = content(renderSvg(p, committedDot));
    expect(fresh.titles.length).toBeGreaterThan(2);
    expect(content(committedSvg)).toEqual(fresh);
  });

  it('is shown in the README', () => {
    expect(readFileSync(join(root, 'README.md'), 'utf8')).toContain(`docs/img/${name}.svg`);
  });
});
