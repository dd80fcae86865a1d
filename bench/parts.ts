// Every benchmark part, in the order `bench/run.ts` runs them. Parts 3 (kernel sync) and 4
// (dataplane) add themselves here: write a `BenchPart` in bench/parts/<name>.ts and list it.

import type { BenchPart } from './harness.ts';
import { compilePart } from './parts/compile.ts';
import { dataplanePart } from './parts/dataplane.ts';
import { incrementalPart } from './parts/incremental.ts';

export const PARTS: readonly BenchPart[] = [compilePart, incrementalPart, dataplanePart];
