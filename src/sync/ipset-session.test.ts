import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { propertyRuns } from '../../test/support/property.ts';
import { agentRunner } from './agent-runner.ts';
import { processRunner } from './runner.ts';

describe.runIf(kernelTestsEnabled())('ipset session on the real kernel', () => {
  let net: TestNetns;
  let runner: ReturnType<typeof agentRunner>;
  beforeEach(() => {
    net = createNetns('pctl-is');
    runner = agentRunner(net.name, { maxLines: 8 });
  });
  afterEach(() => {
    runner.close();
    net.remove();
  });

  const restore = (input: string) => runner.run('ipset', ['restore', '-exist'], { input });
  const members = (set: string) =>
    net
      .sh(`ipset list ${set} | sed -n '/^Members:/,$p' | tail -n +2`)
      .split('\n')
      .filter(Boolean)
      .sort();

  it('applies small payloads in one long-lived process, and the kernel holds what restore would', async () => {
    expect(await restore('create a hash:ip family inet\nadd a 10.0.0.1\nadd a 10.0.0.2\n')).toEqual({ stdout: '', stderr: '', exitCode: 0 });
    expect(await restore('add a 10.0.0.3\ndel a 10.0.0.1\nadd a 10.0.0.2\n')).toMatchObject({ exitCode: 0 }); // -exist: a present entry is fine
    expect(members('a')).toEqual(['10.0.0.2', '10.0.0.3']);
    expect(runner.session.calls).toBe(2);
    // One ipset process in this namespace served both calls (pgrep would see every namespace's).
    const pids = execFileSync('ip', ['netns', 'pids', net.name], { encoding: 'utf8' }).split('\n').filter(Boolean);
    const ipsets = pids.filter((p) => {
      try {
        return readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'ipset';
      } catch {
        return false;
      }
    });
    expect(ipsets).toHaveLength(1);
  });

  it('names the first failing line as ipset restore does, and goes on serving', async () => {
    const r = await restore('create a hash:ip family inet\nadd a 10.0.0.1\nadd nosuch 10.0.0.2\nadd a 0.0.0.0\n');
    expect(r.exitCode).toBe(1);
    expect(r.stderr.split('\n')[0]).toMatch(/^ipset v[\d.]+: Error in line 3: The set with the given name does not exist$/);
    expect(r.stderr).toMatch(/Error in line 4: Null-valued element/);
    expect(await restore('add a 10.0.0.9\n')).toMatchObject({ exitCode: 0 });
    expect(members('a')).toEqual(['10.0.0.1', '10.0.0.9']);
  });

  it('sends payloads above maxLines to ipset restore, which stops at its first failing line', async () => {
    const big = ['create b hash:ip family inet', ...Array.from({ length: 10 }, (_, i) => `add b 10.0.1.${i + 1}`)].join('\n') + '\n';
    expect(await restore(big)).toMatchObject({ exitCode: 0 });
    expect(runner.session.calls).toBe(0);
    expect(members('b')).toHaveLength(10);
  });

  it('starts a new process when the last one died, and fails the call it was in', async () => {
    expect(await restore('create c hash:ip family inet\n')).toMatchObject({ exitCode: 0 });
    for (const p of execFileSync('ip', ['netns', 'pids', net.name], { encoding: 'utf8' }).split('\n').filter(Boolean)) if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'ipset') process.kill(Number(p));
    // The next call either sees the death first (a new process serves it) or is cut by it.
    const r = await restore('add c 10.0.2.1\n');
    if (r.exitCode !== 0) expect(r.stderr).toMatch(/ipset session exited/);
    expect(await restore('add c 10.0.2.2\n')).toMatchObject({ exitCode: 0 });
    expect(members('c')).toContain('10.0.2.2');
  });

  it('after close(), everything goes to ipset restore', async () => {
    runner.close();
    expect(await restore('create d hash:ip family inet\nadd d 10.0.3.1\n')).toMatchObject({ exitCode: 0 });
    expect(runner.session.calls).toBe(0);
    expect(members('d')).toEqual(['10.0.3.1']);
  });

  const SAVE = "ipset save | sed 's/ initval 0x[0-9a-f]*//' | sort"; // initval is random per set
  // Random small payloads (creates, adds, dels, flushes, some failing; a network added to a
  // hash:ip set is a /30, so a save stays small): whenever restore
  // succeeds the session succeeds and leaves the same sets; whenever restore fails the session
  // fails and names the same line or an earlier one (the first that fails: see below).
  it('agrees with ipset restore on random payloads (success, first failing line, resulting sets)', async () => {
    const other = createNetns('pctl-is');
    const plain = processRunner(other.name);
    try {
      const line = fc.oneof(
        fc.constantFrom('create s1 hash:ip family inet', 'create s2 hash:net family inet', 'flush s1', 'destroy s2', 'create s1 hash:net family inet'),
        fc.tuple(fc.constantFrom('add', 'del'), fc.constantFrom('s1', 's2', 'nosuch'), fc.constantFrom('10.1.0.1', '10.1.0.2', '10.2.0.0/30', '0.0.0.0')).map(([op, s, e]) => `${op} ${s} ${e}`),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(line, { minLength: 1, maxLength: 8 }), async (lines) => {
          for (const n of [net, other]) n.sh('ipset destroy 2>/dev/null || true');
          const input = lines.join('\n') + '\n';
          const [a, b] = [await restore(input), await plain.run('ipset', ['restore', '-exist'], { input })];
          expect(a.exitCode === 0, `${input}\nsession: ${a.stderr}\nrestore: ${b.stderr}`).toBe(b.exitCode === 0);
          const lineOf = (s: string) => Number(/Error in line (\d+)/.exec(s)?.[1] ?? NaN);
          // The same line, or an earlier one: restore batches adds for the kernel, so an error it
          // finds itself (a set that does not exist, line 3) can be reported before an earlier add
          // the kernel refuses (0.0.0.0, line 2) was ever sent; the session runs each line alone.
          if (b.exitCode !== 0) expect(lineOf(a.stderr), `${input}\nsession: ${a.stderr}\nrestore: ${b.stderr}`).toBeLessThanOrEqual(lineOf(b.stderr));
          if (b.exitCode === 0) expect(net.sh(SAVE)).toBe(other.sh(SAVE));
        }),
        // The payload where restore names line 3 and the session line 2, tried every run.
        { numRuns: propertyRuns(40), examples: [[['create s1 hash:ip family inet', 'add s1 0.0.0.0', 'add nosuch 10.1.0.1', 'create s1 hash:ip family inet']]] },
      );
    } finally {
      other.remove();
    }
  }, 60_000);
});
