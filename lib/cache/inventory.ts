/**
 * An in-memory list of the archives in `packages/`: walked once at start-up,
 * then kept current by the store's hooks. Metrics (cache size, archive count)
 * and the status page read it, so neither ever walks the disk per request.
 * @module
 */
import {
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import { scanPackages } from "./scan.ts";
import type { Storage } from "./storage.ts";

/** One archive in the cache. */
export interface InventoryItem {
  provider: ProviderRef;
  version: string;
  platform: PlatformRef;
  size: number;
}

/** Cached versions of one provider, newest first as given by the caller's sort. */
export interface InventoryProvider {
  provider: ProviderRef;
  bytes: number;
  versions: Array<{ version: string; platforms: Array<{ platform: PlatformRef; size: number }> }>;
}

function keyOf(p: ProviderRef, version: string, pl: PlatformRef): string {
  return `${providerString(p)}/${version}/${platformString(pl)}`;
}

/** Archives known to be in `packages/`, with their sizes. */
export class CacheInventory {
  readonly #items = new Map<string, InventoryItem>();
  #bytes = 0;

  /** @param storage where the archives are */
  constructor(readonly storage: Storage) {}

  /** Total size of the known archives, in bytes. */
  get totalBytes(): number {
    return this.#bytes;
  }

  /** Number of known archives. */
  get count(): number {
    return this.#items.size;
  }

  /**
   * Walks `packages/` and replaces what is known. Objects that do not follow
   * the layout are ignored, as the client would ignore them.
   */
  async scan(): Promise<void> {
    this.#items.clear();
    this.#bytes = 0;
    for await (const f of scanPackages(this.storage)) {
      this.add(f.provider, f.version, f.platform, f.size);
    }
  }

  /** Records a stored archive (replacing an earlier record of the same file). */
  add(provider: ProviderRef, version: string, platform: PlatformRef, size: number): void {
    const k = keyOf(provider, version, platform);
    const old = this.#items.get(k);
    if (old) this.#bytes -= old.size;
    this.#items.set(k, {
      provider: { ...provider },
      version,
      platform: { os: platform.os, arch: platform.arch },
      size,
    });
    this.#bytes += size;
  }

  /** Forgets an archive (after it was pruned or quarantined). */
  remove(provider: ProviderRef, version: string, platform: PlatformRef): void {
    const k = keyOf(provider, version, platform);
    const old = this.#items.get(k);
    if (!old) return;
    this.#bytes -= old.size;
    this.#items.delete(k);
  }

  /** Every known archive. */
  items(): InventoryItem[] {
    return [...this.#items.values()];
  }

  /**
   * Archives grouped by provider and version, providers sorted by address and
   * versions by `compareVersions` (newest first), platforms by name.
   */
  byProvider(compareVersions: (a: string, b: string) => number): InventoryProvider[] {
    const groups = new Map<string, InventoryProvider>();
    for (const it of this.#items.values()) {
      const pk = providerString(it.provider);
      let g = groups.get(pk);
      if (!g) {
        g = { provider: it.provider, bytes: 0, versions: [] };
        groups.set(pk, g);
      }
      g.bytes += it.size;
      let v = g.versions.find((x) => x.version === it.version);
      if (!v) {
        v = { version: it.version, platforms: [] };
        g.versions.push(v);
      }
      v.platforms.push({ platform: it.platform, size: it.size });
    }
    const out = [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map((
      [, g],
    ) => g);
    for (const g of out) {
      g.versions.sort((a, b) => compareVersions(b.version, a.version));
      for (const v of g.versions) {
        v.platforms.sort((a, b) => {
          const x = platformString(a.platform);
          const y = platformString(b.platform);
          return x < y ? -1 : x > y ? 1 : 0;
        });
      }
    }
    return out;
  }
}
