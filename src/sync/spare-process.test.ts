// The spare restore processes on the real kernel: what a spare started before a change in the
// kernel applies (the assumption the design rests on: it reads nothing of the kernel before its
// input ends), that each call after the first finds a spare, and what happens to a spare that
// died, to other commands and arguments, and on close; for `ipset restore`, the same assumption,
// a slot of its own beside iptables-nft-restore's, and the agent's runner sending big set
// payloads to it and small ones to the session.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createNetns, kernelTestsEnabled, type TestNetns } from '../../test/support/netns.ts';
import { SPARE_AFTER_QUIET_MS, SpareProcesses } from './spare-process.ts';
import { SESSION_LINES, agentRunner } from './agent-runner.ts';

const ARGS = ['--noflush', '--wait=5'];

/** The processes of the namespace whose command line (argv) passes `test`. */
function processesIn(net: TestNetns, test: (argv: string[]) => boolean): string[] {
  return execFileSync('ip', ['netns', 'pids', net.name], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .filter((p) => {
      try {
        return test(readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0'));
      } catch {
        return false;
      }
    });
}

/** Wait (up to 2 s) until `list` gives one process, and expect exactly one. */
async function untilOne(list: () => string[]): Promise<void> {
  for (let i = 0; i < 200 && list().length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(list()).toHaveLength(1);
}

describe.runIf(kernelTestsEnabled())('spare iptables-nft-restore on the real kernel', () => {
  let net: TestNetns;
  let spares: SpareProcesses;
  beforeEach(() => {
    net = createNetns('pctl-sp');
    spares = new SpareProcesses(net.name);
  });
  afterEach(() => {
    spares.close();
    net.remove();
  });

  const restore = (input: string, args = ARGS) => spares.run('iptables-nft-restore', args, input);
  const restores = () => processesIn(net, (cmdline) => cmdline[0]!.endsWith('iptables-nft-restore'));
  const untilSpare = () => untilOne(restores);

  it('a spare started before the kernel changed applies its input against the kernel as it is then', async () => {
    expect(await restore('*filter\n:PCTL-A - [0:0]\n-A PCTL-A -j RETURN\nCOMMIT\n')).toEqual({ stdout: '', stderr: '', exitCode: 0 });
    await untilSpare();
    // Changed behind the spare's back: a chain it never saw, a rule it must find to delete.
    net.sh('iptables-nft -N PCTL-B && iptables-nft -A PCTL-B -s 10.0.0.1 -j DROP && iptables-nft -A PCTL-A -s 10.0.0.2 -j DROP');
    const r = await restore('*filter\n-A PCTL-B -s 10.0.0.3 -j DROP\n-D PCTL-A -s 10.0.0.2 -j DROP\nCOMMIT\n');
    expect(r).toEqual({ stdout: '', stderr: '', exitCode: 0 });
    expect(spares.counts).toEqual({ spare: 1, fresh: 1 });
    expect(net.sh('iptables-nft -S PCTL-B')).toBe('-N PCTL-B\n-A PCTL-B -s 10.0.0.1/32 -j DROP\n-A PCTL-B -s 10.0.0.3/32 -j DROP\n');
    expect(net.sh('iptables-nft -S PCTL-A')).toBe('-N PCTL-A\n-A PCTL-A -j RETURN\n');
  });

  it('a failed transaction is reported by a spare as by a fresh process, and applies nothing', async () => {
    await restore('*filter\n:PCTL-A - [0:0]\nCOMMIT\n');
    await untilSpare();
    const r = await restore('*filter\n-A PCTL-A -j RETURN\n-A PCTL-NONE -j RETURN\nCOMMIT\n');
    expect(r!.exitCode).not.toBe(0);
    expect(r!.stderr).toMatch(/line 3/);
    expect(net.sh('iptables-nft -S PCTL-A')).toBe('-N PCTL-A\n');
  });

  it('a spare that died is replaced by a fresh process for the call; other arguments get their own; close ends the spare', async () => {
    await restore('*filter\n:PCTL-A - [0:0]\nCOMMIT\n');
    await untilSpare();
    execFileSync('kill', ['-9', ...restores()]);
    for (let i = 0; i < 100 && restores().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await restore('*filter\n-A PCTL-A -j RETURN\nCOMMIT\n')).toMatchObject({ exitCode: 0 });
    expect(net.sh('iptables-nft -S PCTL-A')).toBe('-N PCTL-A\n-A PCTL-A -j RETURN\n');
    await untilSpare();
    // Other arguments: the spare is not used (killed), a process of their own runs.
    const before = { ...spares.counts };
    expect(await restore('*filter\n-F PCTL-A\nCOMMIT\n', ['--noflush', '--wait=9'])).toMatchObject({ exitCode: 0 });
    expect(spares.counts).toEqual({ spare: before.spare, fresh: before.fresh + 1 });
    expect(net.sh('iptables-nft -S PCTL-A')).toBe('-N PCTL-A\n');
    // Only iptables-nft-restore is served.
    expect(await spares.run('iptables-legacy-restore', ARGS, '')).toBeUndefined();
    await untilSpare();
    spares.close();
    for (let i = 0; i < 100 && restores().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(restores()).toEqual([]);
    expect(await restore('*filter\nCOMMIT\n')).toBeUndefined();
  });
});

describe.runIf(kernelTestsEnabled())('spare ipset restore on the real kernel', () => {
  let net: TestNetns;
  beforeEach(() => {
    net = createNetns('pctl-si');
  });
  afterEach(() => {
    net.remove();
  });
  const ipsetRestores = () => processesIn(net, (cmdline) => cmdline[0]!.endsWith('ipset') && cmdline[1] === 'restore');
  const untilSpare = () => untilOne(ipsetRestores);

  it('a spare started before a set existed adds to it; it has a slot of its own beside iptables-nft-restore', async () => {
    const spares = new SpareProcesses(net.name);
    try {
      expect(await spares.run('ipset', ['restore', '-exist'], 'create PCTL-SA hash:ip\n')).toEqual({ stdout: '', stderr: '', exitCode: 0 });
      expect(await spares.run('iptables-nft-restore', ARGS, '*filter\n:PCTL-A - [0:0]\nCOMMIT\n')).toMatchObject({ exitCode: 0 });
      // Each is started once the runner has been quiet for a moment after its own call.
      for (let i = 0; i < 200 && !(spares.ready('ipset', ['restore', '-exist']) && spares.ready('iptables-nft-restore', ARGS)); i++) await new Promise((r) => setTimeout(r, 10));
      await untilSpare();
      expect(spares.ready('ipset', ['restore', '-exist'])).toBe(true);
      expect(spares.ready('iptables-nft-restore', ARGS)).toBe(true);
      // Created behind the spare's back.
      net.sh('ipset create PCTL-SB hash:ip');
      expect(await spares.run('ipset', ['restore', '-exist'], 'add PCTL-SB 10.0.0.1\nadd PCTL-SA 10.0.0.2\n')).toEqual({ stdout: '', stderr: '', exitCode: 0 });
      expect(spares.counts.spare).toBe(1);
      expect(net.sh('ipset list PCTL-SB -o save')).toContain('add PCTL-SB 10.0.0.1');
      expect(net.sh('ipset list PCTL-SA -o save')).toContain('add PCTL-SA 10.0.0.2');
      // A failing line is reported as a fresh process reports it.
      await untilSpare();
      const r = await spares.run('ipset', ['restore', '-exist'], 'add PCTL-NONE 10.0.0.3\n');
      expect(r!.exitCode).not.toBe(0);
      expect(r!.stderr).toMatch(/line 1/);
      // Other arguments are not served.
      expect(await spares.run('ipset', ['restore'], '')).toBeUndefined();
    } finally {
      spares.close();
    }
    for (let i = 0; i < 100 && ipsetRestores().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(ipsetRestores()).toEqual([]);
  });

  it(`the agent's runner: set payloads of more than ${SESSION_LINES} lines go to the waiting spare, smaller ones to the session`, async () => {
    const runner = agentRunner(net.name);
    try {
      const payload = (set: string, n: number) => [`create ${set} hash:ip`, ...Array.from({ length: n - 1 }, (_, k) => `add ${set} 10.1.${k >> 8}.${k & 255}`)].join('\n') + '\n';
      // The first big one starts a process of its own (no spare yet); then a spare waits.
      expect(await runner.run('ipset', ['restore', '-exist'], { input: payload('PCTL-S1', 500) })).toMatchObject({ exitCode: 0 });
      await untilSpare();
      const sessionCalls = runner.session.calls;
      expect(await runner.run('ipset', ['restore', '-exist'], { input: payload('PCTL-S2', 500) })).toMatchObject({ exitCode: 0 });
      expect(runner.spares.counts.spare).toBe(1);
      expect(runner.session.calls).toBe(sessionCalls);
      expect(await runner.run('ipset', ['restore', '-exist'], { input: payload('PCTL-S3', SESSION_LINES) })).toMatchObject({ exitCode: 0 });
      expect(runner.session.calls).toBe(sessionCalls + 1);
      expect(runner.spares.counts.spare).toBe(1);
      for (const set of ['PCTL-S1', 'PCTL-S2']) expect(net.sh(`ipset list ${set} -o save`).split('\n').filter((l) => l.startsWith('add ')).length).toBe(499);
    } finally {
      runner.close();
    }
  });

  it("the agent's runner starts no spare while one of its calls runs, only once the calls have ended", async () => {
    const runner = agentRunner(net.name);
    try {
      // A big set payload with no spare waiting: served without one, and a spare ipset restore wanted.
      const sets = ['create PCTL-S1 hash:ip', ...Array.from({ length: 499 }, (_, k) => `add PCTL-S1 10.1.${k >> 8}.${k & 255}`)].join('\n') + '\n';
      expect(await runner.run('ipset', ['restore', '-exist'], { input: sets })).toMatchObject({ exitCode: 0 });
      // At once a rule payload that takes longer than the quiet moment: no ipset restore may be
      // forked beside it (the fork would block the agent's thread in the middle of the sync).
      const rules = ['*filter', ':PCTL-LONG - [0:0]', ...Array.from({ length: 12000 }, (_, k) => `-A PCTL-LONG -s 10.${2 + (k >> 16)}.${(k >> 8) & 255}.${k & 255} -j RETURN`), 'COMMIT', ''].join('\n');
      const t0 = performance.now();
      let done = false;
      const call = runner.run('iptables-nft-restore', ARGS, { input: rules }).finally(() => (done = true));
      // Watched through the runner (a spare counts from the moment it is started): a cheap look,
      // so the call is seen many times while it runs, even on a loaded machine.
      let polls = 0;
      let seen = 0;
      while (!done) {
        polls++;
        if (runner.spares.ready('ipset', ['restore', '-exist'])) seen++;
        await new Promise((r) => setTimeout(r, 2));
      }
      expect(await call).toMatchObject({ exitCode: 0 });
      // The call outlasted the quiet moment (twice over, at least), and was watched while it ran.
      expect(performance.now() - t0).toBeGreaterThan(2 * SPARE_AFTER_QUIET_MS);
      expect(polls).toBeGreaterThan(2);
      expect(seen).toBe(0);
      // Once it ended, the spare comes.
      await untilSpare();
    } finally {
      runner.close();
    }
  });
});
