// Manifest files (`kubectl get ... -o yaml` output, hand-written YAML, JSON) -> model records
// plus diagnostics that name file, line, object, field path and value.
//
// Rules:
// - A path is a file, a folder (read recursively: *.yaml, *.yml, *.json, sorted by name for
//   determinism; hidden entries skipped, which also skips the `..data` and `..<timestamp>`
//   twins of a ConfigMap volume), or `-` for stdin.
// - YAML 1.2 core schema (so `y` and `no` stay strings); JSON is read by the same parser,
//   which gives it line numbers too. Every document of a multi-document file, and every item
//   of a `List` / `*List`, is one object.
// - Nothing stops the load: a syntax error in one document, an unreadable path or an invalid
//   object is a diagnostic and the rest still loads. An invalid NetworkPolicy keeps its
//   fail-closed record in `objects` (docs/design.md, invariant fail-closed) next to one diagnostic per issue.

import { readFile, readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LineCounter, type Node as YamlNode, isMap, isScalar, isSeq, parseAllDocuments } from 'yaml';
import { normalize } from '../model/normalize.ts';
import { Model } from '../model/store.ts';
import type { ObjectRecord, ValidationIssue } from '../model/types.ts';
import { refOf } from '../model/types.ts';

export interface Diagnostic {
  readonly severity: 'error' | 'warning';
  readonly file: string;
  /** 1-based line of the field (or the object) the diagnostic is about. */
  readonly line?: number;
  readonly ref?: string;
  readonly field?: string;
  /** The value received, as JSON text. */
  readonly value?: string;
  readonly message: string;
}

export interface LoadedObject {
  readonly file: string;
  /** 0-based document index in the file. */
  readonly index: number;
  /** 0-based position in the `items` of a List document. */
  readonly item?: number;
  readonly line?: number;
  readonly record: ObjectRecord;
}

export interface SkippedObject {
  readonly file: string;
  readonly ref: string;
  readonly kind: string;
  readonly line?: number;
}

export interface LoadResult {
  readonly objects: LoadedObject[];
  readonly diagnostics: Diagnostic[];
  readonly skipped: SkippedObject[];
}

export interface LoadOptions {
  /** Source of `-`; defaults to reading process.stdin to the end. */
  readonly stdin?: () => Promise<string>;
}

export const STDIN_NAME = '<stdin>';
const EXTENSIONS = ['.yaml', '.yml', '.json'];

export async function loadManifests(paths: readonly string[], opts: LoadOptions = {}): Promise<LoadResult> {
  const result: LoadResult = { objects: [], diagnostics: [], skipped: [] };
  let stdinText: Promise<string> | undefined;
  for (const p of paths) {
    if (p === '-') {
      stdinText ??= (opts.stdin ?? readStdin)();
      try {
        appendResult(result, parseManifests(await stdinText, STDIN_NAME));
      } catch (e) {
        result.diagnostics.push({ severity: 'error', file: STDIN_NAME, message: `cannot read stdin: ${errorText(e)}` });
      }
      continue;
    }
    for (const file of await expandPath(p, result.diagnostics)) {
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (e) {
        result.diagnostics.push({ severity: 'error', file, message: `cannot read file: ${errorText(e)}` });
        continue;
      }
      appendResult(result, parseManifests(text, file));
    }
  }
  result.diagnostics.push(...duplicateWarnings(result.objects));
  return result;
}

function appendResult(into: LoadResult, from: LoadResult): void {
  into.objects.push(...from.objects);
  into.diagnostics.push(...from.diagnostics);
  into.skipped.push(...from.skipped);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

function errorText(e: unknown): string {
  if (e instanceof Error) return (e as NodeJS.ErrnoException).code ? `${(e as NodeJS.ErrnoException).code}: ${e.message}` : e.message;
  return String(e);
}

/** A file as given (any extension: the user named it), or a folder's manifest files, recursively. */
export async function listManifestFiles(path: string, diagnostics: Diagnostic[]): Promise<string[]> {
  return expandPath(path, diagnostics);
}

async function expandPath(path: string, diagnostics: Diagnostic[]): Promise<string[]> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    diagnostics.push({ severity: 'error', file: path, message: `cannot read path: ${errorText(e)}` });
    return [];
  }
  if (!st.isDirectory()) return [path];
  const files: string[] = [];
  await walk(path, files, new Set(), diagnostics);
  if (files.length === 0) diagnostics.push({ severity: 'warning', file: path, message: `no manifest files (${EXTENSIONS.join(', ')}) in this folder` });
  return files;
}

async function walk(dir: string, out: string[], seen: Set<string>, diagnostics: Diagnostic[]): Promise<void> {
  let names: string[];
  try {
    const real = await realpath(dir);
    if (seen.has(real)) return; // a symlink loop
    seen.add(real);
    names = await readdir(dir);
  } catch (e) {
    diagnostics.push({ severity: 'error', file: dir, message: `cannot read folder: ${errorText(e)}` });
    return;
  }
  // Code-point order, not locale order: the same tree loads the same way everywhere.
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    if (name.startsWith('.')) continue;
    const full = join(dir, name);
    let st;
    try {
      st = await stat(full); // follows symlinks
    } catch (e) {
      diagnostics.push({ severity: 'error', file: full, message: `cannot read path: ${errorText(e)}` });
      continue;
    }
    if (st.isDirectory()) await walk(full, out, seen, diagnostics);
    else if (EXTENSIONS.some((ext) => name.endsWith(ext))) out.push(full);
  }
}

/** Parse the text of one file (no I/O). `file` only names the source in the output. */
export function parseManifests(text: string, file: string): LoadResult {
  const result: LoadResult = { objects: [], diagnostics: [], skipped: [] };
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, version: '1.2', schema: 'core' });
  if (!Array.isArray(docs)) return result; // an empty stream
  docs.forEach((doc, index) => {
    const lineAt = (offset: number): number => lines.linePos(offset).line;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) {
        result.diagnostics.push({
          severity: 'error',
          file,
          line: e.linePos?.[0].line ?? lineAt(e.pos[0]),
          message: `YAML syntax error in document ${index + 1}, document skipped: ${e.message.split('\n')[0]}`,
        });
      }
      return;
    }
    for (const w of doc.warnings) {
      result.diagnostics.push({ severity: 'warning', file, line: w.linePos?.[0].line ?? lineAt(w.pos[0]), message: w.message.split('\n')[0]! });
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 1000 });
    } catch (e) {
      result.diagnostics.push({ severity: 'error', file, line: nodeLine(doc.contents, lineAt), message: `cannot read document ${index + 1}: ${errorText(e)}` });
      return;
    }
    if (value === null || value === undefined) return; // empty document, or comments only
    const root = doc.contents as YamlNode | null;
    const items = listItems(value);
    if (items) {
      const seq = isMap(root) ? root.get('items', true) : undefined;
      items.forEach((obj, item) => addObject(result, obj, { file, index, item, node: isSeq(seq) ? (seq.items[item] as YamlNode) : undefined, lineAt }));
    } else {
      addObject(result, value, { file, index, node: root ?? undefined, lineAt });
    }
  });
  return result;
}

/** The items of a `List` or `*List` document (kubectl get output), or undefined for one object. */
function listItems(v: unknown): unknown[] | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o['kind'] !== 'string' || !o['kind'].endsWith('List') || !Array.isArray(o['items'])) return undefined;
  return o['items'];
}

interface Place {
  readonly file: string;
  readonly index: number;
  readonly item?: number;
  readonly node: YamlNode | undefined;
  readonly lineAt: (offset: number) => number;
}

function addObject(result: LoadResult, obj: unknown, place: Place): void {
  const res = normalize(obj);
  const line = nodeLine(place.node, place.lineAt);
  const at = { file: place.file, ...(line !== undefined && { line }) };
  if (res.skipped !== undefined) {
    result.skipped.push({ ...at, ref: res.ref, kind: res.skipped });
    return;
  }
  // Issues of a policy are errors: it now isolates and allows nothing. Elsewhere an issue
  // is an error when the object was dropped, a warning when only a field was ignored.
  const severity = !res.record || res.record.kind === 'NetworkPolicy' ? 'error' : 'warning';
  for (const issue of res.issues) result.diagnostics.push(issueDiagnostic(issue, severity, res.ref, place));
  if (res.record) {
    result.objects.push({ file: place.file, index: place.index, ...(place.item !== undefined && { item: place.item }), ...(line !== undefined && { line }), record: res.record });
  }
}

function issueDiagnostic(issue: ValidationIssue, severity: Diagnostic['severity'], ref: string, place: Place): Diagnostic {
  const line = fieldLine(place.node, issue.field, place.lineAt);
  return {
    severity,
    file: place.file,
    ...(line !== undefined && { line }),
    ref,
    ...(issue.field !== '' && { field: issue.field }),
    ...(issue.value !== '' && { value: issue.value }),
    message: issue.message,
  };
}

function nodeLine(node: unknown, lineAt: (offset: number) => number): number | undefined {
  const range = (node as YamlNode | null | undefined)?.range;
  return range ? lineAt(range[0]) : undefined;
}

/** Split an API field path (`spec.ingress[0].from[1]`, `matchLabels[app.kubernetes.io/name]`). */
export function fieldPathSegments(field: string): Array<string | number> {
  const out: Array<string | number> = [];
  for (const m of field.matchAll(/([^.[\]]+)|\[([^\]]*)\]/g)) {
    if (m[1] !== undefined) out.push(m[1]);
    else out.push(/^[0-9]+$/.test(m[2]!) ? Number(m[2]) : m[2]!);
  }
  return out;
}

/**
 * The line of a field inside an object's YAML node: the line of its key (or list item), or of
 * the deepest part of the path that exists when the field itself is missing.
 */
function fieldLine(root: YamlNode | undefined, field: string, lineAt: (offset: number) => number): number | undefined {
  let node: unknown = root;
  let line = nodeLine(root, lineAt);
  for (const seg of fieldPathSegments(field)) {
    if (isSeq(node) && typeof seg === 'number') {
      node = node.items[seg];
      if (node === undefined) break;
      line = nodeLine(node, lineAt) ?? line;
    } else if (isMap(node)) {
      const pair = node.items.find((p) => String(isScalar(p.key) ? p.key.value : p.key) === String(seg));
      if (!pair) break;
      line = nodeLine(pair.key, lineAt) ?? line;
      node = pair.value;
    } else break;
  }
  return line;
}

/** `file:line: [warning: ]ref: field: message (got value)`, the form editors and CI logs link. */
export function formatDiagnostic(d: Diagnostic): string {
  const where = d.line !== undefined ? `${d.file}:${d.line}` : d.file;
  const level = d.severity === 'warning' ? 'warning' : undefined;
  const parts = [where, level, d.ref, d.field].filter((p): p is string => p !== undefined && p !== '');
  const got = d.value !== undefined && d.value !== '' ? ` (got ${d.value})` : '';
  return `${parts.join(': ')}: ${d.message}${got}`;
}

/**
 * Two objects with one UID: the later wins in `buildModel`, and says so here. Two UIDs for one
 * name (a live object and a hand-written copy) both stay, which is rarely what was meant.
 */
function duplicateWarnings(objects: readonly LoadedObject[]): Diagnostic[] {
  const out: Diagnostic[] = [];
  const byUid = new Map<string, LoadedObject>();
  const byRef = new Map<string, LoadedObject>();
  const where = (o: LoadedObject): string => (o.line !== undefined ? `${o.file}:${o.line}` : o.file);
  for (const o of objects) {
    const ref = refOf(o.record);
    const key = `${o.record.kind}\u0000${o.record.uid}`;
    const prev = byUid.get(key);
    const at = { severity: 'warning' as const, file: o.file, ...(o.line !== undefined && { line: o.line }), ref };
    if (prev) out.push({ ...at, message: `same UID ${JSON.stringify(o.record.uid)} as ${refOf(prev.record)} at ${where(prev)}; this later object replaces it` });
    else {
      const other = byRef.get(ref);
      if (other && other.record.kind === o.record.kind) out.push({ ...at, message: `also defined at ${where(other)} with another UID; both are kept` });
    }
    byUid.set(key, o);
    byRef.set(ref, o);
  }
  return out;
}

/** A new Model holding every loaded record, in load order (so of two with one UID the later wins). */
export function buildModel(result: Pick<LoadResult, 'objects'>): Model {
  const model = new Model();
  for (const o of result.objects) model.upsert(o.record);
  return model;
}
