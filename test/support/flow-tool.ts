// Long-lived flows for the established-connection tests, run inside a namespace:
//   ip netns exec <netns> node test/support/flow-tool.ts recv --port 9999 [--echo-delay MS]
//     a TCP and a UDP server on the port (UDP echoed, MS later: a server slow to answer, whose
//     answer is still on its way when the flow is revoked); one JSON line per received chunk or datagram:
//     {"proto":"TCP"|"UDP","from":"10.244.1.10:40001","t":1733000000123}
//   ip netns exec <netns> node test/support/flow-tool.ts send --to IP:PORT --proto TCP|UDP [--sport N] [--interval MS]
//     one TCP connection (or one UDP socket bound to --sport) that sends a line every interval
//     until SIGTERM: the same connection (the same 5-tuple) all along, so after its first packet
//     every later one is "established" for conntrack.
//   ip netns exec <netns> node test/support/flow-tool.ts talk --listen PORT | --to IP:PORT
//     one TCP connection (accepted, or opened) on which nothing is sent unless asked: each line
//     "send" on stdin writes one chunk; prints {"event":"connected"|"data"|"sent"|"closed","t":...}.
//     Either end can send first (the established-flow tests make the server speak first).
// Prints "ready" once listening (recv, talk --listen) or once the first packet is sent (send)
// or the connection is open (talk --to).
// Node standard library only.

import { createSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

const [mode, ...rest] = process.argv.slice(2);
const arg = (name: string, dflt?: string): string => {
  const i = rest.indexOf(name);
  const v = i >= 0 ? rest[i + 1] : dflt;
  if (v === undefined) throw new Error(`flow-tool: ${name} is required`);
  return v;
};

if (mode === 'recv') {
  const port = Number(arg('--port'));
  const echoDelay = Number(arg('--echo-delay', '0'));
  const line = (proto: string, from: string) => process.stdout.write(JSON.stringify({ proto, from, t: Date.now() }) + '\n');
  const tcp = createServer((sock) => {
    sock.on('data', () => line('TCP', `${sock.remoteAddress}:${sock.remotePort}`));
    sock.on('error', () => {});
  });
  const udp = createSocket('udp4');
  // Every datagram is echoed: with a reply seen, conntrack holds the flow as ESTABLISHED (a
  // flow nobody answers stays NEW, and any rule change stops it without help).
  udp.on('message', (m, r) => {
    line('UDP', `${r.address}:${r.port}`);
    if (echoDelay > 0) setTimeout(() => udp.send(m, r.port, r.address), echoDelay);
    else udp.send(m, r.port, r.address);
  });
  let up = 0;
  const ready = () => ++up === 2 && process.stdout.write('ready\n');
  tcp.listen(port, '0.0.0.0', ready);
  udp.bind(port, '0.0.0.0', ready);
} else if (mode === 'send') {
  const [ip, portText] = arg('--to').split(':');
  const port = Number(portText);
  const interval = Number(arg('--interval', '50'));
  const proto = arg('--proto', 'UDP');
  let said = false;
  const sent = () => {
    if (!said) process.stdout.write('ready\n');
    said = true;
  };
  if (proto === 'TCP') {
    const sock = connect({ host: ip!, port, localPort: Number(arg('--sport', '0')) || undefined });
    sock.on('connect', () => {
      setInterval(() => sock.write('x\n', sent), interval);
    });
    // A dropped connection just stops: the test sees no more lines at the receiver.
    sock.on('error', () => {});
  } else {
    const udp = createSocket('udp4');
    udp.bind(Number(arg('--sport', '0')), () => {
      setInterval(() => udp.send('x\n', port, ip!, sent), interval);
    });
  }
} else if (mode === 'talk') {
  const event = (e: string) => process.stdout.write(JSON.stringify({ event: e, t: Date.now() }) + '\n');
  let sock: Socket | undefined;
  const use = (s: Socket) => {
    sock = s;
    event('connected');
    s.setNoDelay(true);
    s.on('data', () => event('data'));
    s.on('close', () => event('closed'));
    // A connection the rules cut just goes quiet; the test reads what arrived.
    s.on('error', () => {});
  };
  createInterface({ input: process.stdin }).on('line', (l) => {
    if (l.trim() === 'send' && sock) sock.write('x\n', () => event('sent'));
  });
  const listen = rest.includes('--listen') ? Number(arg('--listen')) : undefined;
  if (listen !== undefined) {
    const server = createServer((s) => {
      if (!sock) use(s);
      else s.destroy();
    });
    server.listen(listen, '0.0.0.0', () => process.stdout.write('ready\n'));
  } else {
    const [ip, portText] = arg('--to').split(':');
    const s = connect({ host: ip!, port: Number(portText) });
    s.on('connect', () => {
      use(s);
      process.stdout.write('ready\n');
    });
    s.on('error', (e) => {
      if (sock) return;
      process.stderr.write(`flow-tool talk: ${e.message}\n`);
      process.exit(1);
    });
  }
} else {
  process.stderr.write('usage: flow-tool.ts recv --port P | send --to IP:PORT --proto TCP|UDP [--sport N] [--interval MS] | talk --listen P | talk --to IP:PORT\n');
  process.exit(2);
}
