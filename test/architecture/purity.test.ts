// docs/design.md, "Layers": the model, semantics and compiler are pure. This test makes the rule
// checkable: it scans their imports and fails on any I/O module or a forbidden layer.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url).pathname;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

function importsOf(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/g)) out.push(m[1]!);
  for (const m of src.matchAll(/import\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  for (const m of src.matchAll(/(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g)) out.push(m[1]!);
  return out;
}

// Pure layers may import each other only downward: compiler -> model; semantics -> model; all of
// them -> util (helpers that import nothing of the project).
const rules: Record<string, { forbidden: RegExp[] }> = {
  'src/util': { forbidden: [/^node:/, /^(fs|path|os|child_process|net|http)$/, /execa/, /@kubernetes/, /pino/, /^\.\.?\//] },
  'src/model': { forbidden: [/^node:/, /^(fs|path|os|child_process|net|http)$/, /execa/, /@kubernetes/, /pino/, /\/(compiler|semantics|sync|watchers|agent|lab|cli|manifests)\//] },
  'src/semantics': { forbidden: [/^node:/, /^(fs|path|os|child_process|net|http)$/, /execa/, /@kubernetes/, /pino/, /\/(compiler|sync|watchers|agent|lab|cli|manifests)\//] },
  'src/compiler': { forbidden: [/^node:/, /^(fs|path|os|child_process|net|http)$/, /execa/, /@kubernetes/, /pino/, /\/(semantics|sync|watchers|agent|lab|cli|manifests)\//] },
};

describe('layer purity', () => {
  for (const [dir, rule] of Object.entries(rules)) {
    it(`${dir} imports no I/O module and no higher layer`, () => {
      const bad: string[] = [];
      for (const f of tsFiles(join(root, dir))) {
        for (const imp of importsOf(f)) if (rule.forbidden.some((r) => r.test(imp))) bad.push(`${relative(root, f)} imports ${imp}`);
      }
      expect(bad).toEqual([]);
    });
  }

  // The compiler hands the sync layer data: the sync layer imports its contract module
  // (types, the owned prefix) and nothing else of the compiler, so it renders and diffs the data
  // without depending on how it was built.
  it('src/sync imports nothing from src/compiler but the Ruleset contract (ruleset.ts)', () => {
    const bad: string[] = [];
    for (const f of tsFiles(join(root, 'src/sync'))) {
      for (const imp of importsOf(f)) if (/\/compiler\//.test(imp) && !/\/compiler\/ruleset\.ts$/.test(imp)) bad.push(`${relative(root, f)} imports ${imp}`);
    }
    expect(bad).toEqual([]);
  });

  it('the scanner sees imports (guards against a regex that matches nothing)', () => {
    const seen = tsFiles(join(root, 'src/compiler')).flatMap(importsOf);
    expect(seen).toContain('../model/store.ts');
  });
});
