// The agent's drop log alone, in a fresh process, for the droplog part (bench/parts/droplog.ts):
// `node bench/droplog-child.ts NETNS` reads the NFLOG group of that network namespace with the
// agent's DropLog and reader, prints {"pid", "reader"} once the reader is bound, and on SIGTERM
// prints {"logged", "flows"} and exits.

import { readFileSync } from 'node:fs';
import pino from 'pino';
import { DropLog } from '../src/agent/drop-log.ts';
import { nflogReaderCommand as readerCommand } from '../src/sync/nflog.ts';
import { AgentMetrics } from '../src/agent/metrics.ts';
import { Model } from '../src/model/store.ts';
import { DROP_LOG } from '../src/sync/render.ts';

const netns = process.argv[2];
if (!netns) throw new Error('usage: node bench/droplog-child.ts NETNS');
const dl = new DropLog({ node: 'bench', model: new Model(), logger: pino({ level: 'silent' }), metrics: new AgentMetrics(), intervalMs: 10_000, command: ['ip', 'netns', 'exec', netns, ...readerCommand(DROP_LOG.group)] });
await dl.start();
// The reader is our child (ip netns exec execs it in place).
const children = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
process.stdout.write(JSON.stringify({ pid: process.pid, reader: children[0] ?? null }) + '\n');
process.once('SIGTERM', () => {
  const drops = dl.drops();
  void dl.stop().then(() => {
    process.stdout.write(JSON.stringify({ logged: drops.reduce((n, d) => n + d.packets, 0), flows: drops.length }) + '\n');
    process.exit(0);
  });
});
