// A folder of manifests as a model source: read at start, then re-read on change.
//
// Invariants:
// - Bad input loses nothing: when a file cannot be parsed (a YAML syntax error, a cyclic value,
//   a read error, a throw while loading it), the objects it held last time stay in the model,
//   so a half-written or broken policy file never removes isolation. Invalid objects inside a
//   parsed file are loaded fail-closed by normalize (they isolate and allow nothing), and so is
//   a NetworkPolicy document that cannot be read whole but still shows its namespace (it
//   isolates that namespace: load.ts, normalizeUnreadable), also when it is new and no earlier
//   version stands in. Every such file keeps the source unhealthy, naming file and line.
// - One file never stops the others: whatever fails or throws while one file is read or
//   loaded is that file's error, and the scan goes on to the rest and applies.
// - Synced (invariant synced-before-write, docs/design.md): `status().synced` turns true, and
//   `start()` resolves, only once a scan has read every file the folder lists: a file that
//   could not be read (or a document of unknown content, or a sub-folder that could not be
//   listed) is not "a file with no objects", and a model without it must not be written as if
//   it were the whole folder. Until then the source rescans on every change and poll, and says
//   in `status()` what it cannot read, as the kube source does until its lists are done. Once
//   synced it stays so: later such a file keeps its last good objects (or, new, has none yet)
//   and the source is unhealthy.
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
import { refOf, sameRecord, type ObjectRecord } from '../model/types.ts';
import type { ModelSource, SourceStatus } from './source.ts';
import { errorText } from '../util/error-text.ts';

interface FileEntry {
  /** sha256 of the text on disk (also when that text could not be parsed); '' when it could not be read. */
  readonly hash: string;
  /** The objects in force for this file: its last good parse. */
  readonly records: readonly ObjectRecord[];
  /** Set while the text on disk cannot be parsed and older objects stand in for it. */
  readonly error?: string;
  /**
   * Set when part of what the file holds is unknown and no earlier version stands in for it
   * (unreadable, or a document whose content cannot be told): the model may lack its objects.
   */
  readonly incomplete?: true;
}

export interface FileSourceOptions {
  readonly dir: string;
  readonly logger?: Logger;
  /** Safety-net rescan interval; fs.watch events trigger rescans sooner. */
  readonly pollMs?: number;
  /** Quiet time after a change event before rescanning (editors write in several steps). */
  readonly settleMs?: number;
  /**
   * For a one-shot command (`agent --dry-run`): start() reads the folder once and, when not
   * every file could be read, throws naming them instead of waiting for them.
   */
  readonly once?: boolean;
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

/** What stands in for a file that cannot be read now, in words. */
function standIn(prev: FileEntry | undefined): string {
  if (!prev || (prev.incomplete && prev.records.length === 0)) return 'its objects are unknown';
  return prev.incomplete ? 'keeping what could be read of it before (not all of it)' : 'keeping its last good objects';
}

export class FileSource implements ModelSource {
  readonly model = new Model();
  private readonly dir: string;
  private readonly log: Logger | undefined;
  private readonly pollMs: number;
  private readonly settleMs: number;
  private readonly once: boolean;
  private readonly files = new Map<string, FileEntry>();
  private readonly listeners: (() => void)[] = [];
  private rev = '';
  /** Every listed file was read once: see the invariant Synced above. */
  private synced = false;
  /** Resolves a start() waiting for the first complete scan. */
  private syncWaiter: (() => void) | undefined;
  private stopped = false;
  private watcher: FSWatcher | undefined;
  private poll: NodeJS.Timeout | undefined;
  private settle: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private rescanPending = false;
  private lastError = '';
  /** Errors of the last scan (each logged when it first appears, not on every poll). */
  private reported = new Set<string>();
  /** Shared UIDs reported by the last apply (logged when it changes). */
  private uidReport = '';
  private invalid = 0;

  constructor(o: FileSourceOptions) {
    this.dir = o.dir;
    this.log = o.logger;
    this.pollMs = o.pollMs ?? 1000;
    this.settleMs = o.settleMs ?? 50;
    this.once = o.once ?? false;
  }

  async start(): Promise<void> {
    await this.rescan();
    // A folder that cannot be read at start is a configuration error, not an empty cluster.
    if (this.lastError.startsWith(FOLDER_UNREADABLE)) throw new Error(this.lastError);
    if (this.once) {
      if (!this.synced) throw new Error(`not every manifest file could be read, so the folder's content is not known whole: ${this.lastError}`);
      return;
    }
    try {
      this.watcher = watch(this.dir, { recursive: true }, () => this.scheduleRescan());
      this.watcher.on('error', (e) => this.log?.warn({ err: e }, 'watching the manifest folder failed; polling continues'));
    } catch (e) {
      this.log?.warn({ err: e }, 'cannot watch the manifest folder; polling only');
    }
    this.poll = setInterval(() => this.scheduleRescan(), this.pollMs);
    this.poll.unref();
    if (!this.synced && !this.stopped) {
      this.log?.error({ dir: this.dir }, `not every manifest file could be read: nothing is written until each was read once; rescanning: ${this.lastError}`);
      await new Promise<void>((resolve) => (this.syncWaiter = resolve));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.syncWaiter?.();
    this.syncWaiter = undefined;
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
    if (!this.synced) {
      return { synced: false, healthy: false, detail: `${this.lastError || `reading ${this.dir}`}; nothing is written until every manifest file was read once` };
    }
    return { synced: true, healthy: this.lastError === '', detail: this.lastError || `watching ${this.dir}` };
  }

  invalidPolicies(): number {
    return this.invalid;
  }

  private scheduleRescan(): void {
    if (this.stopped) return;
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
        if (this.rescanPending && !this.stopped) {
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
    const next = new Map<string, FileEntry>();
    let incomplete = false;
    // A sub-folder or entry that could not be listed (`cannot read folder`, `cannot read path`:
    // load.ts) hides files: those read before keep their last good objects, and until it has
    // been read the folder's content is not known whole. A FIFO or device named like a manifest
    // is never read by design: it holds no objects, and it does not stop the source syncing.
    for (const d of listDiags) {
      if (d.severity !== 'error' || !d.message.startsWith('cannot read')) continue;
      incomplete = true;
      for (const [f, e] of this.files) if (f === d.file || f.startsWith(`${d.file}/`)) next.set(f, e);
    }
    for (const file of names) {
      let text: string;
      try {
        text = await readManifestFile(file); // refuses a FIFO or device that replaced the file since the listing
      } catch (e) {
        const prev = this.files.get(file);
        const error = `${printable(file)}: cannot read (${errorText(e)}); ${standIn(prev)}`;
        errors.push(error);
        next.set(file, prev ? { hash: '', records: prev.records, ...(prev.incomplete && { incomplete: true }) } : { hash: '', records: [], error, incomplete: true });
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
      const entry = this.load(file, text, hash, prev);
      if (entry.error) errors.push(entry.error);
      next.set(file, entry);
    }
    for (const e of next.values()) if (e.incomplete) incomplete = true;
    this.files.clear();
    for (const [f, e] of next) this.files.set(f, e);
    // The revision moves only once the model holds this content: "applied revision R" must
    // never be claimed for content that failed to load.
    this.apply();
    this.rev = revisionOf(this.dir, [...next].map(([f, e]) => [f, e.hash] as const));
    this.lastError = errors.join('; ');
    for (const e of errors) if (!this.reported.has(e)) this.log?.error({ dir: this.dir }, e);
    this.reported = new Set(errors);
    if (!this.synced && !incomplete) {
      this.synced = true;
      this.log?.info({ dir: this.dir, revision: this.rev }, 'every manifest file was read: the model describes the whole folder');
      this.syncWaiter?.();
      this.syncWaiter = undefined;
    }
  }

  /**
   * One file's text as an entry: its objects, or, when part of it cannot be read, what stands
   * in for it. A throw while loading (a bug) is this file's error alone.
   */
  private load(file: string, text: string, hash: string, prev: FileEntry | undefined): FileEntry {
    let parsed;
    try {
      parsed = parseManifests(text, file);
    } catch (e) {
      // No hash: the next scan loads it again (what threw may not throw twice); the error is
      // logged once, as every error of a scan.
      const error = `${printable(file)}: cannot load (${errorText(e)}); ${standIn(prev)}`;
      return { hash: '', records: prev?.records ?? [], error, ...((!prev || prev.incomplete) && { incomplete: true }) };
    }
    for (const d of parsed.diagnostics) {
      const line = formatDiagnostic(d);
      if (d.severity === 'error') this.log?.error({ file, field: d.field, value: d.value, object: d.ref }, line);
      else this.log?.warn({ file, object: d.ref }, line);
    }
    const unread = parsed.unread;
    if (unread.length === 0) return { hash, records: parsed.objects.map((o) => o.record) };
    // Part of the file could not be read (a syntax error, a cyclic value). Said in the status
    // with the first place, whatever happens to the objects.
    const first = unread[0]!;
    const firstError = parsed.diagnostics.find((d) => d.severity === 'error' && (d.ref === undefined || d.ref === first.ref));
    const why = `${printable(file)}: ${unread.length} unreadable document(s) (${firstError ? formatDiagnostic(firstError) : `document ${first.index + 1}`})`;
    if (prev) {
      // The last good version of the whole file stands in (a half-written file must not open
      // traffic), plus the fail-closed stand-in of each unreadable NetworkPolicy it does not
      // hold: a policy new in this version is enforced fail-closed at once, never dropped.
      const held = new Set(prev.records.map(refOf));
      const added = parsed.objects.filter((o) => o.unreadable && !held.has(refOf(o.record))).map((o) => o.record);
      return { hash, records: [...prev.records, ...added], error: `${why}; keeping its last good objects`, ...(prev.incomplete && { incomplete: true }) };
    }
    // No earlier version: the documents that could be read are enforced, an unreadable
    // NetworkPolicy that shows its namespace fails closed for it. A document whose content
    // cannot be told at all leaves the file incomplete (the source does not sync on it).
    const unknown = unread.filter((u) => u.unknown).length;
    const error = `${why}; ${unknown > 0 ? `what ${unknown} of them hold is unknown` : 'enforcing the rest, and each unreadable NetworkPolicy fail-closed'}`;
    return { hash, records: parsed.objects.map((o) => o.record), error, ...(unknown > 0 && { incomplete: true }) };
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
