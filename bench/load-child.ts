// Memory of loading one manifest file, in a fresh process so nothing else is counted. Run by the
// load part: `node --expose-gc bench/load-child.ts FILE`; prints one JSON line on stdout.
//
// The process is set up as policyctl's own (src/cli/v8-tuning.ts) before anything is loaded.
// peak: the process's maximum resident set (getrusage ru_maxrss) over the whole load;
// baseline: RSS before the load (Node runtime and the loader's code); model: the heap the
// Model built from the file holds once the load's own data is dropped (after GC).

import { tuneV8 } from '../src/cli/v8-tuning.ts';

tuneV8();
const { buildModel, loadManifests } = await import('../src/manifests/load.ts');
const { collect, gcAvailable, memoryMb } = await import('./harness.ts');

const file = process.argv[2];
if (!file) throw new Error('usage: load-child.ts FILE');
collect();
const baseline = memoryMb();
const t0 = performance.now();
const loaded = await (async () => {
  const r = await loadManifests([file]);
  return { model: buildModel(r), objects: r.objects.length, errors: r.diagnostics.filter((d) => d.severity === 'error').length };
})();
const ms = performance.now() - t0;
collect();
const held = memoryMb();
const peak = process.resourceUsage().maxRSS / 1024;
process.stdout.write(
  JSON.stringify({ gc: gcAvailable, objects: loaded.objects, errors: loaded.errors, pods: [...loaded.model.allPods()].length, ms, baseline: baseline.rss, peak, model: held.heapUsed - baseline.heapUsed }) + '\n',
);
