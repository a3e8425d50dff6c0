/**
 * The `refs/` half of the cache: metadata fetched from upstreams (discovery,
 * version lists, download documents, SHA256SUMS and signatures, archive
 * records), each stored as a small JSON envelope with the time it was fetched.
 *
 * This module owns the key scheme ({@link refKeys}); keys are built only from
 * validated names. A bounded in-memory map keeps hot entries so a metadata
 * hit touches no storage.
 * @module
 */
import {
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
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
}

const MAX_MEMORY_ENTRIES = 20_000;

/** Reads and writes metadata envelopes under `refs/` of a {@link Storage}. */
export class RefsStore {
  readonly #memory = new Map<string, RefEntry | null>();
  /**
   * Bumped by every write or forget, so answers derived from entries (see
   * http/response_cache.ts) can tell in O(1) that something they read may be stale.
   */
  generation = 0;

  constructor(readonly storage: Storage) {}

  /** The storage key of a refs key. */
  storageKey(key: string): string {
    return `refs/${key}.json`;
  }

  /** Returns the entry, or undefined when none is stored (or it is unreadable). */
  async get(key: string): Promise<RefEntry | undefined> {
    if (this.#memory.has(key)) {
      const hit = this.#memory.get(key);
      // Refresh recency: Map iteration order is insertion order.
      this.#memory.delete(key);
      this.#memory.set(key, hit ?? null);
      return hit ?? undefined;
    }
    const entry = await this.read(key);
    this.#remember(key, entry ?? null);
    return entry;
  }

  /**
   * Reads an entry from storage, bypassing (and not filling) memory: what
   * another process, such as a maintenance command, may have written.
   */
  async read(key: string): Promise<RefEntry | undefined> {
    const bytes = await this.storage.get(this.storageKey(key));
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

  /** Stores an entry atomically (and in memory). */
  async put(key: string, entry: RefEntry): Promise<void> {
    // Remembered even if the write fails: a broken disk should cost durability,
    // not the ability to answer.
    this.#remember(key, entry);
    this.generation++;
    await this.storage.put(this.storageKey(key), JSON.stringify(entry));
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
    this.#memory.delete(key);
    this.#memory.set(key, entry);
    if (this.#memory.size > MAX_MEMORY_ENTRIES) {
      const oldest = this.#memory.keys().next().value;
      if (oldest !== undefined) this.#memory.delete(oldest);
    }
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
