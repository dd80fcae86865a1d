// The wire format between policyctl-cni's native front end (src/cni/shim/policyctl-cni.c) and the
// agent: the front end forwards a whole CNI call, the agent runs it (runPlugin) and sends back what
// the plugin would print. Length-prefixed, so stdout and stderr pass byte for byte.
//
//   call:   "policyctl-cni 1 <env bytes> <stdin bytes>\n" <NAME=VALUE\0 ...> <stdin>
//   answer: "<exit code> <stdout bytes> <stderr bytes>\n" <stdout> <stderr>
//
// A JSON request (src/cni/plugin.ts) starts with "{", a call with "p": the agent tells them apart
// by the first byte.

import type { PluginInput, PluginOutput } from './plugin.ts';

export const FRAME_MAGIC = 'policyctl-cni 1 ';
/** The longest header line accepted (the magic and two decimal lengths). */
const MAX_HEADER = 64;

export class FrameError extends Error {}

/**
 * A call from the start of `buf`: undefined while more bytes are needed, a FrameError when the
 * bytes cannot be a call (or announce more than `maxBytes`).
 */
export function readCall(buf: Buffer, maxBytes: number): PluginInput | undefined {
  const nl = buf.indexOf(10);
  if (nl < 0) {
    if (buf.length > MAX_HEADER) throw new FrameError(`no header line in the first ${MAX_HEADER} bytes`);
    return undefined;
  }
  const head = buf.toString('latin1', 0, nl);
  const m = /^policyctl-cni 1 (\d{1,9}) (\d{1,9})$/.exec(head);
  if (!m) throw new FrameError(`not a policyctl-cni call header: ${JSON.stringify(head.slice(0, MAX_HEADER))}`);
  const envBytes = Number(m[1]);
  const stdinBytes = Number(m[2]);
  if (nl + 1 + envBytes + stdinBytes > maxBytes) throw new FrameError(`call of ${envBytes + stdinBytes} bytes is larger than ${maxBytes}`);
  if (buf.length < nl + 1 + envBytes + stdinBytes) return undefined;
  if (buf.length > nl + 1 + envBytes + stdinBytes) throw new FrameError(`call longer than its header says (${buf.length - nl - 1} bytes, header: ${envBytes + stdinBytes})`);
  const env: Record<string, string> = {};
  const block = buf.subarray(nl + 1, nl + 1 + envBytes);
  if (envBytes > 0 && block[block.length - 1] !== 0) throw new FrameError('environment block not NUL-terminated');
  for (const entry of block.toString('utf8').split('\0').slice(0, -1)) {
    const eq = entry.indexOf('=');
    if (eq <= 0 || !entry.startsWith('CNI_')) throw new FrameError(`environment entry is not CNI_NAME=VALUE: ${JSON.stringify(entry.slice(0, 80))}`);
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return { env, stdin: buf.toString('utf8', nl + 1 + envBytes) };
}

/** The bytes of a call (what the front end sends; tests). */
export function encodeCall(input: PluginInput): Buffer {
  const env = Buffer.from(
    Object.entries(input.env)
      .filter(([k, v]) => k.startsWith('CNI_') && v !== undefined)
      .map(([k, v]) => `${k}=${v}\0`)
      .join(''),
  );
  const stdin = Buffer.from(input.stdin);
  return Buffer.concat([Buffer.from(`${FRAME_MAGIC}${env.length} ${stdin.length}\n`), env, stdin]);
}

export function encodeAnswer(out: PluginOutput): Buffer {
  const stdout = Buffer.from(out.stdout);
  const stderr = Buffer.from(out.stderr);
  return Buffer.concat([Buffer.from(`${out.exitCode} ${stdout.length} ${stderr.length}\n`), stdout, stderr]);
}
