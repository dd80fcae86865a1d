// A folder of manifests as a model source: read at start, then re-read on change.
//
// Invariants:
// - Bad input loses nothing: when a file cannot be parsed (a YAML syntax error, a read
//   error), the objects it held last time stay in the model, so a half-written or broken
//   policy file never removes isolation. Invalid objects inside a parsed file are loaded
//   fail-closed by normalize (they isolate and allow nothing).
// - Only regular files are read: a FIFO, socket or device named like a manifest is reported
//   and never opened, so it cannot hang the agent (the read itself refuses one that replaced a
//   listed file).
// - Objects sharing a UID are all kept, as the CLI's loader keeps them (load.ts
//   disambiguateUids): a copied manifest never hides the object it was copied from.
// - The model is updated by difference (upsert what changed, remove what is gone), so an
//   unchanged object keeps its identity and the model's generation only moves on real change.

import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import type { Logger } from 'pino';
import { disambiguateUids, formatDiagnostic, listManifestFiles, parseManifests, readManifestFile, type Diagnostic } from '../manifests/load.ts';
import { printable } from '../model/issues.ts';
import { Model } from '../model/store.ts';
import { sameRecord, type ObjectRecord } from '../model/types.ts';
import type { ModelSource, SourceStatus } from './source.ts';
import { errorText } from '../util/error-text.ts';

interface FileEntry {
  /** sha256 of the text on disk (also when that text could not be parsed). */
  readonly hash: string;
  /** The objects in force for this file: its last good parse. */
  readonly records: readonly ObjectRecord[];
  /** Set while the text on disk cannot be parsed and older objects stand in for it. */
  readonly error?: string;
}

export interface FileSourceOptions {
  readonly dir: string;
  readonly logger?: Logger;
  /** Safety-net rescan interval; fs.watch events trigger rescans sooner. */
  readonly pollMs?: number;
  /** Quiet time after a change event before rescanning (editors write in several steps). */
  readonly settleMs?: number;
}

/** Identity of a folder's manifest content: what `lab probe` compares with an agent's. */
export async function folderRevision(dir: string): Promise<string> {
  const files = await listManifestFiles(dir, []);
  const hashes: [string, string][] = [];
  for (const f of files) hashes.push([f, sha256(await readManifestFile(f).catch(() => ''))]);
  return revisionOf(dir, hashes);
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function revisionOf(dir: string, fileHashes: readonly (readonly [string, string])[]): string {
  const h = createHash('sha256');
  for (const [f, hash] of fileHashes) h.update(`${f.slice(dir.length)}\0${hash}\n`);
  return h.digest('hex').slice(0, 16);
}

const FOLDER_UNREADABLE = 'cannot read the manifest folder';

export class FileSource implements ModelSource {
  readonly model = new Model();
  private readonly dir: string;
  private readonly log: Logger | undefined;
  private readonly pollMs: number;
  private readonly settleMs: number;
  private readonly files = new Map<string, FileEntry>();
  private readonly listeners: (() => void)[] = [];
  private rev = '';
  private started = false;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private settle: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescanPending = false;
  private lastError = '';
  /** Folder-level errors of the last scan (logged when new). */
  private listErrors = new Set<string>();
  /** Shared UIDs reported by the last apply (logged when it changes). */
  private uidReport = '';
  private invalid = 0;

  constructor(o: FileSourceOptions) {
    this.dir = o.dir;
    this.log = o.logger;
    this.pollMs = o.pollMs ?? 1000;
    this.settleMs = o.settleMs ?? 50;
  }

  async start(): Promise<void> {
    await this.rescan();
    // A folder that cannot be read at start is a configuration error, not an empty cluster.
    if (this.lastError.startsWith(FOLDER_UNREADABLE)) throw new Error(this.lastError);
    this.started = true;
    try {
      this.watcher = watch(this.dir, { recursive: true }, () => this.scheduleRescan());
      this.watcher.on('error', (e) => this.log?.warn({ err: e }, 'watching the manifest folder failed; polling continues'));
    } catch (e) {
      this.log?.warn({ err: e }, 'cannot watch the manifest folder; polling only');
    }
    this.poll = setInterval(() => this.scheduleRescan(), this.pollMs);
    this.poll.unref();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    clearInterval(this.poll);
    clearTimeout(this.settle);
    await this.scanning;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  revision(): string {
    return this.rev;
  }

  status(): SourceStatus {
    return { synced: this.started, healthy: this.lastError === '', detail: this.lastError || `watching ${this.dir}` };
  }

  invalidPolicies(): number {
    return this.invalid;
  }

  private scheduleRescan(): void {
    clearTimeout(this.settle);
    this.settle = setTimeout(() => void this.rescan(), this.settleMs);
  }

  /** One scan at a time; a request during a scan runs one more scan after it. */
  rescan(): Promise<void> {
    if (this.scanning) {
      this.rescanPending = true;
      return this.scanning;
    }
    this.scanning = this.scan()
      .catch((e: unknown) => {
        const msg = errorText(e);
        this.lastError = msg.startsWith(FOLDER_UNREADABLE) ? msg : `scan of ${this.dir} failed: ${msg}`;
        this.log?.error({ err: e }, this.lastError);
      })
      .finally(() => {
        this.scanning = undefined;
        if (this.rescanPending) {
          this.rescanPending = false;
          void this.rescan();
        }
      });
    return this.scanning;
  }

  private async scan(): Promise<void> {
    const listDiags: Diagnostic[] = [];
    const names = await listManifestFiles(this.dir, listDiags);
    // The folder itself gone (unmounted, renamed) is not "every object deleted": keep the model
    // as it is, so isolation stays, and report it.
    const rootError = listDiags.find((d) => d.severity === 'error' && d.file === this.dir);
    if (rootError) throw new Error(`${FOLDER_UNREADABLE} ${this.dir}: ${rootError.message}; keeping the last good objects`);
    const errors: string[] = listDiags.filter((d) => d.severity === 'error').map(formatDiagnostic);
    // Folder-level errors (a FIFO or device named like a manifest, an unreadable sub-folder) are
    // logged when they first appear, not on every poll; they stay in the status detail.
    for (const e of errors) if (!this.listErrors.has(e)) this.log?.error({ dir: this.dir }, e);
    this.listErrors = new Set(errors);
    const next = new Map<string, FileEntry>();
    for (const file of names) {
      let text: string;
      try {
        text = await readManifestFile(file); // refuses a FIFO or device that replaced the file since the listing
      } catch (e) {
        const prev = this.files.get(file);
        if (prev) next.set(file, { hash: '', records: prev.records });
        errors.push(`${printable(file)}: cannot read (${errorText(e)}); keeping its last good objects`);
        continue;
      }
      const hash = sha256(text);
      const prev = this.files.get(file);
      if (prev?.hash === hash) {
        next.set(file, prev);
        if (prev.error) errors.push(prev.error);
        continue;
      }
      // An editor (or `>` in a shell) truncates before it writes: an empty file that held
      // objects is most likely mid-write, and dropping its policies would open traffic. Its
      // objects stay until the file has content again or is deleted.
      if (prev && prev.records.length > 0 && text.trim() === '') {
        const error = `${printable(file)}: file is empty; keeping its last good objects (delete the file to remove them)`;
        errors.push(error);
        next.set(file, { hash, records: prev.records, error });
        continue;
      }
      const parsed = parseManifests(text, file);
      // A diagnostic without an object reference is a syntax or read error: part of the file
      // could not be understood. Keep the last good version of the whole file.
      const broken = parsed.diagnostics.filter((d) => d.severity === 'error' && !d.ref);
      for (const d of parsed.diagnostics) {
        const line = formatDiagnostic(d);
        if (d.severity === 'error') this.log?.error({ file, field: d.field, value: d.value, object: d.ref }, line);
        else this.log?.warn({ file, object: d.ref }, line);
      }
      if (broken.length && prev) {
        const error = `${printable(file)}: ${broken.length} unreadable document(s); keeping its last good objects`;
        errors.push(error);
        next.set(file, { hash, records: prev.records, error });
        continue;
      }
      next.set(file, { hash, records: parsed.objects.map((o) => o.record) });
    }
    this.files.clear();
    for (const [f, e] of next) this.files.set(f, e);
    // The revision moves only once the model holds this content: "applied revision R" must
    // never be claimed for content that failed to load.
    this.apply();
    this.rev = revisionOf(this.dir, [...next].map(([f, e]) => [f, e.hash] as const));
    this.lastError = errors.join('; ');
  }

  /** Bring the model to the files' records by difference. */
  private apply(): void {
    // Keyed by kind and UID: objects read from files have no UID and fall back to
    // namespace/name, which a Pod and a NetworkPolicy of the same name share.
    const key = (r: ObjectRecord) => `${r.kind}|${r.uid}`;
    // Objects sharing a UID across files are all kept (identity is kind, namespace and name):
    // the later ones get a derived UID, as the CLI's loader does; reported when that changes.
    const all: { record: ObjectRecord }[] = [];
    for (const e of this.files.values()) for (const record of e.records) all.push({ record });
    const { objects, diagnostics } = disambiguateUids(all);
    const report = diagnostics.map((d) => `${printable(d.ref ?? '')}: ${d.message}`).join('\n');
    if (report !== this.uidReport && report !== '') this.log?.warn({ dir: this.dir }, report.replaceAll('\n', '; '));
    this.uidReport = report;
    const wanted = new Map<string, ObjectRecord>();
    for (const o of objects) wanted.set(key(o.record), o.record);
    const before = this.model.generation;
    const present = new Map<string, ObjectRecord>();
    for (const r of [...this.model.allPods(), ...this.model.allPolicies(), ...this.model.allClusterPolicies(), ...this.model.allNodes(), ...this.model.allNamespaces()]) {
      // Compared as this source stored them, before the agent's adjusters (CNI overlay).
      if (!(r.kind === 'Namespace' && r.implicit)) present.set(key(r), this.model.sourceRecord(r.uid, r.kind) ?? r);
    }
    for (const [k, r] of present) if (!wanted.has(k)) this.model.remove(r.uid, r.kind);
    for (const [k, r] of wanted) {
      const cur = present.get(k);
      if (!sameRecord(cur, r)) this.model.upsert(r);
    }
    this.invalid = [...this.model.allPolicies()].filter((p) => p.issues.length > 0).length;
    if (this.model.generation !== before) for (const l of this.listeners) l();
  }
}
