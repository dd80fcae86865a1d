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
