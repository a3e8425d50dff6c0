/**
 * An in-memory list of the archives in `packages/`: walked once at start-up,
 * then kept current by the store's hooks (stored, pruned, quarantined, found
 * bad) and by {@link CacheInventory.watch}, which notices what other
 * processes did: every {@link CHANGE_CHECK_MS} it reads the change marker
 * that every commit and removal rewrites (one small file read) and walks
 * `packages/` again when another process changed it; and every
 * {@link FULL_RESCAN_MS} it walks anyway (files removed by hand). Metrics
 * (cache size, archive count) and the status page read it, so neither ever
 * walks the disk per request.
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

/** How often {@link CacheInventory.watch} reads the change marker, in ms. */
export const CHANGE_CHECK_MS = 5_000;
/** How often {@link CacheInventory.watch} walks `packages/` regardless, in ms. */
export const FULL_RESCAN_MS = 600_000;

/** Options of {@link CacheInventory.watch}. */
export interface WatchOptions {
  /** Reads the change marker: its text, and whether this process wrote it last. */
  marker: () => Promise<{ text: string; ours: boolean } | undefined>;
  /** Stops watching. */
  signal: AbortSignal;
  checkMs?: number;
  rescanMs?: number;
  now?: () => number;
  /** Waits; must resolve early when `signal` aborts (the default does). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Told when a rescan fails. */
  onError?: (e: Error) => void;
}

/** Waits `ms`, or less when `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

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
  #items = new Map<string, InventoryItem>();
  #bytes = 0;
  /** Changes made while a rescan walks, replayed onto its result. */
  #pending: Array<() => void> | undefined;
  #marker: string | undefined;

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
    // Built aside and swapped in, so readers never see a half-walked count;
    // hooks that fire meanwhile are applied to both.
    const fresh = new CacheInventory(this.storage);
    const pending: Array<() => void> = [];
    this.#pending = pending;
    try {
      for await (const f of scanPackages(this.storage)) {
        fresh.add(f.provider, f.version, f.platform, f.size);
      }
    } finally {
      this.#pending = undefined;
    }
    for (const change of pending) change.call(fresh);
    this.#items = fresh.#items;
    this.#bytes = fresh.#bytes;
  }

  /**
   * Walks again if another process changed `packages/` since the last call
   * (per the change marker). Returns whether it walked.
   */
  async refreshIfChanged(
    marker: WatchOptions["marker"],
  ): Promise<boolean> {
    const m = await marker();
    const text = m?.text;
    if (text === this.#marker) return false;
    this.#marker = text;
    if (m?.ours) return false;
    await this.scan();
    return true;
  }

  /**
   * Keeps the inventory current with other processes until `opts.signal`
   * aborts (see the module doc for the intervals). Resolves when stopped.
   */
  async watch(opts: WatchOptions): Promise<void> {
    const checkMs = opts.checkMs ?? CHANGE_CHECK_MS;
    const rescanMs = opts.rescanMs ?? FULL_RESCAN_MS;
    const now = opts.now ?? Date.now;
    const sleep = opts.sleep ?? abortableSleep;
    let lastFull = now();
    // The marker as it is now is what the start-up walk already saw.
    this.#marker = (await opts.marker().catch(() => undefined))?.text;
    while (!opts.signal.aborted) {
      await sleep(checkMs, opts.signal);
      if (opts.signal.aborted) break;
      try {
        if (now() - lastFull >= rescanMs) {
          this.#marker = (await opts.marker())?.text;
          await this.scan();
          lastFull = now();
        } else if (await this.refreshIfChanged(opts.marker)) {
          lastFull = now();
        }
      } catch (e) {
        opts.onError?.(e as Error);
      }
    }
  }

  /** Records a stored archive (replacing an earlier record of the same file). */
  add(provider: ProviderRef, version: string, platform: PlatformRef, size: number): void {
    this.#pending?.push(function (this: CacheInventory) {
      this.add(provider, version, platform, size);
    });
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
    this.#pending?.push(function (this: CacheInventory) {
      this.remove(provider, version, platform);
    });
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
