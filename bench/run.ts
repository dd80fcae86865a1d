// Benchmarks and performance at cluster scale.
//
//   node --expose-gc bench/run.ts [--quick] [--json FILE] [--only compile,incremental] [--seed N]
//
// Prints one table per part on stdout (progress on stderr) and, with --json, writes every
// metric, the targets and the raw samples to FILE. See bench/README.md for what each figure
// means. Use the Node 24 binary (node_modules/.bin/node, or `npm run bench`).

import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { formatTable, formatTargets, gcAvailable, type BenchOptions, type Cell, type PartResult, type Target } from './harness.ts';
import { PARTS } from './parts.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    json: { type: 'string' },
    only: { type: 'string' },
    seed: { type: 'string', default: '1' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help) {
  process.stdout.write(`usage: node --expose-gc bench/run.ts [--quick] [--json FILE] [--only ${PARTS.map((p) => p.name).join(',')}] [--seed N]\n`);
  process.exit(0);
}

const only = values.only ? values.only.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
const unknown = (only ?? []).filter((n) => !PARTS.some((p) => p.name === n));
if (unknown.length) {
  process.stderr.write(`unknown part(s): ${unknown.join(', ')}; known: ${PARTS.map((p) => p.name).join(', ')}\n`);
  process.exit(2);
}
const seed = Number(values.seed);
if (!Number.isInteger(seed)) {
  process.stderr.write(`--seed must be an integer, got ${JSON.stringify(values.seed)}\n`);
  process.exit(2);
}

const started = Date.now();
const progress = (line: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}\n`);
const opts: BenchOptions = { quick: values.quick, seed, progress };

const env = {
  node: process.version,
  platform: `${os.platform()} ${os.release()} ${os.arch()}`,
  cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'unknown'}`,
  memory_gb: Math.round(os.totalmem() / 2 ** 30),
  expose_gc: gcAvailable,
  /** 1-minute load average at the start: other processes on the machine show up in p99 and max. */
  load_average_start: Math.round(os.loadavg()[0]! * 100) / 100,
  quick: opts.quick,
  seed,
};
process.stdout.write(
  `# policyctl benchmarks${opts.quick ? ' (quick)' : ''}\n\nnode ${env.node}, ${env.cpus}, ${env.memory_gb} GB, --expose-gc: ${env.expose_gc ? 'yes' : 'no'}, seed ${seed}, load average ${env.load_average_start}\n\n`,
);

const metrics: Record<string, Cell> = {};
const targets: Target[] = [];
const parts: Record<string, { title: string; seconds: number; notes: readonly string[]; tables: PartResult['tables']; detail?: unknown }> = {};
for (const part of PARTS) {
  if (only && !only.includes(part.name)) continue;
  progress(`part ${part.name}: ${part.title}`);
  const t0 = performance.now();
  const r = await part.run(opts);
  const seconds = (performance.now() - t0) / 1000;
  process.stdout.write(`# ${part.title}\n\n`);
  for (const n of r.notes ?? []) process.stdout.write(`note: ${n}\n`);
  if (r.notes?.length) process.stdout.write('\n');
  for (const t of r.tables) process.stdout.write(formatTable(t) + '\n');
  Object.assign(metrics, r.metrics);
  targets.push(...(r.targets ?? []));
  parts[part.name] = { title: part.title, seconds: Math.round(seconds * 10) / 10, notes: r.notes ?? [], tables: r.tables, detail: r.detail };
  progress(`part ${part.name} done in ${seconds.toFixed(1)} s`);
}
if (targets.length) process.stdout.write(formatTargets(targets) + '\n');

const loadEnd = Math.round(os.loadavg()[0]! * 100) / 100;
process.stdout.write(`load average at the end: ${loadEnd}\n`);

if (values.json) {
  const report = { ...metrics, targets, env: { ...env, load_average_end: loadEnd }, parts, generated_at: new Date().toISOString() };
  writeFileSync(values.json, JSON.stringify(report, null, 2) + '\n');
  progress(`wrote ${values.json}`);
}
