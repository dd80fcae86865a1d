// The node's NFLOG group, read through a small reader process (nflog-reader.py beside this file:
// Node has no netlink sockets). The reader prints one JSON line per packet a log rule matched;
// this class starts it, restarts it with backoff when it ends, and hands each record on. What a
// record means (which pods, which policies) is the agent's business (src/agent/drop-log.ts).
//
// Failure never touches isolation: the log rules are non-terminating and the drop after each one
// decides alone, so a reader that cannot start or dies only loses log records (counted by
// `onLost`, said in the log).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { errorText } from '../util/error-text.ts';

/** One line of the reader: a packet a log rule matched. */
export interface LogRecord {
  readonly prefix: string;
  readonly src: string;
  readonly dst: string;
  /** `tcp`, `udp`, `sctp`, `icmp` or the protocol number. */
  readonly protocol: string;
  readonly sport?: number;
  readonly dport?: number;
}

/** The reader's command: the system's python3 first (a version manager's shim can take seconds to start). */
export function nflogReaderCommand(group: number): string[] {
  const python = process.env['PCTL_PYTHON'] ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
  // Our pid: the reader ends when we do (`ip netns exec` execs it, so we stay its parent).
  return [python, fileURLToPath(new URL('./nflog-reader.py', import.meta.url)), String(group), String(process.pid)];
}

export interface NflogReaderOptions {
  /** The reader's command line (nflogReaderCommand, possibly behind `ip netns exec`). */
  readonly command: readonly string[];
  readonly logger: Logger;
  readonly onRecord: (r: LogRecord) => void;
  /** Records the reader missed, or a reader that ended. */
  readonly onLost: () => void;
}

export class NflogReader {
  private readonly o: NflogReaderOptions;
  private child: ChildProcess | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private backoffMs = 500;

  constructor(o: NflogReaderOptions) {
    this.o = o;
  }

  /** Resolves once the reader has bound the group, or failed to (said in the log). */
  start(): Promise<void> {
    return this.spawn();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      await new Promise<void>((resolve) => {
        c.once('exit', () => resolve());
        c.kill('SIGTERM');
      });
    }
  }

  private spawn(): Promise<void> {
    const [cmd, ...args] = this.o.command;
    const log = this.o.logger;
    return new Promise<void>((resolve) => {
      let settled = false;
      const settle = () => {
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.child = child;
      child.on('error', (e) => {
        log.error({ err: errorText(e), command: cmd }, 'drop log: cannot start the NFLOG reader; denied flows are not logged');
        settle();
      });
      child.stderr!.on('data', (b: Buffer) => log.warn({ stderr: b.toString().trim().slice(0, 500) }, 'drop log: the NFLOG reader wrote to stderr'));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          log.warn({ line: line.slice(0, 200) }, 'drop log: the NFLOG reader printed a line that is not JSON');
          return;
        }
        const r = rec as Record<string, unknown>;
        if (typeof r['ready'] === 'number') {
          this.backoffMs = 500;
          log.info({ group: r['ready'] }, 'drop log: reading the NFLOG group of our log rules');
          settle();
        } else if (typeof r['error'] === 'string') {
          log.error({ err: r['error'] }, 'drop log: the NFLOG reader cannot read the group; denied flows are not logged');
          settle();
        } else if (r['lost'] === true) this.o.onLost();
        else if (typeof r['prefix'] === 'string') this.o.onRecord(r as unknown as LogRecord);
      });
      child.on('exit', (code, signal) => {
        settle();
        if (this.stopped) return;
        this.o.onLost();
        log.warn({ code, signal, retryMs: this.backoffMs }, 'drop log: the NFLOG reader ended; restarting it');
        this.restartTimer = setTimeout(() => void this.spawn(), this.backoffMs);
        this.restartTimer.unref();
        this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
      });
    });
  }
}
