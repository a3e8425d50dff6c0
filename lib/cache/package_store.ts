/**
 * The `packages/` half of the cache: provider archives in the packed layout
 * that `terraform providers mirror` writes, each vouched for by a record in
 * `refs/` ({@link ArchiveMeta}). An archive counts as cached only when its
 * record exists and its size matches.
 *
 * {@link PackageStore.commit} is the one way an archive enters the cache
 * (downloads and `repoxy import` both use it): record first, then the
 * verified file by atomic commit, so a crash in between reads as "not
 * cached", never as a file that nothing vouches for.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { hashZipH1 } from "../integrity/dirhash.ts";
import { ZipFormatError } from "../integrity/zip_reader.ts";
import type { PlatformRef, ProviderRef } from "../protocol/names.ts";
import { packedArchivePath } from "../protocol/packed_layout.ts";
import { type ArchiveMeta, encodeArchiveMeta, parseArchiveMeta } from "./archive_meta.ts";
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

/** The storage key prefix of archives. */
export const PACKAGES_PREFIX = "packages/";

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

  constructor(readonly storage: Storage, readonly refs: RefsStore, readonly log: Logger) {}

  /** Calls `listener` after every archive this store commits. */
  onStored(listener: StoredListener): void {
    this.#listeners.push(listener);
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
   * bytes that will be read.
   */
  async open(p: ProviderRef, version: string, pl: PlatformRef): Promise<OpenArchive | undefined> {
    const meta = await this.meta(p, version, pl);
    if (!meta) return undefined;
    const object = await this.storage.open(this.keyOf(p, version, pl));
    if (!object) return undefined;
    if (object.size !== meta.size) {
      object.close();
      this.log.warn("cached archive does not match its recorded size; fetching again", {
        path: this.storage.locate(object.key),
        size: object.size,
        expected: meta.size,
      });
      return undefined;
    }
    return { object, meta };
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
    await this.refs.put(refKeys.archive(p, version, pl), {
      fetchedAt: meta.cachedAt,
      url: meta.url,
      body: encodeArchiveMeta(meta),
    });
    await this.storage.commit(tmpPath, key);
    for (const l of this.#listeners) l(p, version, pl, meta.size, key);
  }

  /**
   * Deletes an archive's record, but only while it still describes the same
   * stored bytes (`sha256` and `cachedAt`): a server that re-fetched the
   * archive in the meantime keeps its fresh record.
   */
  async dropMeta(p: ProviderRef, version: string, pl: PlatformRef, seen: ArchiveMeta) {
    const now = await this.readMeta(p, version, pl);
    if (!now || now.sha256 !== seen.sha256 || now.cachedAt !== seen.cachedAt) return;
    await this.refs.delete(refKeys.archive(p, version, pl)).catch(() => {});
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
