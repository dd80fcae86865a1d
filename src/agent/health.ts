// /healthz (the process is alive), /readyz (in sync, applied, bridge-nf-call-iptables=1),
// /metrics (Prometheus text) and /drops (the drop log's recent denied flows, JSON) on one small
// HTTP server.

import { rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { Agent } from './agent.ts';
import type { DropLog } from './drop-log.ts';

/** `:9102`, `0.0.0.0:9102`, `127.0.0.1:0` -> host and port. */
export function parseAddr(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  const host = i > 0 ? addr.slice(0, i) : '0.0.0.0';
  const port = Number(addr.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--health-addr must be HOST:PORT or :PORT, got ${JSON.stringify(addr)}`);
  return { host, port };
}

/**
 * Serves on `addr`: HOST:PORT, or `unix:PATH` (a unix socket, e.g. the lab's, whose agents live
 * in network namespaces of their own while the socket is reachable from any).
 */
export async function serveHealth(agent: Agent, addr: string, dropLog?: DropLog): Promise<Server> {
  const socketPath = addr.startsWith('unix:') ? addr.slice('unix:'.length) : undefined;
  if (socketPath === '') throw new Error(`--health-addr unix:PATH needs a path, got ${JSON.stringify(addr)}`);
  const { host, port } = socketPath ? { host: '', port: 0 } : parseAddr(addr);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const s = agent.status();
      res.writeHead(s.ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(s) + '\n');
    } else if (path === '/metrics') {
      agent.metrics.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': agent.metrics.registry.contentType }).end(text))
        .catch((e: unknown) => res.writeHead(500).end(String(e)));
    } else if (path === '/drops') {
      // `?since=SEQ`: only the drops updated after that sequence number (policyctl drops --watch).
      const since = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('since') ?? 0);
      if (!dropLog) res.writeHead(404, { 'content-type': 'text/plain' }).end('the drop log is off (policyctl agent --no-drop-log)\n');
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ node: agent.status().node, drops: dropLog.drops(Number.isFinite(since) ? since : 0) }) + '\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz, /metrics or /drops\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if (socketPath) {
      // A socket left by an agent that did not stop cleanly would refuse the bind.
      rmSync(socketPath, { force: true });
      server.listen(socketPath, () => resolve());
    } else server.listen(port, host, () => resolve());
  });
  return server;
}
