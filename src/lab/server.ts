// The lab's pod server: started inside a pod's network namespace,
//   ip netns exec <pod-netns> node src/lab/server.ts --id ns/name --tcp 80,81 --udp 80
// it listens on every given TCP and UDP port (all addresses) and
// - answers each TCP connection with one line "<id> <client-address>:<client-port>" and closes it;
// - answers each UDP datagram with "<datagram>|<id>|<client-address>:<client-port>".
// The reply names the pod that answered and the source address it saw, so probes can check DNAT
// and masquerading too. When every socket is bound it prints "ready" on stdout and closes stdout;
// on a bind error it prints the reason on stderr and exits 1. It runs until SIGTERM.
// Node standard library only: it starts in a bare namespace, and fast.

import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

function parseArgs(argv: string[]): { id: string; tcp: number[]; udp: number[]; host: string } {
  const out = { id: 'server', tcp: [] as number[], udp: [] as number[], host: '0.0.0.0' };
  const ports = (v: string | undefined, flag: string): number[] =>
    (v ?? '')
      .split(',')
      .filter((s) => s !== '')
      .map((s) => {
        const n = Number(s);
        if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`${flag}: bad port ${JSON.stringify(s)}`);
        return n;
      });
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    i++;
    if (flag === '--id') out.id = value ?? '';
    else if (flag === '--tcp') out.tcp.push(...ports(value, flag));
    else if (flag === '--udp') out.udp.push(...ports(value, flag));
    else if (flag === '--host') out.host = value ?? out.host;
    else throw new Error(`unknown argument ${JSON.stringify(flag)}`);
  }
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const waits: Promise<void>[] = [];
  for (const port of new Set(args.tcp)) {
    const server = createServer((sock) => {
      sock.on('error', () => {});
      sock.end(`${args.id} ${sock.remoteAddress}:${sock.remotePort}\n`);
    });
    waits.push(
      new Promise((resolve, reject) => {
        server.once('error', (e) => reject(new Error(`tcp ${port}: ${e.message}`)));
        server.listen({ port, host: args.host, backlog: 4096 }, () => resolve());
      }),
    );
  }
  for (const port of new Set(args.udp)) {
    const sock = createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      const reply = Buffer.concat([msg, Buffer.from(`|${args.id}|${rinfo.address}:${rinfo.port}`)]);
      sock.send(reply, rinfo.port, rinfo.address, () => {});
    });
    waits.push(
      new Promise((resolve, reject) => {
        sock.once('error', (e) => reject(new Error(`udp ${port}: ${e.message}`)));
        sock.bind(port, args.host, () => {
          sock.on('error', () => {});
          resolve();
        });
      }),
    );
  }
  await Promise.all(waits);
  process.stdout.write('ready\n', () => process.stdout.end());
}

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
// stdout is a pipe the lab closes after "ready": never die of a late write.
process.stdout.on('error', () => {});

main().catch((err: unknown) => {
  process.stderr.write(`server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
