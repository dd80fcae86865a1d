// The idle collector: V8's young generation collected once the agent has been quiet, never while
// it works (src/agent/idle-gc.ts).

import { afterEach, describe, expect, it, vi } from 'vitest';
import { IdleCollector, exposeGc, type GcFunction } from './idle-gc.ts';

describe('IdleCollector', () => {
  afterEach(() => vi.useRealTimers());

  const recording = () => {
    const calls: Parameters<GcFunction>[0][] = [];
    const gc: GcFunction = (o) => void calls.push(o);
    return { calls, gc };
  };

  it('collects the young generation once, after the quiet time that follows idle()', () => {
    vi.useFakeTimers();
    const { calls, gc } = recording();
    const c = new IdleCollector({ gc, quietMs: 35 });
    c.idle();
    c.idle(); // again before it ran: still one collection, 35 ms after the last call
    vi.advanceTimersByTime(34);
    expect(calls).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(calls).toEqual([{ type: 'minor' }]);
    expect(c.collections).toBe(1);
    vi.advanceTimersByTime(1000);
    expect(calls).toHaveLength(1);
  });

  it('never collects while busy: busy() cancels the pending collection, idle() arms it again', () => {
    vi.useFakeTimers();
    const { calls, gc } = recording();
    const c = new IdleCollector({ gc, quietMs: 35 });
    c.idle();
    vi.advanceTimersByTime(20);
    c.busy();
    vi.advanceTimersByTime(100);
    expect(calls).toEqual([]);
    c.idle();
    vi.advanceTimersByTime(35);
    expect(calls).toHaveLength(1);
    c.idle();
    c.stop();
    vi.advanceTimersByTime(100);
    expect(calls).toHaveLength(1);
  });

  it('a gc that throws switches the collection off; nothing escapes the timer (it would end the agent)', () => {
    vi.useFakeTimers();
    let calls = 0;
    const c = new IdleCollector({
      gc: () => {
        calls++;
        throw new Error('no gc here');
      },
      quietMs: 35,
    });
    c.idle();
    expect(() => vi.advanceTimersByTime(35)).not.toThrow();
    expect(c.enabled).toBe(false);
    expect(c.collections).toBe(0);
    c.idle();
    vi.advanceTimersByTime(100);
    expect(calls).toBe(1);
  });

  it('does nothing without V8 gc (disabled), and says so', () => {
    vi.useFakeTimers();
    const c = new IdleCollector({ gc: undefined });
    expect(c.enabled).toBe(false);
    c.idle();
    vi.advanceTimersByTime(1000);
    expect(c.collections).toBe(0);
  });

  it("exposes V8's gc at run time, and a minor collection runs", () => {
    const gc = exposeGc();
    expect(typeof gc).toBe('function');
    const c = new IdleCollector({ gc, quietMs: 0 });
    expect(c.enabled).toBe(true);
    return new Promise<void>((resolve) => {
      c.idle();
      setTimeout(() => {
        expect(c.collections).toBe(1);
        resolve();
      }, 20);
    });
  });
});
