// The README's first command, as a user runs it: `policyctl lab demo` builds the two-node lab
// from examples/, measures the truth table with real connections before and after the example
// policies, compares both with `policyctl reach`, and removes the lab.

import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { nodeBinary } from '../../src/lab/processes.ts';
import { kernelTestsEnabled } from '../support/netns.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'policyctl.js');

describe.runIf(kernelTestsEnabled())('policyctl lab demo', () => {
  it('shows the policies acting on real packets and agreeing with reach, and leaves nothing behind', async () => {
    const name = `dm${process.pid % 100000}`;
    const { stdout } = await run(nodeBinary(), ['--no-warnings', BIN, 'lab', 'demo', '--name', name], { timeout: 120_000 });
    expect(stdout).toContain('== Before: no NetworkPolicy');
    expect(stdout).toContain('== After: examples/policies applied');
    // Both tables agree with the model, and the policies changed something.
    expect(stdout.match(/All \d+ probes agree with `policyctl reach`/g)).toHaveLength(2);
    const [before, after] = stdout.split('== After');
    expect(before).not.toMatch(/^shop\/\S+\s.*X/m);
    expect(after).toMatch(/^shop\/\S+\s.*X/m);
    const { stdout: list } = await run(nodeBinary(), ['--no-warnings', BIN, 'lab', 'list']);
    expect(list).not.toContain(name);
  }, 150_000);
});
