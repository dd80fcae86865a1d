// Manifest files (`kubectl get ... -o yaml` output, hand-written YAML, JSON) -> model records
// plus diagnostics that name file, line, object, field path and value.
//
// Rules:
// - A path is a file, a folder (read recursively: *.yaml, *.yml, *.json in any letter case,
//   sorted by name for determinism; hidden entries skipped, which also skips the `..data` and
//   `..<timestamp>` twins of a ConfigMap volume), or `-` for stdin.
// - Inside a folder only regular files are read: a FIFO, socket or device named `x.yaml` is an
//   error naming it and is never opened (opening a FIFO without a writer blocks forever, a
//   device can be endless). A path named on the command line is read whatever it is (the user
//   asked: `-f <(kubectl get ...)` is a pipe).
// - YAML 1.2 core schema (so `y` and `no` stay strings); JSON is read by the same parser,
//   which gives it line numbers too. Every document of a multi-document file, and every item
//   of a `List` / `*List`, is one object.
// - Memory stays in proportion to one object, not to the file: documents are parsed one at a
//   time, and a big `List` document is cut into its items, each parsed alone and dropped once
//   normalized (a parsed YAML syntax tree costs tens of times its text). Whenever the cut could
//   change the meaning (a syntax error, an alias, a directive), the document is parsed whole,
//   as before, so both ways give the same objects and diagnostics.
// - Nothing stops the load: a syntax error in one document, an unreadable path or an invalid
//   object is a diagnostic and the rest still loads. An invalid NetworkPolicy keeps its
//   fail-closed record in `objects` (DESIGN 3.2) next to one diagnostic per issue. Whatever
//   throws while one document is read (a bug, a stack overflow on absurd nesting) skips that
//   document alone, with a diagnostic naming file and line.
// - A document that cannot be read whole (a YAML syntax error, a value that contains itself
//   through an alias) is listed in `unread`; what its envelope still shows decides the rest
//   (normalize.ts normalizeUnreadable): a NetworkPolicy of a known namespace fails closed for
//   the whole namespace (invariant fail-closed), so the CLI and the agent's FileSource enforce
//   the same thing.
// - Nothing vanishes unseen: a known kind (or its List) with a wrong apiVersion or a kind
//   spelled another way is an error (normalize.ts reads it as that kind); objects sharing a
//   UID are all kept (identity is kind, namespace and name), the later ones under a derived
//   UID, and the shared UID is reported.
// - Every name and value in a diagnostic is printed so that it stays on its line (quoted,
//   escaped), whatever bytes a manifest holds.

import { constants, createReadStream } from 'node:fs';
import { open, readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Document, LineCounter, type Node as YamlNode, type YAMLMap, isAlias, isMap, isScalar, isSeq, parseAllDocuments, parseDocument } from 'yaml';
import { childPath, escapeLine, indexPath, isObject, keyPath, printable } from '../model/issues.ts';
import { type Envelope, UNREADABLE, apiVersionOfKind, knownKind, normalize, normalizeUnreadable } from '../model/normalize.ts';
import { Model } from '../model/store.ts';
import type { ObjectRecord, ValidationIssue } from '../model/types.ts';
import { refOf } from '../model/types.ts';
import { errorText } from '../util/error-text.ts';

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
  /**
   * Set on the fail-closed stand-in of a document that could not be read whole (a NetworkPolicy
   * isolating its namespace): a source that keeps a file's last good objects adds it to them.
   */
  readonly unreadable?: true;
}

/** A document that could not be read whole: a YAML syntax error, a cyclic value, a throw. */
export interface UnreadDocument {
  readonly file: string;
  /** 0-based document index in the file. */
  readonly index: number;
  readonly item?: number;
  readonly line?: number;
  /** The object it shows itself as, as far as it can be told. */
  readonly ref: string;
  /**
   * True when what it holds cannot be told (no fail-closed stand-in, and no kind the enforcer
   * skips): a model without it may lack an object that enforces something.
   */
  readonly unknown: boolean;
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
  /** Documents that could not be read whole; each also has an error diagnostic. */
  readonly unread: UnreadDocument[];
}

function emptyResult(): LoadResult {
  return { objects: [], diagnostics: [], skipped: [], unread: [] };
}

export interface LoadOptions {
  /** Source of `-`; defaults to reading process.stdin to the end. */
  readonly stdin?: () => Promise<string>;
}

export interface ParseOptions {
  /**
   * Documents at least this long (characters) are read item by item when they are a List.
   * Tests set 0 to take that way on every document.
   */
  readonly splitAbove?: number;
}

export const STDIN_NAME = '<stdin>';
const EXTENSIONS = ['.yaml', '.yml', '.json'];
/** A List document this long is cut into items; below it, one parse costs little. */
const SPLIT_ABOVE = 256 * 1024;

export async function loadManifests(paths: readonly string[], opts: LoadOptions = {}): Promise<LoadResult> {
  const result = emptyResult();
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
    const named = await expandPath(p, result.diagnostics);
    for (const file of named) {
      let text: string;
      try {
        // The path itself as given may be a pipe (`-f <(...)`); files found in folders are regular.
        text = file === p ? await readNamedPath(file) : await readManifestFile(file);
      } catch (e) {
        result.diagnostics.push({ severity: 'error', file, message: `cannot read file: ${errorText(e)}` });
        continue;
      }
      // parseManifests reports what it cannot read; a throw all the same (a bug) costs this file
      // alone, named, never the files after it.
      try {
        appendResult(result, parseManifests(text, file));
      } catch (e) {
        result.diagnostics.push({ severity: 'error', file, message: `cannot load file, its objects are left out: ${errorText(e)}` });
      }
    }
  }
  const { objects, diagnostics } = disambiguateUids(result.objects);
  return { objects, diagnostics: [...result.diagnostics, ...diagnostics], skipped: result.skipped, unread: result.unread };
}

function appendResult(into: LoadResult, from: LoadResult): void {
  for (const o of from.objects) into.objects.push(o);
  for (const d of from.diagnostics) into.diagnostics.push(d);
  for (const s of from.skipped) into.skipped.push(s);
  for (const u of from.unread) into.unread.push(u);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/** What a non-regular file is, in words (for the diagnostic). */
function specialKind(st: { isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/**
 * The text of a manifest file found in a folder, refusing anything but a regular file. The
 * folder walk already skipped special files by stat; this guards the race where one replaces a
 * file between the walk and the read: the open is non-blocking (a FIFO opens at once instead
 * of waiting for a writer) and the opened file is checked before a byte is read.
 */
export async function readManifestFile(path: string): Promise<string> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`${specialKind(st)}, not a regular file: not read`);
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** A path named on the command line: a regular file as above, anything else (a pipe) as a stream. */
async function readNamedPath(path: string): Promise<string> {
  const st = await stat(path);
  if (st.isFile()) return readManifestFile(path);
  if (st.isSocket() || st.isBlockDevice()) throw new Error(`${specialKind(st)}: not read`);
  const chunks: Buffer[] = [];
  for await (const chunk of createReadStream(path)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A file as given (any extension: the user named it), or a folder's manifest files, recursively. */
export async function listManifestFiles(path: string, diagnostics: Diagnostic[]): Promise<string[]> {
  return expandPath(path, diagnostics);
}

/** Whether a file name is a manifest's: its extension, in any letter case (`x.YAML`). */
export function isManifestName(name: string): boolean {
  const lower = name.toLowerCase();
  return EXTENSIONS.some((ext) => lower.endsWith(ext));
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
      st = await stat(full); // follows symlinks: a link to a FIFO is a FIFO
    } catch (e) {
      diagnostics.push({ severity: 'error', file: full, message: `cannot read path: ${errorText(e)}` });
      continue;
    }
    if (st.isDirectory()) await walk(full, out, seen, diagnostics);
    else if (!isManifestName(name)) continue;
    else if (st.isFile()) out.push(full);
    else diagnostics.push({ severity: 'error', file: full, message: `${specialKind(st)}, not a regular file: skipped, never opened` });
  }
}

// ---- parsing ---------------------------------------------------------------------------------

const YAML_OPTIONS = { version: '1.2', schema: 'core' } as const;

/** Parse the text of one file (no I/O). `file` only names the source in the output. */
export function parseManifests(text: string, file: string, opts: ParseOptions = {}): LoadResult {
  const result = emptyResult();
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a byte order mark
  // Directives (`%YAML`, `%TAG`) change how the documents after them read: the library's own
  // stream reader handles them (the whole file's syntax trees at once; such files are small).
  if (/^%/m.test(text)) {
    parseStream(result, text, file);
    return result;
  }
  const splitAbove = opts.splitAbove ?? SPLIT_ABOVE;
  let index = 0;
  for (const span of documentSpans(text)) {
    const at = index;
    readSafely(result, file, at, span.line, (into) => {
      if (span.end - span.start < splitAbove || !readListByItems(into, text, span, at, file)) {
        readDocument(into, text.slice(span.start, span.end), span.line, at, file);
      }
    });
    index++;
  }
  return result;
}

/**
 * One document read into a result of its own, added only when the read ends: a throw skips
 * this document (none of its objects, not some of them) with a diagnostic, and the documents
 * after it still load.
 */
function readSafely(result: LoadResult, file: string, index: number, line: number | undefined, read: (into: LoadResult) => void): void {
  const local = emptyResult();
  try {
    read(local);
  } catch (e) {
    const at = { file, index, ...(line !== undefined && { line }) };
    result.diagnostics.push({ severity: 'error', ...at, message: `cannot read document ${index + 1}, document skipped: ${errorText(e)}` });
    result.unread.push({ ...at, ref: '<unknown>', unknown: true });
    return;
  }
  appendResult(result, local);
}

/** The old way, for files with directives: every document of the stream parsed at once. */
function parseStream(result: LoadResult, text: string, file: string): void {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, ...YAML_OPTIONS });
  if (!Array.isArray(docs)) return; // an empty stream
  docs.forEach((doc, index) => {
    const lineAt = (offset: number) => lines.linePos(offset).line;
    readSafely(result, file, index, doc.range ? lineAt(doc.range[0]) : undefined, (into) => readParsed(into, doc, lineAt, index, file));
  });
}

interface Span {
  readonly start: number;
  readonly end: number;
  /** 1-based line of `start`. */
  readonly line: number;
}

/**
 * The documents of a YAML stream, as the library numbers them: a `---` line starts one, a
 * `...` line ends one; text that is neither blank nor a comment outside an explicit document
 * is a bare document. A marker is only ever a marker at column 0 (YAML forbids such lines
 * inside scalars), so cutting at them never cuts through a value.
 */
function documentSpans(text: string): Span[] {
  const spans: Span[] = [];
  let cur = { start: 0, line: 1, explicit: false, content: false };
  let pos = 0;
  let line = 1;
  const close = (end: number) => {
    if (cur.explicit || cur.content) spans.push({ start: cur.start, end, line: cur.line });
  };
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    const next = nl < 0 ? text.length : nl + 1;
    const c = text.charCodeAt(pos);
    if (c === 45 /* - */ && text.startsWith('---', pos) && markerEnds(text, pos + 3)) {
      close(pos);
      cur = { start: pos, line, explicit: true, content: hasContent(text, pos + 3, next) };
    } else if (c === 46 /* . */ && text.startsWith('...', pos) && markerEnds(text, pos + 3)) {
      close(next);
      cur = { start: next, line: line + 1, explicit: false, content: false };
    } else if (!cur.content && hasContent(text, pos, next)) {
      cur.content = true;
    }
    pos = next;
    line++;
  }
  close(text.length);
  return spans;
}

function markerEnds(text: string, at: number): boolean {
  const c = text.charCodeAt(at);
  return at >= text.length || c === 32 || c === 9 || c === 10 || c === 13;
}

/** Whether [from, to) holds something other than blanks and a comment. */
function hasContent(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c === 32 || c === 9 || c === 10 || c === 13) continue;
    return c !== 35; /* # */
  }
  return false;
}

/** One document parsed alone; `line` is the 1-based line of its first character in the file. */
function readDocument(result: LoadResult, text: string, line: number, index: number, file: string): void {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, ...YAML_OPTIONS });
  readParsed(result, doc, (offset) => lines.linePos(offset).line + line - 1, index, file);
}

function readParsed(result: LoadResult, doc: Document.Parsed, lineAt: (offset: number) => number, index: number, file: string): void {
  const root = doc.contents as YamlNode | null;
  const place: Place = { file, index, line: nodeLine(root, lineAt), locate: () => ({ node: root ?? undefined, lineAt }) };
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      result.diagnostics.push({
        severity: 'error',
        file,
        line: lineAt(e.pos[0]),
        message: `YAML syntax error in document ${index + 1}, document skipped: ${yamlErrorText(e.message)}`,
      });
    }
    const first = doc.errors[0]!;
    const why = `YAML syntax error in document ${index + 1} (line ${lineAt(first.pos[0])}): ${yamlErrorText(first.message)}`;
    addUnreadable(result, envelopeOfNode(root, doc.errors.map((e) => e.pos[0])), { message: why }, place, true);
    return;
  }
  for (const w of doc.warnings) {
    result.diagnostics.push({ severity: 'warning', file, line: lineAt(w.pos[0]), message: w.message.split('\n')[0]! });
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    result.diagnostics.push({ severity: 'error', file, line: nodeLine(doc.contents, lineAt), message: `cannot read document ${index + 1}: ${errorText(e)}` });
    addUnreadable(result, envelopeOfNode(root, []), { message: `cannot read document ${index + 1}: ${errorText(e)}` }, place, true);
    return;
  }
  if (value === null || value === undefined) return; // empty document, or comments only
  const list = listOf(value);
  if (list) {
    listDiagnostics(result, list, file, (field) => fieldLine(root ?? undefined, field, lineAt));
    const seq = isMap(root) ? root.get('items', true) : undefined;
    list.items.forEach((obj, item) => {
      const node = isSeq(seq) ? (seq.items[item] as YamlNode) : undefined;
      addObject(result, itemObject(list, obj), { file, index, item, line: nodeLine(node, lineAt), locate: () => ({ node, lineAt }), detach: true });
    });
  } else {
    addObject(result, value, { ...place, detach: true });
  }
}

/**
 * The parser's message without its position: the library counts lines from the start of the
 * text it was given (one document), which is not the file's line; the diagnostic has that.
 */
function yamlErrorText(message: string): string {
  return message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}

/**
 * What a document with a syntax error still shows of its envelope, from its syntax tree: a
 * field is read only when it is a plain scalar, written once (or with one value), and no error
 * lies inside it; `UNREADABLE` when it is there but fails that. `errorOffsets` are where the
 * parser's errors are.
 */
function envelopeOfNode(root: unknown, errorOffsets: readonly number[]): Envelope {
  const touched = (node: unknown): boolean => {
    const r = (node as YamlNode | null | undefined)?.range;
    return !r || errorOffsets.some((o) => o >= r[0] && o <= r[2]);
  };
  const pairsOf = (map: YAMLMap, key: string) => map.items.filter((p) => isScalar(p.key) && p.key.value === key);
  const field = (map: YAMLMap, key: string): unknown => {
    const values = pairsOf(map, key).map((p) => (isScalar(p.value) && !touched(p.key) && !touched(p.value) ? copied(p.value.value) : UNREADABLE));
    if (values.length === 0) return undefined;
    return values.every((v) => v === values[0]) ? values[0] : UNREADABLE;
  };
  if (!isMap(root)) return { metadataRead: false };
  const env = { kind: field(root, 'kind'), apiVersion: field(root, 'apiVersion') };
  const metas = pairsOf(root, 'metadata');
  if (metas.length === 0) return { ...env, metadataRead: true };
  const meta = metas.length === 1 ? metas[0]!.value : undefined;
  if (!isMap(meta)) return { ...env, name: UNREADABLE, namespace: UNREADABLE, metadataRead: false };
  return { ...env, name: field(meta, 'name'), namespace: field(meta, 'namespace'), uid: field(meta, 'uid'), metadataRead: !touched(meta) };
}

/** The envelope of a value that was read but cannot be used whole (a cyclic value). */
function envelopeOfValue(v: unknown): Envelope {
  if (!isObject(v)) return { metadataRead: false };
  const meta = v['metadata'];
  const env = { kind: copied(v['kind']), apiVersion: copied(v['apiVersion']) };
  if (!isObject(meta)) return { ...env, metadataRead: meta === undefined || meta === null };
  return { ...env, name: copied(meta['name']), namespace: copied(meta['namespace']), uid: copied(meta['uid']), metadataRead: true };
}

/** A string of an envelope copied out of the file's text (a stand-in record keeps it). */
function copied(v: unknown): unknown {
  return typeof v === 'string' ? detachedString(v) : v;
}

/**
 * A document that could not be read whole: listed in `unread`, and read from its envelope
 * (normalizeUnreadable): a NetworkPolicy of a known namespace gets its fail-closed stand-in.
 * `reported`: a diagnostic already says what is wrong and that the document is skipped (the
 * syntax errors); one more is added only for a policy, to say how it is enforced.
 */
function addUnreadable(result: LoadResult, envelope: Envelope, problem: { readonly message: string; readonly field?: string; readonly value?: string }, place: Place, reported: boolean): void {
  const res = normalizeUnreadable(envelope, problem.message, { ...(problem.field !== undefined && { field: problem.field }), ...(problem.value !== undefined && { value: problem.value }) });
  const line = place.line;
  const at = { file: place.file, ...(line !== undefined && { line }) };
  result.unread.push({ ...at, index: place.index, ...(place.item !== undefined && { item: place.item }), ref: res.ref, unknown: res.unknown });
  if (res.skipped !== undefined) result.skipped.push({ ...at, ref: res.ref, kind: res.skipped });
  if (!reported || res.kind === 'NetworkPolicy' || res.kind === 'ClusterNetworkPolicy') {
    const where = place.locate();
    for (const issue of res.issues) result.diagnostics.push(issueDiagnostic(issue, 'error', res.ref, place.file, where.node, where.lineAt));
  }
  if (res.record) {
    result.objects.push({ file: place.file, index: place.index, ...(place.item !== undefined && { item: place.item }), ...(line !== undefined && { line }), record: res.record, unreadable: true });
  }
}

// ---- Lists -----------------------------------------------------------------------------------

interface ListDoc {
  readonly items: readonly unknown[];
  /** The kind as written. */
  readonly kind: string;
  readonly apiVersion: unknown;
  /** The kind its items have when they carry none (the API's `XList` leaves them out). */
  readonly itemKind?: string;
  /** The kind and apiVersion it should have had; absent when it is right. */
  readonly kindIssue?: string;
  readonly apiVersionIssue?: string;
}

/**
 * A `List` or `*List` document (kubectl get output), or undefined for one object. A list of a
 * known kind spelled another way (`list`, `Podlist`) still lists its items, with an error.
 */
function listOf(v: unknown): ListDoc | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const kind = o['kind'];
  const items = o['items'];
  if (typeof kind !== 'string' || !Array.isArray(items)) return undefined;
  const apiVersion = o['apiVersion'];
  if (kind === 'List') return { items, kind, apiVersion, ...(apiVersion !== 'v1' && { apiVersionIssue: 'v1' }) };
  if (kind.endsWith('List')) {
    const of = knownKind(kind.slice(0, -4));
    if (!of?.exact) return { items, kind, apiVersion }; // another kind's list: its items are read (and skipped) one by one
    const want = apiVersionOfKind(of.kind) ?? 'v1';
    return { items, kind, apiVersion, itemKind: of.kind, ...(apiVersion !== want && { apiVersionIssue: want }) };
  }
  if (!/list$/i.test(kind)) return undefined;
  const prefix = kind.slice(0, -4);
  const of = prefix === '' ? undefined : knownKind(prefix);
  if (prefix !== '' && !of) return undefined;
  const right = of ? `${of.kind}List` : 'List';
  return { items, kind, apiVersion, ...(of && { itemKind: of.kind }), kindIssue: right };
}

/** The envelope errors of a List: a misspelled kind, a wrong apiVersion (its items still load). */
function listDiagnostics(result: LoadResult, list: ListDoc, file: string, lineOf: (field: string) => number | undefined): void {
  const at = (field: string) => {
    const line = lineOf(field);
    return { severity: 'error' as const, file, ...(line !== undefined && { line }), ref: 'list', field };
  };
  if (list.kindIssue) {
    result.diagnostics.push({ ...at('kind'), value: JSON.stringify(list.kind), message: `not a kind: kinds are case-sensitive (expected ${list.kindIssue}); its items are read` });
  }
  if (list.apiVersionIssue) {
    const missing = list.apiVersion === undefined;
    result.diagnostics.push({
      ...at('apiVersion'),
      ...(!missing && { value: JSON.stringify(list.apiVersion) }),
      message: `${missing ? 'required field is missing' : `unknown apiVersion for ${list.kind}`} (expected ${list.apiVersionIssue}); its items are read`,
    });
  }
}

/** An item of a typed list without kind (the API's raw list format) takes the list's kind. */
function itemObject(list: ListDoc, obj: unknown): unknown {
  if (!list.itemKind || typeof obj !== 'object' || obj === null || Array.isArray(obj)) return obj;
  const o = obj as Record<string, unknown>;
  if (o['kind'] !== undefined) return obj;
  return { ...o, kind: list.itemKind, ...(o['apiVersion'] === undefined && list.apiVersion !== undefined && { apiVersion: list.apiVersion }) };
}

/**
 * A List document read item by item: each item's text is parsed alone and dropped once
 * normalized, so a dump of a hundred thousand objects never has all their syntax trees at
 * once. Returns false, having added nothing, when the document cannot be cut safely (not a
 * List, flow or odd layout, a syntax error or warning anywhere, an alias, ...): the caller then
 * parses it whole, which reports exactly what is wrong.
 */
function readListByItems(result: LoadResult, text: string, span: Span, index: number, file: string): boolean {
  const cut = cutJsonList(text, span) ?? cutBlockList(text, span);
  if (!cut) return false;
  const local = emptyResult();
  // The document without its items (newlines kept, so lines stay the file's).
  const restLines = new LineCounter();
  const rest = parseDocument(cut.rest, { lineCounter: restLines, ...YAML_OPTIONS });
  if (rest.errors.length || rest.warnings.length) return false;
  let restValue: unknown;
  try {
    restValue = rest.toJS({ maxAliasCount: 1000 });
  } catch {
    return false;
  }
  const list = listOf(restValue);
  if (!list || list.items.length !== 0) return false;
  const restLineAt = (offset: number) => restLines.linePos(offset).line + span.line - 1;
  listDiagnostics(local, list, file, (field) => fieldLine(rest.contents ?? undefined, field, restLineAt));

  let line = span.line;
  let counted = span.start;
  const lineOfOffset = (offset: number): number => {
    for (let i = text.indexOf('\n', counted); i >= 0 && i < offset; i = text.indexOf('\n', i + 1)) line++;
    counted = offset;
    return line;
  };
  for (let item = 0; item < cut.items.length; item++) {
    const [s, e] = cut.items[item]!;
    const first = lineOfOffset(s);
    const chunk = text.slice(s, e);
    const parseChunk = () => {
      const lines = new LineCounter();
      const doc = parseDocument(chunk, { lineCounter: lines, ...YAML_OPTIONS });
      return { doc, lineAt: (offset: number) => lines.linePos(offset).line + first - 1 };
    };
    let obj: unknown;
    let locate: Place['locate'];
    let objLine: number | undefined;
    if (cut.json) {
      try {
        obj = JSON.parse(chunk);
      } catch {
        return false;
      }
      objLine = first;
      // Field lines need the syntax tree: built only for an object that has issues.
      locate = () => {
        const { doc, lineAt } = parseChunk();
        return { node: doc.contents ?? undefined, lineAt };
      };
    } else {
      const { doc, lineAt } = parseChunk();
      if (doc.errors.length || doc.warnings.length) return false;
      let arr: unknown;
      try {
        arr = doc.toJS({ maxAliasCount: 1000 });
      } catch {
        return false;
      }
      const seq = doc.contents;
      if (!Array.isArray(arr) || arr.length !== 1 || !isSeq(seq)) return false;
      obj = arr[0];
      const node = seq.items[0] as YamlNode | undefined;
      objLine = nodeLine(node, lineAt);
      locate = () => ({ node, lineAt });
    }
    addObject(local, itemObject(list, obj), { file, index, item, line: objLine, locate, detach: !cut.json });
  }
  appendResult(result, local);
  return true;
}

interface ListCut {
  readonly json: boolean;
  /** The document with its items left out (`items: []`), newlines kept. */
  readonly rest: string;
  /** [start, end) of each item's text. */
  readonly items: readonly (readonly [number, number])[];
}

/**
 * A block-style List as kubectl prints it: `items:` at column 0, its entries `- ` at one
 * indentation, each running until the next entry or a line indented less (or a key at the
 * entries' own column). Comments and blank lines inside stay with the entry before them.
 */
function cutBlockList(text: string, span: Span): ListCut | undefined {
  let itemsAt = -1;
  let regionEnd = -1;
  let entryIndent = -1;
  const items: [number, number][] = [];
  let pos = span.start;
  while (pos < span.end) {
    const nl = text.indexOf('\n', pos);
    const next = nl < 0 || nl >= span.end ? span.end : nl + 1;
    if (itemsAt < 0 || regionEnd >= 0) {
      if (text.startsWith('items:', pos) && !hasContent(text, pos + 6, next)) {
        if (itemsAt >= 0) return undefined; // two `items:` keys: let the parser say so
        itemsAt = pos;
      }
    } else if (hasContent(text, pos, next)) {
      let indent = 0;
      while (text.charCodeAt(pos + indent) === 32) indent++;
      const entry = text.charCodeAt(pos + indent) === 45 /* - */ && markerEnds(text, pos + indent + 1);
      if (entryIndent < 0) {
        if (!entry) return undefined; // `items:` with a value that is not a block sequence
        entryIndent = indent;
      }
      if (entry && indent === entryIndent) {
        if (items.length) items[items.length - 1]![1] = pos;
        items.push([pos, span.end]);
      } else if (indent <= entryIndent) {
        regionEnd = pos;
        if (items.length) items[items.length - 1]![1] = pos;
      }
    }
    pos = next;
  }
  if (itemsAt < 0 || items.length === 0) return undefined;
  if (regionEnd < 0) regionEnd = span.end;
  const rest = `${text.slice(span.start, itemsAt)}items: []${newlines(text, itemsAt, regionEnd)}${text.slice(regionEnd, span.end)}`;
  return { json: false, rest, items };
}

function newlines(text: string, from: number, to: number): string {
  let n = 0;
  for (let i = text.indexOf('\n', from); i >= 0 && i < to; i = text.indexOf('\n', i + 1)) n++;
  return '\n'.repeat(n);
}

/**
 * A JSON List (`kubectl get -o json`): the top-level object's `items` array, its elements cut
 * by a scan that knows strings and nesting. Undefined unless the document is plain JSON (YAML
 * flow extras, comments, a duplicate key anywhere: the parser decides those).
 */
function cutJsonList(text: string, span: Span): ListCut | undefined {
  let pos = span.start;
  const skipWs = () => {
    for (;;) {
      const c = text.charCodeAt(pos);
      if (c === 32 || c === 9 || c === 10 || c === 13) pos++;
      else return;
    }
  };
  // An explicit document may start with its `---` line.
  if (text.startsWith('---', pos)) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0 || hasContent(text, pos + 3, nl)) return undefined;
    pos = nl + 1;
  }
  skipWs();
  if (text.charCodeAt(pos) !== 123 /* { */) return undefined;
  const scanner = new JsonScanner(text, span.end);
  const items: [number, number][] = [];
  let open = -1;
  let close = -1;
  const ok = scanner.object(pos, (key, valueStart) => {
    if (key !== 'items') return scanner.value(valueStart);
    if (text.charCodeAt(valueStart) !== 91 /* [ */) return -1;
    open = valueStart;
    close = scanner.array(valueStart, (s, e) => items.push([s, e]));
    return close < 0 ? -1 : close + 1;
  });
  if (ok < 0 || open < 0) return undefined;
  pos = ok;
  skipWs();
  if (pos < span.end && !text.startsWith('...', pos)) return undefined;
  const rest = `${text.slice(span.start, open + 1)}${newlines(text, open, close)}${text.slice(close, span.end)}`;
  return { json: true, rest, items };
}

const MAX_DEPTH = 64;

/**
 * Just enough of a JSON reader to find where values start and end: returns the offset after
 * a value, or -1 for anything that is not JSON. Keys of each object are checked for
 * duplicates (JSON.parse would keep the last silently; the YAML parser refuses them).
 */
class JsonScanner {
  private readonly text: string;
  private readonly end: number;
  /** Nesting depth; past MAX_DEPTH the scan gives up (the parser reports what it finds). */
  private depth = 0;
  constructor(text: string, end: number) {
    this.text = text;
    this.end = end;
  }

  private ws(p: number): number {
    for (;;) {
      const c = this.text.charCodeAt(p);
      if (c === 32 || c === 9 || c === 10 || c === 13) p++;
      else return p;
    }
  }

  value(p: number): number {
    p = this.ws(p);
    const c = this.text.charCodeAt(p);
    if (c === 123 || c === 91) {
      if (this.depth >= MAX_DEPTH) return -1;
      this.depth++;
      const e = c === 123 ? this.object(p, (_k, v) => this.value(v)) : this.array(p, () => undefined);
      this.depth--;
      return e < 0 ? -1 : c === 123 ? e : e + 1;
    }
    if (c === 34) return this.string(p);
    const m = /^(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null)/.exec(this.text.slice(p, p + 40));
    return m ? p + m[0].length : -1;
  }

  /** Offset after the closing quote. */
  string(p: number): number {
    for (let i = p + 1; i < this.end; i++) {
      const c = this.text.charCodeAt(i);
      if (c === 92) i++;
      else if (c === 34) return i + 1;
      else if (c < 32) return -1;
    }
    return -1;
  }

  /** `{ "k": v, ... }`; `member` reads each value and returns the offset after it. */
  object(p: number, member: (key: string, valueStart: number) => number): number {
    const keys = new Set<string>();
    p = this.ws(p + 1);
    if (this.text.charCodeAt(p) === 125) return p + 1;
    for (;;) {
      if (this.text.charCodeAt(p) !== 34) return -1;
      const ke = this.string(p);
      if (ke < 0) return -1;
      const raw = this.text.slice(p + 1, ke - 1);
      let key: string;
      try {
        key = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
      } catch {
        return -1;
      }
      if (keys.has(key)) return -1;
      keys.add(key);
      p = this.ws(ke);
      if (this.text.charCodeAt(p) !== 58 /* : */) return -1;
      p = member(key, this.ws(p + 1));
      if (p < 0) return -1;
      p = this.ws(p);
      const c = this.text.charCodeAt(p);
      if (c === 125) return p + 1;
      if (c !== 44) return -1;
      p = this.ws(p + 1);
    }
  }

  /** `[ v, ... ]`: each element's [start, end) to `element`; returns the offset of `]`. */
  array(p: number, element: (s: number, e: number) => void): number {
    p = this.ws(p + 1);
    if (this.text.charCodeAt(p) === 93) return p;
    for (;;) {
      const e = this.value(p);
      if (e < 0) return -1;
      element(p, e);
      p = this.ws(e);
      const c = this.text.charCodeAt(p);
      if (c === 93) return p;
      if (c !== 44) return -1;
      p = this.ws(p + 1);
    }
  }
}

// ---- objects ---------------------------------------------------------------------------------

interface Place {
  readonly file: string;
  readonly index: number;
  readonly item?: number;
  /** The line of the object itself. */
  readonly line: number | undefined;
  /** Its syntax tree and how offsets map to lines, for field lines (built on demand). */
  readonly locate: () => { readonly node: YamlNode | undefined; readonly lineAt: (offset: number) => number };
  /** The object's strings are slices of the file's text (YAML parser output): copy them. */
  readonly detach?: boolean;
}

/**
 * Issues that change what is enforced are errors even on a kept Pod, Namespace or Node (and
 * fail `--strict`): a kind or apiVersion read as ours despite its spelling, a pod address
 * refused (the pod is then in no set). Other issues on those kinds drop one field: warnings.
 */
function isErrorIssue(issue: ValidationIssue): boolean {
  return issue.field === 'kind' || issue.field === 'apiVersion' || issue.field.startsWith('status.podIP');
}

/**
 * A string copied out of the text it was cut from. A YAML parser's strings are slices of the
 * source text, and V8 keeps a slice's whole parent alive: without this, a record holding one
 * UID would keep the whole file's text in memory for as long as the model lives (the agent:
 * forever).
 */
function detachedString(v: string): string {
  return v.length >= 13 ? (' ' + v).slice(1) : v;
}

/**
 * Copies every long string of a parsed value out of the file's text (in place), and finds a
 * value that contains itself: YAML lets an alias refer to an anchor around it (`data: &a {x:
 * *a}`), and the parser then returns a cyclic value, which nothing after this point may walk (it
 * would recurse for ever). Returns the field path of the first such alias, or undefined. Each
 * object is walked once however many aliases share it, so the cost stays linear in the value.
 */
function detach(v: object, path: string, onPath: Set<object>, done: Set<object>): string | undefined {
  if (done.has(v)) return undefined;
  onPath.add(v);
  const child = (x: unknown, p: string, set: (y: string) => void): string | undefined => {
    if (typeof x === 'string') set(detachedString(x));
    else if (typeof x === 'object' && x !== null) return onPath.has(x) ? p : detach(x, p, onPath, done);
    return undefined;
  };
  let cycle: string | undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length && cycle === undefined; i++) cycle = child(v[i], indexPath(path, i), (y) => (v[i] = y));
  } else {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      cycle = child(o[k], /^[A-Za-z0-9_-]+$/.test(k) ? childPath(path, k) : keyPath(path, k), (y) => (o[k] = y));
      if (cycle !== undefined) break;
    }
  }
  onPath.delete(v);
  done.add(v);
  return cycle;
}

/** The alias written at a field path (`*a`), as JSON text, for the diagnostic; '' when there is none. */
function aliasText(root: YamlNode | undefined, field: string): string {
  let node: unknown = root;
  for (const seg of fieldPathSegments(field)) {
    if (isSeq(node) && typeof seg === 'number') node = node.items[seg];
    else if (isMap(node)) node = node.items.find((p) => String(isScalar(p.key) ? p.key.value : p.key) === String(seg))?.value;
    else return '';
  }
  return isAlias(node) ? JSON.stringify(`*${node.source}`) : '';
}

const CYCLIC = 'an alias refers to its own parent: cyclic values are not supported';

function addObject(result: LoadResult, obj: unknown, place: Place): void {
  if (place.detach) {
    if (typeof obj === 'string') obj = detachedString(obj);
    const cycle = typeof obj === 'object' && obj !== null ? detach(obj, '', new Set(), new Set()) : undefined;
    if (cycle !== undefined) {
      // The document is skipped like any unreadable one (a NetworkPolicy fails closed for its
      // namespace); only its envelope, plain scalars, is read.
      addUnreadable(result, envelopeOfValue(obj), { message: CYCLIC, field: cycle, value: aliasText(place.locate().node, cycle) }, place, false);
      return;
    }
  }
  const res = normalize(obj);
  const line = place.line;
  const at = { file: place.file, ...(line !== undefined && { line }) };
  if (res.skipped !== undefined) {
    result.skipped.push({ ...at, ref: res.ref, kind: res.skipped });
    // A skipped object has issues only when it is a mistake in our API groups (an unknown kind
    // of networking.k8s.io, the v1alpha1 AdminNetworkPolicy): an error, never silent.
    if (res.issues.length > 0) {
      const where = place.locate();
      for (const issue of res.issues) result.diagnostics.push(issueDiagnostic(issue, 'error', res.ref, place.file, where.node, where.lineAt));
    }
    return;
  }
  // Issues of a policy are errors: it now isolates and allows nothing. Elsewhere an issue
  // is an error when the object was dropped or what it enforces changed, a warning when only
  // a field was ignored.
  if (res.issues.length > 0) {
    const where = place.locate();
    for (const issue of res.issues) {
      // Policies of either kind fail closed on any issue (ClusterNetworkPolicies also on what they do not support): errors.
      const severity = !res.record || res.record.kind === 'NetworkPolicy' || res.record.kind === 'ClusterNetworkPolicy' || isErrorIssue(issue) ? 'error' : 'warning';
      result.diagnostics.push(issueDiagnostic(issue, severity, res.ref, place.file, where.node, where.lineAt));
    }
  }
  if (res.record) {
    result.objects.push({ file: place.file, index: place.index, ...(place.item !== undefined && { item: place.item }), ...(line !== undefined && { line }), record: res.record });
  }
}

function issueDiagnostic(issue: ValidationIssue, severity: Diagnostic['severity'], ref: string, file: string, node: YamlNode | undefined, lineAt: (offset: number) => number): Diagnostic {
  const line = fieldLine(node, issue.field, lineAt);
  return {
    severity,
    file,
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

/**
 * `file:line: [warning: ]ref: field: message (got value)`, the form editors and CI logs link.
 * File, object and field are printed bare when they hold only name characters, quoted and
 * escaped otherwise; the whole line is escaped again so that nothing a manifest holds can
 * start a line of its own (a name holding "\n-A FORWARD -j ACCEPT" stays on this line).
 */
export function formatDiagnostic(d: Diagnostic): string {
  const where = d.line !== undefined ? `${printable(d.file)}:${d.line}` : printable(d.file);
  const level = d.severity === 'warning' ? 'warning' : undefined;
  const parts = [where, level, d.ref !== undefined ? printable(d.ref) : undefined, d.field !== undefined ? printable(d.field) : undefined].filter((p): p is string => p !== undefined && p !== '');
  const got = d.value !== undefined && d.value !== '' ? ` (got ${d.value})` : '';
  return escapeLine(`${parts.join(': ')}: ${d.message}${got}`);
}

// ---- identity --------------------------------------------------------------------------------

/**
 * Objects sharing a UID (a copied manifest) are all kept: identity is kind, namespace and
 * name, and the model stores records by UID, so each later object with the UID of another
 * kind+namespace+name gets a derived UID (`<uid>/<namespace>/<name>`, only then). The same
 * object (same kind, namespace and name) read twice is one object: the later replaces it.
 * Every shared UID is reported. Deterministic: objects come in load order.
 */
export function disambiguateUids<T extends { readonly record: ObjectRecord; readonly file?: string; readonly line?: number }>(objects: readonly T[]): { objects: T[]; diagnostics: Diagnostic[] } {
  const out: T[] = [];
  const diagnostics: Diagnostic[] = [];
  const byUid = new Map<string, T>();
  const byRef = new Map<string, T>();
  const where = (o: T): string => (o.file === undefined ? 'an earlier object' : o.line !== undefined ? `${printable(o.file)}:${o.line}` : printable(o.file));
  for (let o of objects) {
    const ref = refOf(o.record);
    const kind = o.record.kind;
    const key = (uid: string) => `${kind}\u0000${uid}`;
    const at = { severity: 'warning' as const, file: o.file ?? '', ...(o.line !== undefined && { line: o.line }), ref };
    const prev = byUid.get(key(o.record.uid));
    if (prev && refOf(prev.record) === ref) {
      diagnostics.push({ ...at, message: `defined again (same UID ${JSON.stringify(o.record.uid)}) after ${where(prev)}; this later object replaces it` });
    } else if (prev) {
      let uid = `${o.record.uid}/${'namespace' in o.record ? `${o.record.namespace}/` : ''}${o.record.name}`;
      while (byUid.has(key(uid))) uid += '/dup';
      diagnostics.push({ ...at, message: `same UID ${JSON.stringify(o.record.uid)} as ${printable(refOf(prev.record))} at ${where(prev)}; both are kept (this one as UID ${JSON.stringify(uid)})` });
      o = { ...o, record: { ...o.record, uid } };
    } else {
      const other = byRef.get(ref);
      if (other && other.record.kind === kind) diagnostics.push({ ...at, message: `also defined at ${where(other)} with another UID; both are kept` });
    }
    byUid.set(key(o.record.uid), o);
    byRef.set(ref, o);
    out.push(o);
  }
  return { objects: out, diagnostics };
}

/**
 * A new Model holding every loaded record, in load order (of two with one identity the later
 * wins; objects sharing a UID are all kept, see disambiguateUids).
 */
export function buildModel(result: Pick<LoadResult, 'objects'>): Model {
  const model = new Model();
  for (const o of disambiguateUids(result.objects).objects) model.upsert(o.record);
  return model;
}
