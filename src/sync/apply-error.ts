// A restore the kernel (or the restore tool) refused, with what is known of why and where.

import type { CommandError } from './runner.ts';

/**
 * Exit codes and messages of failures that say nothing about the payload: the xtables lock held
 * by another process (iptables exit 4, "Resource problem"), a command killed after the runner's
 * timeout (124) or that could not start (127), memory pressure. Retrying the same payload later
 * may succeed; splitting it would blame innocent pieces.
 */
const TRANSIENT_EXIT = new Set([4, 124, 127]);
const TRANSIENT_TEXT = /xtables lock|Resource temporarily unavailable|Cannot allocate memory|killed after/i;

export class ApplyError extends Error {
  readonly step: string;
  /** The payload line the tool named (`Error in line N`, `Error occurred at line: N`, `line N failed`). */
  readonly offendingLine?: string;
  readonly exitCode: number;
  /** What the tool printed, trimmed. */
  readonly stderr: string;
  /** The failure says nothing about the payload (see TRANSIENT_EXIT): retry, do not split. */
  readonly transient: boolean;
  constructor(step: string, cause: CommandError, payload: string) {
    const n = /(?:line:?\s*|Error in line )(\d+)/i.exec(cause.stderr)?.[1];
    const offending = n ? payload.split('\n')[Number(n) - 1] : undefined;
    super(`${step} failed: ${cause.message}${offending !== undefined ? `\noffending line ${n}: ${offending}` : ''}`);
    this.step = step;
    if (offending !== undefined) this.offendingLine = offending;
    this.exitCode = cause.exitCode;
    this.stderr = cause.stderr.trim();
    this.transient = TRANSIENT_EXIT.has(cause.exitCode) || TRANSIENT_TEXT.test(cause.stderr);
  }

  /**
   * The tool's own words on one line, without its usage hints: `ipset v7.17: Error in line 3:
   * Null-valued element, cannot be stored in a hash type of set`.
   */
  kernelMessage(): string {
    const lines = this.stderr
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !/^Try `/.test(l));
    return lines.join(' ') || `exit code ${this.exitCode}, no output`;
  }
}
