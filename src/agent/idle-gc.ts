// Garbage collection while the agent is idle, so that an event rarely meets one.
//
// The agent's heap holds the model and the compiler's memoized chains; an event's compile
// allocates a few MB, most of it short-lived, but what it memoizes survives. V8 collects the young
// generation when it fills up, in the middle of whichever event allocates last, and that
// collection copies every young object still alive: 20 to 40 ms on this project's benchmark
// machine with the 10k-pod cluster and 100 ClusterNetworkPolicies, which is most of an event's
// tail (bench part `kernel`: event to kernel p99). Run while nothing is happening, right after a
// sync, the same collection is off every event's path, and the next event starts with an almost
// empty young generation. Events spaced apart (the usual case) then never wait for one; in a burst
// the agent coalesces changes anyway.
//
// Only a young-generation ("minor") collection: it costs about what the one it replaces would, and
// the old generation stays V8's business (incremental marking, memory saver mode).

import v8 from 'node:v8';
import vm from 'node:vm';

/** V8's gc(), with the options object it has taken since V8 7 (`--expose-gc`). */
export type GcFunction = (options?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

/** Quiet after a sync before the collection runs: after the spare iptables-restore has started (src/sync/spare-process.ts, 25 ms). */
export const IDLE_GC_AFTER_QUIET_MS = 35;

/**
 * V8's gc function, exposed at run time (the agent is started as `node bin/policyctl.js`, with no
 * `--expose-gc` on its command line): undefined where it cannot be had, and then nothing collects
 * early (V8 still collects when it must).
 */
export function exposeGc(): GcFunction | undefined {
  const existing = (globalThis as { gc?: GcFunction }).gc;
  if (typeof existing === 'function') return existing;
  try {
    v8.setFlagsFromString('--expose-gc');
    // A new context is created with the flag in force, so it has gc().
    const gc = vm.runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as GcFunction) : undefined;
  } catch {
    return undefined;
  }
}

/** What the agent tells about its work: busy while a change or a sync is in flight, idle after. */
export interface IdleWork {
  busy(): void;
  idle(): void;
}

/** A young-generation collection once the agent has been idle for `quietMs`. */
export class IdleCollector implements IdleWork {
  private timer: NodeJS.Timeout | undefined;
  private gc: GcFunction | undefined;
  private readonly quietMs: number;
  /** Collections run, and the milliseconds they took in all. */
  collections = 0;
  collectMs = 0;

  constructor(o: { gc?: GcFunction | undefined; quietMs?: number } = {}) {
    this.gc = 'gc' in o ? o.gc : exposeGc();
    this.quietMs = o.quietMs ?? IDLE_GC_AFTER_QUIET_MS;
  }

  /** Whether collections can run at all (V8's gc could be had). */
  get enabled(): boolean {
    return this.gc !== undefined;
  }

  /** Work started (a change arrived, a sync runs): no collection until it is idle again. */
  busy(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Work ended: collect after `quietMs` unless work starts again first. */
  idle(): void {
    if (!this.gc) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const t = performance.now();
      try {
        this.gc!({ type: 'minor' });
      } catch {
        // A timer's throw would end the agent: an optimisation that fails is switched off instead.
        this.gc = undefined;
        return;
      }
      this.collections++;
      this.collectMs += performance.now() - t;
    }, this.quietMs);
    this.timer.unref();
  }

  stop(): void {
    this.busy();
  }
}
