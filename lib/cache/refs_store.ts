/**
 * The `refs/` half of the cache: metadata fetched from upstreams (discovery,
 * version lists, download documents, SHA256SUMS and signatures, archive
 * records), each stored as a small JSON envelope with the time it was fetched.
 *
 * This module owns the key scheme ({@link refKeys}); keys are built only from
 * validated names. An in-memory LRU bounded by bytes ({@link ByteLru}) keeps
 * hot entries so a metadata hit touches no storage; what falls out is read
 * from `refs/` again when next asked for. URLs are stored redacted (no query
 * string, no userinfo): a presigned URL's credential must not sit on disk.
 * @module
 */
import {
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import { redactUrl } from "../base/redact.ts";
import { ByteLru } from "./byte_lru.ts";
import type { Storage } from "./storage.ts";

/** Keys of the refs store, in one place so every module agrees on them. */
export const refKeys = {
  discovery: (hostname: string) => `${hostname}/discovery`,
  versions: (p: ProviderRef) => `${providerString(p)}/versions`,
  download: (p: ProviderRef, v: string, pl: PlatformRef) =>
    `${providerString(p)}/${v}/download_${platformString(pl)}`,
  sums: (p: ProviderRef, v: string) => `${providerString(p)}/${v}/SHA256SUMS`,
  signature: (p: ProviderRef, v: string) => `${providerString(p)}/${v}/SHA256SUMS.sig`,
  archive: (p: ProviderRef, v: string, pl: PlatformRef) =>
    `${providerString(p)}/${v}/archive_${platformString(pl)}`,
};

/** One stored metadata document. */
export interface RefEntry {
  /** Epoch ms when fetched from the upstream. */
  fetchedAt: number;
  /** The URL it was finally fetched from (after redirects). */
  url: string;
  /** The body exactly as received: UTF-8 text, or base64 for binary bodies. */
  body: string;
  encoding?: "base64";
  /**
   * The upstream's validators for the body (version lists only): sent back
   * when the entry is revalidated, so an unchanged list costs a 304.
   */
  etag?: string;
  lastModified?: string;
}

/** Default bound of the in-memory entries, in (estimated) bytes. */
export const DEFAULT_REFS_MEMORY_BYTES = 48 * 2 ** 20;

/**
 * What an entry is charged in memory. Bodies are charged three times their
 * length: the text itself plus what parsing it keeps beside it (measured:
 * a parsed 1 MB version list holds ~2.8 MB of heap with its text), since the
 * parsed forms live exactly as long as the entry (see `parsedOnce` in upstream/ref_cache.ts).
 */
function costOf(key: string, entry: RefEntry | null): number {
  if (!entry) return 2 * key.length + 64;
  return 3 * entry.body.length + 2 * (key.length + entry.url.length) + 256;
}

function sameContent(a: RefEntry, b: RefEntry): boolean {
  return a.body === b.body && a.url === b.url && a.encoding === b.encoding;
}

/** Copies `from`'s validators onto `to` (dropping those `from` lacks). */
function setValidators(to: RefEntry, from: RefEntry): void {
  if (from.etag !== undefined) to.etag = from.etag;
  else delete to.etag;
  if (from.lastModified !== undefined) to.lastModified = from.lastModified;
  else delete to.lastModified;
}

/** Archive records (`archive_*` keys) carry the URL the bytes came from in their body. */
function redactArchiveRecord(body: string): string {
  try {
    const rec = JSON.parse(body);
    if (rec && typeof rec === "object" && typeof rec.url === "string") {
      const url = redactUrl(rec.url);
      if (url !== rec.url) return JSON.stringify({ ...rec, url });
    }
  } catch { /* not JSON: stored as given */ }
  return body;
}

/** Reads and writes metadata envelopes under `refs/` of a {@link Storage}. */
export class RefsStore {
  readonly #memory: ByteLru<string, RefEntry | null>;
  /**
   * Bumped whenever what an entry holds changes (a write with different
   * bytes, a forget, a reload that found other bytes), so answers derived
   * from entries (see http/response_cache.ts) can tell in O(1) that
   * something they read may be stale. A refresh that brings the same bytes
   * does not bump it: that would throw away every kept answer for nothing.
   */
  generation = 0;

  constructor(readonly storage: Storage, memoryBytes = DEFAULT_REFS_MEMORY_BYTES) {
    this.#memory = new ByteLru(memoryBytes);
  }

  /**
   * Largest envelope file read back from storage; a bigger one (planted, or
   * written under a larger `limits.metadataDocument`) counts as absent.
   */
  maxEntryBytes: number | undefined;

  /** Sets the bound of the in-memory entries (evicting at once if it shrank). */
  setMemoryBytes(bytes: number): void {
    this.#memory.resize(bytes);
  }

  /** Estimated bytes of the entries held in memory (never above the bound). */
  get memoryBytes(): number {
    return this.#memory.bytes;
  }

  /** Entries (and known absences) held in memory. */
  get memoryEntries(): number {
    return this.#memory.size;
  }

  /** The storage key of a refs key. */
  storageKey(key: string): string {
    return `refs/${key}.json`;
  }

  /** Returns the entry, or undefined when none is stored (or it is unreadable). */
  async get(key: string): Promise<RefEntry | undefined> {
    if (this.#memory.has(key)) return this.#memory.get(key) ?? undefined;
    const entry = await this.read(key);
    this.#remember(key, entry ?? null);
    return entry;
  }

  /**
   * Reads an entry from storage, bypassing (and not filling) memory: what
   * another process, such as a maintenance command, may have written.
   */
  async read(key: string): Promise<RefEntry | undefined> {
    const bytes = await this.storage.get(this.storageKey(key), this.maxEntryBytes);
    if (!bytes) return undefined;
    try {
      const parsed = JSON.parse(new TextDecoder().decode(bytes));
      if (
        parsed && typeof parsed.fetchedAt === "number" && typeof parsed.body === "string" &&
        typeof parsed.url === "string"
      ) return parsed;
    } catch { /* unreadable: as if absent */ }
    return undefined;
  }

  /**
   * Reads an entry from storage again (another process may have written it)
   * and takes it into memory. The generation moves only if what storage
   * holds differs from what memory held.
   */
  async reload(key: string): Promise<RefEntry | undefined> {
    const had = this.#memory.peek(key);
    const known = this.#memory.has(key);
    const entry = await this.read(key);
    const changed = !known || (had ? !entry || !sameContent(had, entry) : entry !== undefined);
    if (!changed) return had ?? undefined;
    this.#remember(key, entry ?? null);
    this.generation++;
    return entry;
  }

  /**
   * Stores an entry atomically (and in memory). Its URL (and an archive
   * record's URL) is redacted first.
   */
  async put(key: string, given: RefEntry): Promise<void> {
    let entry: RefEntry = { ...given, url: redactUrl(given.url) };
    if (key.includes("/archive_")) entry = { ...entry, body: redactArchiveRecord(entry.body) };
    const had = this.#memory.has(key) ? this.#memory.peek(key) : await this.read(key).catch(() => {
      return undefined;
    });
    if (had && sameContent(had, entry)) {
      // Same bytes: keep the object already handed out (and what was parsed
      // from it), only its time (and the validators for it) move.
      had.fetchedAt = entry.fetchedAt;
      setValidators(had, entry);
      this.#remember(key, had);
    } else {
      // Remembered even if the write fails: a broken disk should cost
      // durability, not the ability to answer.
      this.#remember(key, entry);
      this.generation++;
    }
    await this.storage.put(this.storageKey(key), JSON.stringify(entry));
  }

  /**
   * Marks `confirmed` as current at `fetchedAt` (the upstream answered 304
   * to its validators): the object handed out, its parsed forms and the
   * generation stay; nothing is written. The file keeps its older time, so
   * after a restart (or once memory let it go) it is revalidated again,
   * which costs one conditional request. Rewriting a version list of up to
   * `limits.metadataDocument` bytes every freshness period per provider to
   * save that would cost far more. Returns false (nothing changed) when the
   * entry held now is not `confirmed` (removed, or replaced meanwhile).
   */
  async touch(key: string, confirmed: RefEntry, fetchedAt: number): Promise<boolean> {
    const entry = await this.get(key);
    if (
      !entry || !sameContent(entry, confirmed) || entry.etag !== confirmed.etag ||
      entry.lastModified !== confirmed.lastModified
    ) return false;
    entry.fetchedAt = fetchedAt;
    return true;
  }

  /** Forgets what memory holds for a key (after an outside change). */
  forget(key: string): void {
    this.#memory.delete(key);
    this.generation++;
  }

  /** Removes an entry from storage and memory. */
  async delete(key: string): Promise<void> {
    this.forget(key);
    await this.storage.delete(this.storageKey(key));
  }

  #remember(key: string, entry: RefEntry | null) {
    this.#memory.set(key, entry, costOf(key, entry));
  }
}

/** Decodes an entry's body to bytes. */
export function entryBytes(e: RefEntry): Uint8Array {
  if (e.encoding === "base64") return Uint8Array.from(atob(e.body), (c) => c.charCodeAt(0));
  return new TextEncoder().encode(e.body);
}

/** Encodes bytes as base64 for a binary entry. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
