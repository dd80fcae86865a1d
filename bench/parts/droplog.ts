// Part 8, the drop log (issue 11): what a flood of denied packets costs the agent. In a network
// namespace, our rules log and drop UDP to one port (a logged default deny, as rendered for a
// node); the agent's drop log (its DropLog and NFLOG reader, bench/droplog-child.ts) reads the
// namespace's group. A sender floods the denied port at 5,000 packets/s for 10 s (3 s with
// --quick) while sending allowed packets to another port, received in the same namespace.
//
// Target: `drop_log_cpu_pct`, the CPU the drop log (Node process and reader) uses during the
// flood beyond its idle use, in percent of one core, stays under 5; no allowed packet is lost
// (`drop_log_legit_lost`). The per-node rate limit (src/sync/render.ts DROP_LOG) is what bounds it.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loggedDrop } from '../../src/compiler/drop-log.ts';
import { DROP_LOG, renderRule } from '../../src/sync/render.ts';
import { target, type BenchOptions, type BenchPart, type PartResult } from '../harness.ts';

const here = fileURLToPath(new URL('..', import.meta.url));
const DENIED_PORT = 9;
const ALLOWED_PORT = 7;
const RATE = 5000;

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number, tick: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / tick;
}

/** Sends `rate` denied packets a second for `seconds` and an allowed one every 50th; prints what arrived. */
const SENDER = `
import json, socket, sys, time
rate, seconds, denied, allowed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", allowed)); rx.setblocking(False)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent = refused = legit = got = 0
start = time.monotonic()
while True:
    now = time.monotonic() - start
    if now >= seconds: break
    due = int(now * rate)
    while sent < due:
        try: tx.sendto(b"x", ("127.0.0.1", denied))
        except OSError: refused += 1
        sent += 1
        if sent % 50 == 0:
            tx.sendto(b"y", ("127.0.0.1", allowed)); legit += 1
    try:
        while True: rx.recv(16); got += 1
    except BlockingIOError: pass
    time.sleep(0.001)
time.sleep(0.2)
try:
    while True: rx.recv(16); got += 1
except BlockingIOError: pass
print(json.dumps({"sent": sent, "refused": refused, "legit": legit, "received": got, "seconds": time.monotonic() - start}))
`;

export const droplogPart: BenchPart = {
  name: 'droplog',
  title: 'Part 8: the drop log under a flood of denied packets',
  async run(o: BenchOptions): Promise<PartResult> {
    const seconds = o.quick ? 3 : 10;
    const tick = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const ns = `pctl-bench-dl-${randomBytes(3).toString('hex')}`;
    execFileSync('ip', ['netns', 'add', ns]);
    const inNs = (cmd: string[], input?: string) => execFileSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
    const rulesFile = join(tmpdir(), `${ns}.rules`);
    let child: ReturnType<typeof spawn> | undefined;
    try {
      inNs(['ip', 'link', 'set', 'lo', 'up']);
      const rules = loggedDrop({ protocol: 'udp', dports: [{ from: DENIED_PORT, to: DENIED_PORT }] }, 'default deny ingress: isolated by bench/deny', { kind: 'np', dir: 'Ingress', policies: ['bench/deny'] });
      writeFileSync(rulesFile, `*filter\n:PCTL-I-bench - [0:0]\n-A OUTPUT -j PCTL-I-bench\n${rules.map((r) => renderRule('PCTL-I-bench', r)).join('\n')}\nCOMMIT\n`);
      inNs(['iptables-nft-restore', '--noflush', rulesFile]);

      o.progress('droplog: starting the drop log (DropLog and its NFLOG reader)');
      child = spawn(process.execPath, ['--no-warnings', `${here}droplog-child.ts`, ns], { stdio: ['ignore', 'pipe', 'inherit'] });
      const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
      const first = JSON.parse(((await lines.next()).value as string | undefined) ?? 'null') as { pid: number; reader: number | null } | null;
      if (!first?.reader) throw new Error('droplog: the drop log child did not report its reader process');
      const pids = [first.pid, first.reader];
      const cpu = () => pids.reduce((s, p) => s + cpuSeconds(p, tick), 0);

      o.progress(`droplog: idle for ${seconds} s`);
      const idle0 = cpu();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      const idle = cpu() - idle0;

      o.progress(`droplog: ${RATE} denied packets/s for ${seconds} s`);
      const flood0 = cpu();
      const t0 = Date.now();
      const sender = JSON.parse(inNs(['python3', '-c', SENDER, String(RATE), String(seconds), String(DENIED_PORT), String(ALLOWED_PORT)]).trim()) as { sent: number; refused: number; legit: number; received: number; seconds: number };
      const floodWall = (Date.now() - t0) / 1000;
      const flood = cpu() - flood0;
      const counters = inNs(['iptables-nft-save', '-c', '-t', 'filter']);
      const dropped = Number(/\[(\d+):\d+\] -A PCTL-I-bench .* -j DROP/.exec(counters)?.[1] ?? NaN);

      child.kill('SIGTERM');
      const last = JSON.parse(((await lines.next()).value as string | undefined) ?? '{}') as { logged?: number };
      child = undefined;

      // CPU beyond idle, over the flood's wall time, in percent of one core.
      const pct = (100 * (flood - (idle * floodWall) / seconds)) / floodWall;
      const lost = sender.legit - sender.received;
      return {
        tables: [
          {
            title: `A flood of denied packets (${RATE}/s for ${seconds} s) while allowed packets flow`,
            columns: ['denied sent', 'dropped (kernel)', 'logged', 'log limit', 'idle CPU %', 'flood CPU %', 'drop log CPU % beyond idle', 'allowed sent', 'allowed lost'],
            rows: [[sender.sent, dropped, last.logged ?? null, `${DROP_LOG.ratePerSecond}/s, burst ${DROP_LOG.burst}`, (100 * idle) / seconds, (100 * flood) / floodWall, pct, sender.legit, lost]],
            notes: [
              'CPU: user + system time of the drop log\'s Node process and its NFLOG reader (/proc/PID/stat), idle and during the flood, in percent of one core.',
              'logged: packets the drop log recorded; the rest were dropped without a log record by the per-node rate limit.',
            ],
          },
        ],
        metrics: { drop_log_cpu_pct: pct, drop_log_logged: last.logged ?? null, drop_log_dropped: dropped, drop_log_legit_lost: lost },
        targets: [target('drop_log_cpu_pct', pct, 5, '% of a core'), { metric: 'drop_log_legit_lost', value: lost, bound: 0, unit: 'packets', met: lost <= 0, relation: '<=' }],
        notes: o.quick ? ['quick mode: 3 s idle and 3 s of flood instead of 10 s each.'] : [],
      };
    } finally {
      child?.kill('SIGTERM');
      rmSync(rulesFile, { force: true });
      execFileSync('ip', ['netns', 'del', ns]);
    }
  },
};
