// The lab's prober: run inside a client's network namespace,
//   ip netns exec <netns> node src/lab/prober.ts   (JSON request on stdin)
// it probes every target in parallel and prints one JSON array of results, in request order.
// Request: { "timeoutMs": 1000, "targets": [{ "ip": "10.244.1.10", "port": 80, "protocol": "TCP" }] }
// - TCP: allowed when the connection is established; the server's greeting line (if it comes
//   before the deadline) names the pod that answered and the client address it saw.
// - UDP: a datagram carrying a nonce is sent every `udpRetryMs` until the echo comes back
//   (allowed) or the deadline passes; an ICMP port unreachable ends it as "refused".
// Node standard library only (fast start in a bare namespace).

import { connect } from 'node:net';
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';

interface Target {
  ip: string;
  port: number;
  protocol: 'TCP' | 'UDP';
}

type ProbeOutcome = 'connected' | 'echoed' | 'refused' | 'timeout' | 'unreachable' | 'error';

interface Result {
  allowed: boolean;
  outcome: ProbeOutcome;
  ms: number;
  /** Id of the server that answered ("namespace/name" of the pod). */
  server?: string;
  /** The client address:port as the server saw it (after any NAT). */
  seenAs?: string;
  error?: string;
}

function classify(code: string | undefined): ProbeOutcome {
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'unreachable';
  if (code === 'ETIMEDOUT') return 'timeout';
  return 'error';
}

function probeTcp(t: Target, timeoutMs: number): Promise<Result> {
  const start = performance.now();
  return new Promise((resolve) => {
    let done = false;
    let connected = false;
    let data = '';
    const sock = connect({ host: t.ip, port: t.port });
    const finish = (r: Omit<Result, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...r, ms: Math.round(performance.now() - start) });
    };
    const greeting = (): Omit<Result, 'ms'> => {
      const [server, seenAs] = data.trim().split(' ');
      return { allowed: true, outcome: 'connected', ...(server ? { server } : {}), ...(seenAs ? { seenAs } : {}) };
    };
    const timer = setTimeout(() => finish(connected ? greeting() : { allowed: false, outcome: 'timeout' }), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
    });
    sock.on('data', (chunk: string) => {
      data += chunk;
      if (data.includes('\n')) finish(greeting());
    });
    sock.on('end', () => finish(connected ? greeting() : { allowed: false, outcome: 'error', error: 'closed' }));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (connected) finish(greeting());
      else finish({ allowed: false, outcome: classify(e.code), error: e.code ?? e.message });
    });
  });
}

function probeUdp(t: Target, timeoutMs: number, retryMs: number): Promise<Result> {
  const start = performance.now();
  const nonce = randomBytes(8).toString('hex');
  return new Promise((resolve) => {
    let done = false;
    let interval: NodeJS.Timeout | undefined;
    const sock = createSocket('udp4');
    const finish = (r: Omit<Result, 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (interval) clearInterval(interval);
      try {
        sock.close();
      } catch {
        /* not yet bound */
      }
      resolve({ ...r, ms: Math.round(performance.now() - start) });
    };
    const timer = setTimeout(() => finish({ allowed: false, outcome: 'timeout' }), timeoutMs);
    const send = () => {
      if (!done) sock.send(nonce, () => {});
    };
    sock.on('message', (msg) => {
      const [echo, server, seenAs] = msg.toString('utf8').split('|');
      if (echo !== nonce) return;
      finish({ allowed: true, outcome: 'echoed', ...(server ? { server } : {}), ...(seenAs ? { seenAs } : {}) });
    });
    sock.on('error', (e: NodeJS.ErrnoException) =>
      finish({ allowed: false, outcome: classify(e.code), error: e.code ?? e.message }),
    );
    sock.connect(t.port, t.ip, () => {
      send();
      interval = setInterval(send, retryMs);
    });
  });
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const req = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
    timeoutMs?: number;
    udpRetryMs?: number;
    targets: Target[];
  };
  const timeoutMs = req.timeoutMs ?? 1000;
  const retryMs = req.udpRetryMs ?? 200;
  const results = await Promise.all(
    req.targets.map((t) => (t.protocol === 'UDP' ? probeUdp(t, timeoutMs, retryMs) : probeTcp(t, timeoutMs))),
  );
  process.stdout.write(JSON.stringify(results) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`prober: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
