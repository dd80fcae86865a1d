// Memory of a process holding one synthetic cluster's model and its compiled Ruleset, measured
// in a fresh process so that nothing else the benchmark did is counted. Run by the compile
// part (`node --expose-gc bench/rss-child.ts --pods 10000 --policies 2000 --node node-001`);
// prints one JSON line on stdout.

import { parseArgs } from 'node:util';
import { compile } from '../src/compiler/compile.ts';
import { IncrementalCompiler } from '../src/compiler/incremental.ts';
import { collect, gcAvailable, memoryMb } from './harness.ts';
import { generateCluster } from './synthetic.ts';

const { values } = parseArgs({
  options: { pods: { type: 'string' }, policies: { type: 'string' }, node: { type: 'string', default: 'node-001' }, seed: { type: 'string', default: '1' } },
});

collect();
const baseline = memoryMb();
// Keep only what an agent keeps: the model (the generator's own lists go).
const model = (() => generateCluster({ pods: Number(values.pods), policies: Number(values.policies), seed: Number(values.seed) }).model)();
collect();
const modelOnly = memoryMb();
const rs = compile(model, values.node!);
collect();
const withRuleset = memoryMb();
const ic = new IncrementalCompiler(model, values.node!);
const rs2 = ic.ruleset();
collect();
const withIncremental = memoryMb();
process.stdout.write(
  JSON.stringify({
    gc: gcAvailable,
    baseline,
    modelOnly,
    withRuleset,
    withIncremental,
    held: [rs.sets.length, rs2.sets.length],
  }) + '\n',
);
