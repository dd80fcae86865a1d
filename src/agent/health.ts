// /healthz (the process is alive), /readyz (in sync, applied, bridge-nf-call-iptables=1) and
// /metrics (Prometheus text) on one small HTTP server.

import { createServer, type Server } from 'node:http';
import type { Agent } from './agent.ts';

/** `:9102`, `0.0.0.0:9102`, `127.0.0.1:0` -> host and port. */
export function parseAddr(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  const host = i > 0 ? addr.slice(0, i) : '0.0.0.0';
  const port = Number(addr.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--health-addr must be HOST:PORT or :PORT, got ${JSON.stringify(addr)}`);
  return { host, port };
}

export async function serveHealth(agent: Agent, addr: string): Promise<Server> {
  const { host, port } = parseAddr(addr);
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
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /healthz, /readyz or /metrics\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
