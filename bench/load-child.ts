// Memory of loading one manifest file, in a fresh process so nothing else is counted. Run by the
// load part: `node --expose-gc bench/load-child.ts FILE`; prints one JSON line on stdout.
//
// peak: the process's maximum resident set (getrusage ru_maxrss) over the whole load;
// baseline: RSS before the load (Node runtime and the loader's code); model: RSS after GC
// holding the Model built from the file (the load's own data dropped).

import { buildModel, loadManifests } from '../src/manifests/load.ts';
import { collect, gcAvailable, memoryMb } from './harness.ts';

const file = process.argv[2];
if (!file) throw new Error('usage: load-child.ts FILE');
collect();
const baseline = memoryMb();
const t0 = performance.now();
const model = await (async () => {
  const r = await loadManifests([file]);
  const errors = r.diagnostics.filter((d) => d.severity === 'error').length;
  void errors;
  return { model: buildModel(r), objects: r.objects.length };
})();
const ms = performance.now() - t0;
collect();
const held = memoryMb();
const peakMb = process.resourceUsage().maxRSS / 1024;
process.stdout.write(
  JSON.stringify({ gc: gcAvailable, objects: model.objects, ms, baseline: baseline.rss, peak: peakMb, model: held.rss, heapUsed: held.heapUsed, pods: [...model.model.allPods()].length }) + '\n',
);
