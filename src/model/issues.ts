// Collecting validation issues while walking a manifest: field paths in API notation
// (`spec.ingress[0].from[1].ipBlock.except[0]`, map keys as `matchLabels[app]`) and the value
// received as JSON text, so every message can name where it is and what was seen.

import type { ValidationIssue } from './types.ts';

export type Obj = Record<string, unknown>;

export function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Absent in the Go sense: a missing field and an explicit `null` decode the same way. */
export function isAbsent(v: unknown): v is undefined | null {
  return v === undefined || v === null;
}

const MAX_VALUE_TEXT = 200;

/** The value received, as JSON text; '' when nothing was received; long values are cut. */
export function jsonText(v: unknown): string {
  if (v === undefined) return '';
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = String(v); // cyclic (YAML aliases) or bigint: still say something
  }
  return text.length > MAX_VALUE_TEXT ? `${text.slice(0, MAX_VALUE_TEXT)}...` : text;
}

export function childPath(path: string, field: string): string {
  return path === '' ? field : `${path}.${field}`;
}

export function indexPath(path: string, i: number): string {
  return `${path}[${i}]`;
}

export function keyPath(path: string, key: string): string {
  return `${path}[${key}]`;
}

export class IssueList {
  readonly items: ValidationIssue[] = [];

  add(field: string, value: unknown, message: string): void {
    this.items.push({ field, value: jsonText(value), message });
  }

  get count(): number {
    return this.items.length;
  }

  /**
   * Report fields the schema does not know. kubectl's default (`--validate=strict`) rejects
   * them; accepting them silently would turn a typo such as `matchlabels` into an empty
   * selector that selects everything.
   */
  unknownFields(path: string, obj: Obj, known: readonly string[]): void {
    for (const k of Object.keys(obj)) {
      if (!known.includes(k)) this.add(childPath(path, k), obj[k], `unknown field ${JSON.stringify(k)} (known: ${known.join(', ')})`);
    }
  }
}

// ---- printing what manifests hold ------------------------------------------------------------
//
// Names, label keys and values, file names and field paths come from manifests that anyone
// allowed to write an object can fill: a name holding "\n-A FORWARD -j ACCEPT" printed raw
// would put a forged line into a log, an error or `explain` output. Invariant: everything a
// manifest holds is printed through `printable` (names) or `escapeLine` (whole lines), so it
// stays on the line it is printed on and cannot turn the terminal's text around.

/**
 * Characters that end a line or change how a terminal shows it: C0 and C1 controls, DEL, the
 * Unicode line and paragraph separators, bidirectional controls, and lone surrogates.
 */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

const SHORT_ESCAPES: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

/** The text with every unsafe character written as a JSON escape (`\n`, `\u2028`). */
export function escapeLine(text: string): string {
  return text.replace(UNSAFE, (c) => SHORT_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** JSON-quoted and escaped: `"a\nb"`. */
export function quoted(text: string): string {
  return escapeLine(JSON.stringify(text));
}

/** Printable name characters: ASCII without space, quote and backslash. */
const BARE = /^[!#-[\]-~]+$/;

/**
 * A name as printed: bare when it holds only printable ASCII without spaces, quotes or
 * backslashes (every valid Kubernetes name, label and field path), JSON-quoted otherwise.
 */
export function printable(text: string): string {
  return BARE.test(text) ? text : quoted(text);
}

/**
 * JSON text with the characters JSON.stringify leaves raw inside strings (C1 controls, the
 * line and paragraph separators, bidirectional controls) escaped too; the layout's own
 * newlines stay.
 */
export function escapeJson(json: string): string {
  return json.replace(/[\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
