// Part 5: what loading a big `kubectl get -o yaml` dump costs: peak RSS of a fresh process
// reading a 10 MB and a 30 MB List (and the JSON of the 10 MB one) into a Model.
//
// Target (issue 9): the peak stays within about 3x the file size plus the model, i.e.
// peak <= node runtime + 3 x file + model. `load_overhead_x_<size>` is (peak - runtime - model)
// / file size: the loader's own cost in multiples of the file.

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { BenchOptions, BenchPart, Cell, PartResult, Target } from '../harness.ts';
import { target } from '../harness.ts';
import { clusterJson, clusterOfSize, clusterYaml } from '../manifests.ts';

const here = fileURLToPath(new URL('..', import.meta.url));

interface ChildResult {
  readonly objects: number;
  readonly errors: number;
  readonly pods: number;
  readonly ms: number;
  readonly baseline: number;
  readonly peak: number;
  readonly model: number;
}

async function loadIn(file: string): Promise<ChildResult> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-gc', `${here}load-child.ts`, file], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as ChildResult;
}

export const loadPart: BenchPart = {
  name: 'load',
  title: 'Part 5: loading a big manifest dump',
  async run(o: BenchOptions): Promise<PartResult> {
    const sizes = o.quick ? [10] : [10, 30];
    const dir = mkdtempSync(join(tmpdir(), 'pctl-bench-load-'));
    const rows: Cell[][] = [];
    const metrics: Record<string, Cell> = {};
    const targets: Target[] = [];
    try {
      for (const mb of sizes) {
        o.progress(`load: generating a ${mb} MB dump`);
        const c = clusterOfSize(mb, o.seed);
        const files: [string, string][] = [[`yaml`, join(dir, `cluster-${mb}.yaml`)]];
        writeFileSync(files[0]![1], clusterYaml(c));
        if (mb === 10) {
          files.push(['json', join(dir, `cluster-${mb}.json`)]);
          writeFileSync(files[1]![1], clusterJson(c));
        }
        for (const [format, file] of files) {
          const fileMb = statSync(file).size / 1e6;
          o.progress(`load: ${format} ${fileMb.toFixed(1)} MB in a fresh process`);
          const r = await loadIn(file);
          const overhead = (r.peak - r.baseline - r.model) / fileMb;
          const budget = Math.round(r.baseline + 3 * fileMb + r.model);
          rows.push([format, fileMb, r.objects, r.errors, r.ms / 1000, r.baseline, r.model, r.peak, budget, overhead]);
          const key = `${mb}mb${format === 'json' ? '_json' : ''}`;
          Object.assign(metrics, { [`load_peak_rss_mb_${key}`]: r.peak, [`load_model_mb_${key}`]: r.model, [`load_seconds_${key}`]: r.ms / 1000, [`load_overhead_x_${key}`]: overhead });
          if (format === 'yaml') targets.push(target(`load_peak_rss_mb_${key}`, r.peak, budget, 'MB'));
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return {
      tables: [
        {
          title: 'loadManifests + buildModel of one kubectl List dump, in a fresh process',
          columns: ['format', 'file MB', 'objects', 'errors', 'seconds', 'runtime MB', 'model MB', 'peak RSS MB', 'budget MB', 'loader x file'],
          rows,
          notes: [
            'runtime: RSS before the load; model: heap the Model holds after GC; peak: ru_maxrss over the load.',
            'budget = runtime + 3 x file + model (the target); loader x file = (peak - runtime - model) / file size.',
            'errors: the synthetic cluster gives nodes past the 255th an address ending in .256 (its hostNetwork pods are refused too).',
          ],
        },
      ],
      metrics,
      targets,
      notes: o.quick ? ['quick mode: the 30 MB dump is skipped.'] : [],
    };
  },
};
