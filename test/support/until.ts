// Polling until a condition holds, for tests that wait on an agent, a lab or the kernel.

/**
 * Resolve with the milliseconds it took once `cond` holds; throw naming `what` after `ms`.
 * `intervalMs` is the pause between tries (a probe that itself takes long needs none).
 */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000, intervalMs = 25): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await cond()) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
