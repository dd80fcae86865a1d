// Running a property of the test suite: the number of runs (PROPERTY_RUNS overrides a file's
// default), the seed (PROPERTY_SEED replays a failure), and a failure message that says how to
// replay it. Every property test asserts that all its runs ran.

import fc from 'fast-check';
import { expect } from 'vitest';
import type { Mutator } from './dataplane.ts';

/** PROPERTY_RUNS, or the file's default. */
export function propertyRuns(dflt: number): number {
  return Number(process.env['PROPERTY_RUNS'] ?? dflt);
}

const SEED = process.env['PROPERTY_SEED'] ? Number(process.env['PROPERTY_SEED']) : undefined;

/** Checks `prop` on `runs` random inputs (PROPERTY_SEED's if set); throws naming the seed and path. */
export function checkProperty<T>(prop: fc.IProperty<T>, runs: number): void {
  const result = fc.check(prop, { numRuns: runs, ...(SEED !== undefined ? { seed: SEED } : {}) });
  if (result.failed) {
    throw new Error(`property failed with seed ${result.seed} (replay: PROPERTY_SEED=${result.seed}), path ${result.counterexamplePath}\n${result.errorInstance instanceof Error ? result.errorInstance.message : String(result.errorInstance)}`);
  }
  expect(result.numRuns).toBe(runs);
}

/**
 * A mutation test: `property` built with a mutator that rewrites the rendered rules must fail
 * (fixed seed 42, `runs` runs), and the mutation must have applied at least once (else it
 * tests nothing).
 */
export function expectMutationCaught<T>(what: string, mutate: Mutator, property: (spy: Mutator) => fc.IProperty<T>, runs: number): void {
  let mutated = false;
  const spy: Mutator = (t, n) => {
    const m = mutate(t, n);
    if (m !== t) mutated = true;
    return m;
  };
  const result = fc.check(property(spy), { numRuns: runs, seed: 42 });
  expect(mutated, 'the mutation never applied: it tests nothing').toBe(true);
  expect(result.failed, `the property did not notice: ${what}`).toBe(true);
}
