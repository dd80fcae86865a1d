// Running `policyctl` in-process as a user would from a shell: argv in; exit code, stdout and
// stderr out (stdin given as text).

import { main } from '../../src/cli/main.ts';
import type { Io } from '../../src/cli/io.ts';

export async function runCli(argv: readonly string[], stdin = ''): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: Io = { out: (t) => void (out += t), err: (t) => void (err += t), readStdin: async () => stdin };
  const code = await main([...argv], io);
  return { code, out, err };
}
