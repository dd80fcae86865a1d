// One line saying what went wrong, for logs, diagnostics and CLI errors. Every layer uses it, so
// it imports nothing.

/**
 * An error's message on one line: with its errno code when the message does not already say it
 * (`EACCES: permission denied, open 'x'` stays as it is), its network cause
 * (`fetch failed (ECONNREFUSED)`) or its HTTP status; `aborted` and `timed out` for an abort or
 * a timeout signal; `String(e)` for anything thrown that is not an Error.
 */
export function errorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  if (e.name === 'AbortError') return 'aborted';
  if (e.name === 'TimeoutError') return 'timed out';
  const own = (e as { code?: unknown }).code;
  const cause = (e as { cause?: unknown }).cause;
  const causeCode = cause && typeof cause === 'object' ? (cause as { code?: unknown }).code : undefined;
  const status = (e as { statusCode?: unknown }).statusCode;
  let text = typeof own === 'string' && !e.message.includes(own) ? `${own}: ${e.message}` : e.message;
  if (typeof causeCode === 'string' && !text.includes(causeCode)) text += ` (${causeCode})`;
  else if (typeof status === 'number' && !text.includes(String(status))) text += ` (HTTP ${status})`;
  return text;
}
