// The lab's prober (sentinel.ts) as a real process on the loopback: what its lines say about the
// attempts that failed before a target's first success. The pod-start test's "worked within 1 s"
// (test/support/pod-start.ts) rests on these fields: `start` of the successful attempt,
// `lastFail` (the latest failed attempt before it) and the `failStart` lines of attempts begun
// before the first success that failed after it.

import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { scriptCommand } from './processes.ts';
import type { SentinelLine } from './sentinel.ts';

const SENTINEL = join(import.meta.dirname, 'sentinel.ts');

type Line = SentinelLine;

/** Run the sentinel with one fixed target (`onReady` once it is trying); resolves with its lines once it exits. */
function probe(target: string, onReady: () => void): Promise<Line[]> {
  const [cmd, ...args] = scriptCommand(SENTINEL, ['--interval', '40', '--timeout', '250', '--target', target]);
  const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: Line[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => {
    if (l === 'ready') return onReady();
    lines.push(JSON.parse(l) as Line);
  });
  return new Promise((resolve) => child.once('exit', () => resolve(lines)));
}

/** A free port on the loopback (bound and released). */
async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  if (kind === 'tcp') {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    return port;
  }
  const u = createSocket('udp4');
  await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
  const port = u.address().port;
  await new Promise<void>((r) => u.close(() => r()));
  return port;
}

describe('sentinel: what it reports about the attempts before a first success', () => {
  let tcp: Server | undefined;
  let udp: Socket | undefined;
  afterEach(async () => {
    if (tcp) await new Promise((r) => tcp!.close(r));
    if (udp) udp.close();
    tcp = udp = undefined;
  });

  it('TCP: the first success names when its attempt began and when the last failed one did, which came before the server', async () => {
    const port = await freePort('tcp');
    let serverAt = 0;
    const lines = await probe(`x,127.0.0.1,${port},TCP,1200`, () =>
      setTimeout(() => {
        // The prober closes each connection at once: a reset on our side is expected.
        tcp = createServer((s) => {
          s.on('error', () => {});
          s.end('x');
        });
        tcp.listen(port, '127.0.0.1', () => (serverAt = Date.now()));
      }, 300),
    );
    const hits = lines.filter((l) => l.t !== undefined);
    expect(hits.length).toBeGreaterThan(0);
    const first = hits[0]!;
    // Refused until the server listened: failed attempts, the latest before it listened.
    expect(first.lastFail).toBeDefined();
    expect(first.lastFail!).toBeLessThanOrEqual(serverAt);
    expect(first.lastFail!).toBeGreaterThan(serverAt - 300);
    expect(first.start!).toBeGreaterThan(first.lastFail!);
    expect(first.start!).toBeLessThanOrEqual(first.t!);
    expect(lines.at(-1)).toMatchObject({ done: true });
    expect(lines.at(-1)!.attempts!).toBeGreaterThan(10);
  });

  it('UDP: attempts sent before the server existed fail after the first success and are reported on their own', async () => {
    const port = await freePort('udp');
    let serverAt = 0;
    const lines = await probe(`y,127.0.0.1,${port},UDP,1200`, () =>
      setTimeout(() => {
        udp = createSocket('udp4');
        udp.on('message', (msg, r) => udp!.send(Buffer.concat([msg, Buffer.from('|srv|x')]), r.port, r.address));
        udp.bind(port, '127.0.0.1', () => (serverAt = Date.now()));
      }, 300),
    );
    const first = lines.find((l) => l.t !== undefined);
    expect(first).toBeDefined();
    // Their datagrams were lost: they time out 250 ms after they began, while later ones are answered.
    const late = lines.filter((l) => l.failStart !== undefined);
    expect(late.length).toBeGreaterThan(0);
    for (const l of late) expect(l.failStart!).toBeLessThan(first!.start!);
    expect(Math.max(...late.map((l) => l.failStart!))).toBeLessThanOrEqual(serverAt);
  });
});
