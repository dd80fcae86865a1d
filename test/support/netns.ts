// Network namespaces for kernel tests. Every kernel change a test makes happens inside one of
// these, never in the machine's own namespace, and each is deleted after the test.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { processRunner, type Runner } from '../../src/sync/runner.ts';

/**
 * Kernel tests run when root (and must run under CI=true: a missing tool fails, never skips).
 * `PCTL_KERNEL_TESTS=0` turns them off (`npm run test:unit`), except under CI=true.
 */
export function kernelTestsEnabled(): boolean {
  if (process.env.CI === 'true') return true;
  if (process.env.PCTL_KERNEL_TESTS === '0') return false;
  return process.getuid?.() === 0 && hasTool('ipset') && hasTool('iptables-nft-restore');
}

function hasTool(t: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface TestNetns {
  readonly name: string;
  readonly runner: Runner;
  /** Run a shell command inside the namespace; returns stdout. */
  sh(cmd: string): string;
  remove(): void;
}

export function createNetns(prefix = 'pt'): TestNetns {
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
  return {
    name,
    runner: processRunner(name),
    sh: (cmd) => execFileSync('ip', ['netns', 'exec', name, 'sh', '-c', cmd], { encoding: 'utf8' }),
    remove: () => {
      // ipsets live in the namespace and go with it; so do its iptables tables.
      try {
        execFileSync('ip', ['netns', 'del', name]);
      } catch {
        /* already gone */
      }
    },
  };
}
