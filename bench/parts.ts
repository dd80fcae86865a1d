// Every benchmark part, in the order `bench/run.ts` runs them (the kernel-bound ones last):
// write a `BenchPart` in bench/parts/<name>.ts and list it.

import type { BenchPart } from './harness.ts';
import { agentPart } from './parts/agent.ts';
import { cniPart } from './parts/cni.ts';
import { compilePart } from './parts/compile.ts';
import { dataplanePart } from './parts/dataplane.ts';
import { droplogPart } from './parts/droplog.ts';
import { incrementalPart } from './parts/incremental.ts';
import { kernelPart } from './parts/kernel.ts';
import { loadPart } from './parts/load.ts';

export const PARTS: readonly BenchPart[] = [compilePart, incrementalPart, loadPart, kernelPart, dataplanePart, cniPart, agentPart, droplogPart];
