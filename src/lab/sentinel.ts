// The lab's continuous prober: run inside a namespace,
//   ip netns exec <netns> node src/lab/sentinel.ts
// it keeps trying targets over and over, so a connection that should never succeed is caught
// whenever it does, from a pod's first instant on. Commands come as JSON lines on stdin:
//   {"add":{"id":"x/p1","ip":"10.244.1.20","port":80,"protocol":"TCP","forMs":1500}}
//       try this target every `intervalMs` (argv) for forMs from now
//   {"end":true}   stop trying and exit once the attempts in flight are done
// On stdout: "ready" once it reads commands, then one JSON line per success
//   {"id":"x/p1","ip":"10.244.1.20","port":80,"protocol":"TCP","t":1733000000123,
//    "start":1733000000119,"lastFail":1733000000080}
// (t: epoch ms when the TCP handshake completed or the UDP echo came back; start: when that
// attempt began; lastFail: when the latest attempt to this target that failed, before this line,
// began, if any. A UDP echo also names the server. `lastFail` is what says how long a flow was
// still broken: the time of a first success also counts how long this process waited to be
// scheduled, on a loaded machine hundreds of ms). An attempt begun before the target's first
// success that fails after it is reported on its own:
//   {"id":"x/p1","ip":"10.244.1.20","port":80,"protocol":"TCP","failStart":1733000000110}
// An attempt's timeout is decided only after pending I/O is read (setImmediate), so a process
// that was not scheduled for a while does not call an attempt failed whose answer is waiting.
// And a last line
//   {"done":true,"attempts":1234}
// Arguments: --interval MS (default 40), --timeout MS per attempt (default 250), any number of
// --target ID,IP,PORT,PROTOCOL,FOR_MS that start at once (a pod probing outward from inside),
// and --serve ID,PORT: also answer on that TCP and UDP port as the lab's server.ts does (one
// process is the pod's workload and its prober). With --target it exits when its targets are
// done, unless it serves: then it runs until SIGTERM.
// Node standard library only (fast start in a bare namespace).

import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';
import { createInterface } from 'node:readline';

/** One line of its output (see the header): a success, a late failure, or the last line. Import it as a type only: this file runs when loaded. */
export interface SentinelLine {
  id?: string;
  ip?: string;
  port?: number;
  protocol?: 'TCP' | 'UDP';
  /** A success: when it completed, and when its attempt began. */
  t?: number;
  start?: number;
  /** A success: when the latest failed attempt before it began. */
  lastFail?: number;
  /** A late failure: an attempt begun before the first success that failed after it. */
  failStart?: number;
  server?: string;
  done?: boolean;
  attempts?: number;
}

interface Target {
  id: string;
  ip: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  forMs: number;
  /** Start (epoch ms) of the latest attempt that failed before the first success. */
  lastFail?: number;
  /** Start of the earliest attempt that succeeded. */
  firstOk?: number;
}

let intervalMs = 40;
let timeoutMs = 250;
let serve: { id: string; port: number } | undefined;
const initial: Target[] = [];
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const v = argv[i + 1] ?? '';
  if (argv[i] === '--interval') intervalMs = Number(v);
  else if (argv[i] === '--timeout') timeoutMs = Number(v);
  else if (argv[i] === '--serve') {
    const [id, port] = v.split(',');
    serve = { id: id!, port: Number(port) };
  }
  else if (argv[i] === '--target') {
    const [id, ip, port, protocol, forMs] = v.split(',');
    initial.push({ id: id!, ip: ip!, port: Number(port), protocol: protocol === 'UDP' ? 'UDP' : 'TCP', forMs: Number(forMs) });
  } else {
    process.stderr.write(`sentinel: unknown argument ${argv[i]}\n`);
    process.exit(2);
  }
}

let attempts = 0;
let inFlight = 0;
const timers = new Set<NodeJS.Timeout>();
/** No more targets will come: exit once the running ones are over (stdin closed, or fixed targets). */
let ending = false;
/** Stop trying now ({"end":true}). */
let stopped = false;

function success(t: Target, start: number, server: string | undefined): void {
  if (t.firstOk === undefined || start < t.firstOk) t.firstOk = start;
  const line = { id: t.id, ip: t.ip, port: t.port, protocol: t.protocol, t: Date.now(), start, ...(t.lastFail !== undefined ? { lastFail: t.lastFail } : {}), ...(server ? { server } : {}) };
  process.stdout.write(JSON.stringify(line) + '\n');
}

function failed(t: Target, start: number): void {
  if (t.firstOk === undefined) {
    if (t.lastFail === undefined || start > t.lastFail) t.lastFail = start;
  } else if (start < t.firstOk) {
    process.stdout.write(JSON.stringify({ id: t.id, ip: t.ip, port: t.port, protocol: t.protocol, failStart: start }) + '\n');
  }
}

function tryTcp(t: Target): void {
  inFlight++;
  attempts++;
  const start = Date.now();
  let done = false;
  let ok = false;
  const sock = connect({ host: t.ip, port: t.port });
  const finish = () => {
    if (done) return;
    done = true;
    if (!ok) failed(t, start);
    clearTimeout(timer);
    sock.destroy();
    inFlight--;
    maybeExit();
  };
  const timer = setTimeout(() => setImmediate(finish), timeoutMs);
  sock.on('connect', () => {
    // Established: the handshake went through both ways, whatever the server says next.
    ok = true;
    success(t, start, undefined);
    finish();
  });
  sock.on('error', finish);
}

function tryUdp(t: Target): void {
  inFlight++;
  attempts++;
  const start = Date.now();
  let done = false;
  let ok = false;
  const nonce = `${process.pid}-${attempts}`;
  const sock = createSocket('udp4');
  const finish = () => {
    if (done) return;
    done = true;
    if (!ok) failed(t, start);
    clearTimeout(timer);
    try {
      sock.close();
    } catch {
      /* not bound */
    }
    inFlight--;
    maybeExit();
  };
  const timer = setTimeout(() => setImmediate(finish), timeoutMs);
  sock.on('message', (msg) => {
    const [echo, server] = msg.toString('utf8').split('|');
    if (echo !== nonce) return;
    ok = true;
    success(t, start, server);
    finish();
  });
  sock.on('error', finish);
  sock.send(nonce, t.port, t.ip, (e) => {
    if (e) finish();
  });
}

function start(t: Target): void {
  const end = Date.now() + t.forMs;
  const tick = () => {
    if (stopped || Date.now() >= end) {
      clearInterval(iv);
      timers.delete(iv);
      maybeExit();
      return;
    }
    if (t.protocol === 'UDP') tryUdp(t);
    else tryTcp(t);
  };
  const iv = setInterval(tick, intervalMs);
  timers.add(iv);
  tick();
}

function maybeExit(): void {
  if (!ending || inFlight > 0 || timers.size > 0) return;
  if (serve) {
    // Serving: report now, keep answering until SIGTERM.
    if (!reported) process.stdout.write(JSON.stringify({ done: true, attempts }) + '\n');
    reported = true;
    return;
  }
  process.stdout.write(JSON.stringify({ done: true, attempts }) + '\n', () => process.exit(0));
}

let reported = false;
process.stdout.on('error', () => {});
process.on('SIGTERM', () => process.exit(0));

async function listen(id: string, port: number): Promise<void> {
  const tcp = createServer((sock) => {
    sock.on('error', () => {});
    sock.end(`${id} ${sock.remoteAddress}:${sock.remotePort}\n`);
  });
  const udp = createSocket('udp4');
  udp.on('message', (msg, r) => udp.send(Buffer.concat([msg, Buffer.from(`|${id}|${r.address}:${r.port}`)]), r.port, r.address, () => {}));
  udp.on('error', () => {});
  await Promise.all([new Promise<void>((res) => tcp.listen({ port, host: '0.0.0.0', backlog: 4096 }, res)), new Promise<void>((res) => udp.bind(port, '0.0.0.0', res))]);
}
if (serve) await listen(serve.id, serve.port);

if (initial.length > 0) {
  // Outward from a pod: fixed targets, then exit when their time is up.
  for (const t of initial) start(t);
  ending = true;
  process.stdout.write('ready\n');
} else {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    const cmd = JSON.parse(line) as { add?: Target; end?: boolean };
    if (cmd.add) start(cmd.add);
    if (cmd.end) {
      ending = stopped = true;
      for (const iv of timers) clearInterval(iv);
      timers.clear();
      maybeExit();
    }
  });
  rl.on('close', () => {
    ending = stopped = true;
    for (const iv of timers) clearInterval(iv);
    timers.clear();
    maybeExit();
  });
  process.stdout.write('ready\n');
}
