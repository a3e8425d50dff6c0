/**
 * The cache size quota: least-recently-used eviction of archives on the local
 * disk.
 *
 * Recency is the archive file's access time. The server sets it explicitly
 * when it serves a cached archive (see `markServing` in disk_storage.ts), at
 * most once an hour per file, so it works on `noatime` mounts, costs nothing
 * on most hits, survives restarts and is visible to `repoxy prune` in another
 * process. The modification time is left alone: it is the archive's
 * Last-Modified.
 *
 * "Being served" is an advisory shared lock (`flock`) on the open file, held by
 * whoever streams it (released when the body ends or is cancelled, because
 * that closes the handle). Prune takes an exclusive lock without waiting and
 * skips files it cannot lock. Files being written live in the temp area and
 * enter `packages/` by rename, so prune never sees them half-written.
 *
 * Temp space counts inside the quota: the server's {@link QuotaKeeper} prunes
 * archives down to `maxCacheSize` minus what the downloads in flight reserve
 * (their declared size, or what they wrote so far), and a download that
 * cannot fit beside the others is passed through uncached (see download.ts).
 *
 * Module archives (`modules/…/{version}.tar.gz`, laid out by
 * modules/module_store.ts) count and are evicted the same way, by the same
 * recency; a module version loses its record before its archive, so it is
 * fetched anew when next asked for, never served half.
 * @module
 */
import { formatSize } from "../base/size.ts";
import type { Logger } from "../base/log.ts";
import type { CacheDir } from "./cache_dir.ts";
import { type CachedFile, scanPackages } from "./scan.ts";
import type { ObjectInfo } from "./storage.ts";

/** Where module archives live (modules/module_store.ts owns the layout). */
const MODULE_ARCHIVES = "modules/";
const MODULE_ARCHIVE_EXT = ".tar.gz";

/** Options of {@link pruneCache}. */
export interface PruneOptions {
  /** Evict until the archives take at most this many bytes. */
  maxBytes: number;
  /** Only report what would be evicted. */
  dryRun?: boolean;
  /** Storage keys never to evict in this run (archives just stored). */
  protect?: ReadonlySet<string>;
}

/** What a prune did. */
export interface PruneResult {
  /** Bytes of archives before and after. */
  sizeBefore: number;
  sizeAfter: number;
  files: number;
  evicted: CachedFile[];
  /** Candidates skipped because someone is reading them. */
  busy: CachedFile[];
  /** Module archives evicted (their storage keys), and those skipped as in use. */
  evictedModules: ObjectInfo[];
  busyModules: ObjectInfo[];
}

function lastUse(f: ObjectInfo): number {
  return (f.atime ?? f.mtime)?.getTime() ?? 0;
}

/**
 * Evicts least-recently-used archives until the cache is within `maxBytes`.
 * Each eviction removes the file (only if it can be locked exclusively and is
 * still the file that was scanned) and then its meta record.
 */
export async function pruneCache(cache: CacheDir, opts: PruneOptions): Promise<PruneResult> {
  const files: Array<ObjectInfo & { module?: true }> = [];
  for await (const f of scanPackages(cache.storage)) files.push(f);
  for await (const info of cache.storage.list(MODULE_ARCHIVES)) {
    if (info.key.endsWith(MODULE_ARCHIVE_EXT)) files.push({ ...info, module: true });
  }
  const sizeBefore = files.reduce((n, f) => n + f.size, 0);
  const result: PruneResult = {
    sizeBefore,
    sizeAfter: sizeBefore,
    files: files.length,
    evicted: [],
    busy: [],
    evictedModules: [],
    busyModules: [],
  };
  if (sizeBefore <= opts.maxBytes) return result;
  const candidates = [...files].sort((a, b) => lastUse(a) - lastUse(b) || (a.key < b.key ? -1 : 1));
  let size = sizeBefore;
  for (const f of candidates) {
    if (size <= opts.maxBytes) break;
    if (opts.protect?.has(f.key)) continue;
    if (opts.dryRun) {
      if (f.module) result.evictedModules.push(f);
      else result.evicted.push(f as CachedFile);
      size -= f.size;
      continue;
    }
    const outcome = f.module ? await evictModule(cache, f) : await evict(cache, f as CachedFile);
    if (outcome === "busy") {
      if (f.module) result.busyModules.push(f);
      else result.busy.push(f as CachedFile);
    } else {
      if (outcome === "evicted") {
        if (f.module) result.evictedModules.push(f);
        else result.evicted.push(f as CachedFile);
      }
      size -= f.size;
    }
  }
  result.sizeAfter = size;
  return result;
}

/**
 * Runs `remove` on the file at `path` while holding its exclusive lock, if
 * nobody serves it and it is still the copy that was chosen (a download may
 * have committed a new one since the scan: that one is fresh).
 */
async function evictLocked(
  path: string,
  remove: () => Promise<"evicted" | "gone" | "busy">,
): Promise<"evicted" | "gone" | "busy"> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "gone";
    throw e;
  }
  try {
    if (!(await file.tryLock(true))) return "busy";
    const [held, current] = await Promise.all([file.stat(), Deno.stat(path)]);
    if (held.ino !== current.ino || held.dev !== current.dev) return "busy";
    return await remove();
  } finally {
    file.close();
  }
}

function evict(cache: CacheDir, f: CachedFile): Promise<"evicted" | "gone" | "busy"> {
  const path = cache.storage.pathOf(f.key);
  return evictLocked(path, async () => {
    const meta = await cache.packages.readMeta(f.provider, f.version, f.platform);
    try {
      await Deno.remove(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return "gone";
      return "busy"; // e.g. Windows refuses to delete an open file
    }
    // File first, record second: a reader in between sees "not cached" and
    // fetches again, never a record without its file being served.
    if (meta) await cache.packages.dropMeta(f.provider, f.version, f.platform, meta);
    return "evicted";
  });
}

/** Evicts a module archive: its record first (never served half), then the file. */
function evictModule(cache: CacheDir, f: ObjectInfo): Promise<"evicted" | "gone" | "busy"> {
  const path = cache.storage.pathOf(f.key);
  return evictLocked(path, async () => {
    await cache.storage.delete(f.key.slice(0, -MODULE_ARCHIVE_EXT.length) + ".json");
    await Deno.remove(path).catch(() => {});
    return "evicted";
  });
}

/**
 * Keeps a running server within `maxCacheSize`: after each stored archive,
 * and whenever downloads reserve temp space, it prunes, one run at a time
 * (requests during a run trigger one more run).
 */
export class QuotaKeeper {
  #running: Promise<void> | undefined;
  #again = false;
  readonly #protect = new Set<string>();

  /**
   * @param reserved temp space the downloads in flight hold or will hold;
   *   archives are pruned to `maxBytes` minus this
   */
  constructor(
    readonly cache: CacheDir,
    readonly maxBytes: number,
    readonly log: Logger,
    readonly reserved: () => number = () => 0,
  ) {}

  /** Called when an archive has been stored under `key`; that one is never evicted for it. */
  afterStore(key: string): void {
    this.#protect.add(key);
    this.makeRoom();
  }

  /** Prunes for the temp space downloads reserve now. */
  makeRoom(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#loop().finally(() => this.#running = undefined);
  }

  async #loop() {
    do {
      this.#again = false;
      const protect = new Set(this.#protect);
      this.#protect.clear();
      const target = Math.max(0, this.maxBytes - this.reserved());
      try {
        const r = await pruneCache(this.cache, { maxBytes: target, protect });
        if (r.evicted.length > 0 || r.sizeAfter > target) {
          this.log.info("cache pruned", {
            evicted: r.evicted.length,
            freed: r.sizeBefore - r.sizeAfter,
            size: r.sizeAfter,
            maxCacheSize: this.maxBytes,
            reservedByDownloads: this.maxBytes - target,
            busy: r.busy.length,
          });
        }
        if (r.sizeAfter > this.maxBytes) {
          this.log.warn("cache is still over maxCacheSize", {
            size: formatSize(r.sizeAfter),
            maxCacheSize: formatSize(this.maxBytes),
          });
        }
      } catch (e) {
        this.log.error("pruning the cache failed", { error: (e as Error).message });
      }
    } while (this.#again);
  }

  /** Resolves when no prune is running. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }
}
