/**
 * The `packages/` half of the cache: provider archives in the packed layout
 * that `terraform providers mirror` writes, each vouched for by a record in
 * `refs/` ({@link ArchiveMeta}). An archive counts as cached only when its
 * record exists and its size matches.
 *
 * {@link PackageStore.commit} is the one way an archive enters the cache
 * (downloads and `repoxy import` both use it): record first, then the
 * verified file by atomic commit, so a crash in between reads as "not
 * cached", never as a file that nothing vouches for; a commit that fails
 * puts the earlier record back (or removes the new one).
 *
 * Every open re-checks the file against its record: the size, and the cheap
 * fingerprint taken at commit (first and last 64 KiB). A file that fails is
 * removed and counts as not cached, so the request fetches and verifies it
 * again. The fingerprint is re-read when the file's identity (inode, size,
 * change times) differs from the last one that passed, or that pass is older
 * than {@link FINGERPRINT_TRUST_MS}; otherwise a hit costs nothing more.
 *
 * Changes (commit, removal) also rewrite the change marker
 * {@link CHANGE_MARKER_KEY}, which other processes on the same cache poll to
 * learn that their inventory is stale.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { hashZipH1 } from "../integrity/dirhash.ts";
import { ZipFormatError } from "../integrity/zip_reader.ts";
import type { PlatformRef, ProviderRef } from "../protocol/names.ts";
import { packedArchivePath } from "../protocol/packed_layout.ts";
import {
  type ArchiveMeta,
  encodeArchiveMeta,
  fingerprint,
  parseArchiveMeta,
} from "./archive_meta.ts";
import { type RefEntry, refKeys, type RefsStore } from "./refs_store.ts";
import type { OpenObject, Storage } from "./storage.ts";

/** An open cached archive. The caller must close `object` (or hand it to a Response). */
export interface OpenArchive {
  object: OpenObject;
  meta: ArchiveMeta;
}

/** Told about every archive that entered `packages/` (the inventory, the quota). */
export type StoredListener = (
  p: ProviderRef,
  version: string,
  pl: PlatformRef,
  size: number,
  key: string,
) => void;

/** Told about every archive that left `packages/` (pruned, quarantined, found bad). */
export type RemovedListener = (p: ProviderRef, version: string, pl: PlatformRef) => void;

/** The storage key prefix of archives. */
export const PACKAGES_PREFIX = "packages/";

/** The storage key of the change marker (rewritten by every commit and removal). */
export const CHANGE_MARKER_KEY = ".repoxy-changes";

/** Identities of files whose fingerprint passed, remembered at most. */
const CHECKED_MAX = 16_384;
/**
 * A passed fingerprint is trusted this long for an unchanged file, then read
 * again on the next hit (rot that leaves the change times alone shows within
 * this time on a hit; the background check reads everything else).
 */
export const FINGERPRINT_TRUST_MS = 600_000;

/** Stores, opens and records provider archives. */
export class PackageStore {
  readonly #h1Jobs = new Map<string, Promise<string | undefined>>();
  /** Archives whose `h1:` was refused (key → sha256): not retried for every listing. */
  readonly #h1Refused = new Map<string, string>();
  /** Aborted at shutdown: `h1:` jobs stop at their next chunk. */
  readonly #h1Abort = new AbortController();
  readonly #listeners: StoredListener[] = [];
  /** Keyed by the refs entry object, so a rewritten entry is parsed afresh. */
  readonly #parsedMeta = new WeakMap<RefEntry, ArchiveMeta>();
  readonly #removedListeners: RemovedListener[] = [];
  /** Storage key → identity of the file whose fingerprint last passed, and when. */
  readonly #checked = new Map<string, { identity: string; at: number }>();
  readonly #markerOwner = crypto.randomUUID();
  #markerSeq = 0;
  #overwroteForeign = false;

  constructor(readonly storage: Storage, readonly refs: RefsStore, readonly log: Logger) {}

  /** Calls `listener` after every archive this store commits. */
  onStored(listener: StoredListener): void {
    this.#listeners.push(listener);
  }

  /** Calls `listener` after an archive was removed through this store. */
  onRemoved(listener: RemovedListener): void {
    this.#removedListeners.push(listener);
  }

  /**
   * The change marker as storage holds it, and whether this store wrote it
   * last: an inventory rescans when it changed and was not its own.
   */
  async changeMarker(): Promise<{ text: string; ours: boolean } | undefined> {
    const b = await this.storage.get(CHANGE_MARKER_KEY);
    if (!b) return undefined;
    const text = new TextDecoder().decode(b);
    // Ours, unless we overwrote another process's mark since the last call:
    // its change must still be picked up.
    const ours = text.startsWith(this.#markerOwner + " ") && !this.#overwroteForeign;
    this.#overwroteForeign = false;
    return { text, ours };
  }

  async #noteChanged(): Promise<void> {
    const before = await this.storage.get(CHANGE_MARKER_KEY);
    if (before && !new TextDecoder().decode(before).startsWith(this.#markerOwner + " ")) {
      this.#overwroteForeign = true;
    }
    await this.storage.put(CHANGE_MARKER_KEY, `${this.#markerOwner} ${++this.#markerSeq}\n`)
      .catch(() => {});
  }

  #removed(p: ProviderRef, version: string, pl: PlatformRef): void {
    this.#checked.delete(this.keyOf(p, version, pl));
    for (const l of this.#removedListeners) l(p, version, pl);
  }

  /** The storage key of an archive. */
  keyOf(p: ProviderRef, version: string, pl: PlatformRef): string {
    return PACKAGES_PREFIX + packedArchivePath(p, version, pl);
  }

  /** Recorded meta of a stored archive (parsed once per stored entry; treat as read-only). */
  async meta(p: ProviderRef, version: string, pl: PlatformRef): Promise<ArchiveMeta | undefined> {
    const e = await this.refs.get(refKeys.archive(p, version, pl));
    if (!e) return undefined;
    let meta = this.#parsedMeta.get(e);
    if (!meta) {
      meta = parseArchiveMeta(e.body);
      if (!meta) return undefined;
      this.#parsedMeta.set(e, meta);
    }
    return meta;
  }

  /**
   * The record as storage holds it now, bypassing memory: for maintenance
   * commands that run next to a server which may change it.
   */
  async readMeta(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
  ): Promise<ArchiveMeta | undefined> {
    const e = await this.refs.read(refKeys.archive(p, version, pl));
    return e ? parseArchiveMeta(e.body) : undefined;
  }

  /**
   * Opens a cached archive, or returns undefined when it is not (validly)
   * cached. The size comes from the open object, so it always belongs to the
   * bytes that will be read. A file whose size or fingerprint no longer
   * matches its record is removed (with the record) and reads as not cached.
   */
  async open(p: ProviderRef, version: string, pl: PlatformRef): Promise<OpenArchive | undefined> {
    const meta = await this.meta(p, version, pl);
    if (!meta) return undefined;
    const key = this.keyOf(p, version, pl);
    const object = await this.storage.open(key);
    if (!object) return undefined;
    object.expect?.(meta.sha256);
    let problem: string | undefined;
    if (object.size !== meta.size) problem = "size";
    else if (meta.fp && !this.#trusted(key, object.identity)) {
      let fp: string | undefined;
      try {
        fp = await fingerprint(object, object.size);
      } catch (e) {
        object.close();
        throw e;
      }
      if (fp !== meta.fp) problem = "fingerprint";
      else if (object.identity) {
        this.#checked.delete(key);
        this.#checked.set(key, { identity: object.identity, at: Date.now() });
        if (this.#checked.size > CHECKED_MAX) {
          this.#checked.delete(this.#checked.keys().next().value!);
        }
      }
    }
    if (problem) {
      object.close();
      this.log.warn(
        `cached archive does not match its recorded ${problem}; removed, fetching again`,
        {
          path: this.storage.locate(key),
          size: object.size,
          expected: meta.size,
        },
      );
      await this.drop(p, version, pl, meta);
      return undefined;
    }
    return { object, meta };
  }

  #trusted(key: string, identity: string | undefined): boolean {
    const c = this.#checked.get(key);
    return identity !== undefined && c !== undefined && c.identity === identity &&
      Date.now() - c.at < FINGERPRINT_TRUST_MS;
  }

  /**
   * Removes a stored archive found bad, and its record, unless a fresh
   * copy with a different record replaced it meanwhile.
   */
  async drop(p: ProviderRef, version: string, pl: PlatformRef, seen: ArchiveMeta): Promise<void> {
    const now = await this.readMeta(p, version, pl);
    if (now && (now.sha256 !== seen.sha256 || now.cachedAt !== seen.cachedAt)) return;
    await this.storage.delete(this.keyOf(p, version, pl)).catch(() => false);
    await this.dropMeta(p, version, pl, seen);
  }

  /**
   * Makes a verified temp file the cached archive: its record first, then the
   * file by atomic commit. The temp file is consumed.
   */
  async commit(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    tmpPath: string,
    meta: ArchiveMeta,
  ): Promise<void> {
    const key = this.keyOf(p, version, pl);
    const refKey = refKeys.archive(p, version, pl);
    if (!meta.fp) {
      using f = await Deno.open(tmpPath, { read: true });
      const fp = await fingerprint(f, meta.size);
      if (!fp) throw new Error(`${tmpPath} is shorter than its recorded ${meta.size} bytes`);
      meta = { ...meta, fp };
    }
    const before = await this.refs.read(refKey);
    await this.refs.put(refKey, {
      fetchedAt: meta.cachedAt,
      url: meta.url,
      body: encodeArchiveMeta(meta),
    });
    try {
      await this.storage.commit(tmpPath, key, meta.sha256);
    } catch (e) {
      // No record may outlive a failed commit: put back the one that
      // vouched for the file still in place (or none).
      try {
        if (before) await this.refs.put(refKey, before);
        else await this.refs.delete(refKey);
      } catch (e2) {
        this.log.error("cannot roll back an archive record after a failed commit", {
          path: this.storage.locate(key),
          error: (e2 as Error).message,
        });
      }
      throw e;
    }
    for (const l of this.#listeners) l(p, version, pl, meta.size, key);
    await this.#noteChanged();
  }

  /**
   * Deletes an archive's record, but only while it still describes the same
   * stored bytes (`sha256` and `cachedAt`): a server that re-fetched the
   * archive in the meantime keeps its fresh record.
   */
  async dropMeta(p: ProviderRef, version: string, pl: PlatformRef, seen: ArchiveMeta) {
    // Callers removed the file already; the inventory forgets it unless a
    // fresh copy (with its own record) took its place meanwhile.
    const now = await this.readMeta(p, version, pl);
    const fresh = now !== undefined &&
      (now.sha256 !== seen.sha256 || now.cachedAt !== seen.cachedAt);
    if (!fresh) {
      if (now) await this.refs.delete(refKeys.archive(p, version, pl)).catch(() => {});
      this.#removed(p, version, pl);
    }
    await this.#noteChanged();
  }

  /**
   * Computes and records the archive's `h1:` if it is cached and lacks one.
   * Returns the h1 (or undefined when the archive is not cached).
   */
  ensureH1(p: ProviderRef, version: string, pl: PlatformRef): Promise<string | undefined> {
    const key = this.keyOf(p, version, pl);
    const running = this.#h1Jobs.get(key);
    if (running) return running;
    const job = (async () => {
      const meta = await this.meta(p, version, pl);
      if (!meta) return undefined;
      if (meta.h1) return meta.h1;
      if (this.#h1Refused.get(key) === meta.sha256) return undefined;
      const object = await this.storage.open(key);
      if (!object) throw new Error("the archive file is missing");
      let h1: string;
      try {
        h1 = await hashZipH1({
          read: (b) => object.read(b),
          seek: (o, w) => object.seek(o, w),
          stat: () => Promise.resolve({ size: object.size }),
        }, { signal: this.#h1Abort.signal });
      } catch (e) {
        if (e instanceof ZipFormatError) this.#h1Refused.set(key, meta.sha256);
        throw e;
      } finally {
        object.close();
      }
      const updated: ArchiveMeta = { ...meta, h1 };
      await this.refs.put(refKeys.archive(p, version, pl), {
        fetchedAt: meta.cachedAt,
        url: meta.url,
        body: encodeArchiveMeta(updated),
      });
      return h1;
    })();
    this.#h1Jobs.set(key, job);
    job.finally(() => this.#h1Jobs.delete(key)).catch((e) => {
      this.log.warn("cannot compute h1 of cached archive", {
        path: this.storage.locate(key),
        error: (e as Error).message,
      });
    });
    return job;
  }

  /** Abandons the `h1:` computations in flight and any started later (shutdown). */
  abortH1Jobs(): void {
    this.#h1Abort.abort(new Error("shutting down"));
  }

  /** Waits for `h1:` computations in flight (shutdown, tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#h1Jobs.values()]);
  }
}
