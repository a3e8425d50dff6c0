/**
 * The cache directory as a whole: its layout (`refs/`, `packages/`, `tmp/`)
 * and the stores opened on it. The server and every maintenance command open
 * a cache through {@link openCacheDir}, so they all agree on where things are.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { join } from "../deps/path.ts";
import { DiskStorage } from "./disk_storage.ts";
import { PackageStore } from "./package_store.ts";
import { RefsStore } from "./refs_store.ts";

/** The stores of one cache directory. */
export interface CacheDir {
  storage: DiskStorage;
  refs: RefsStore;
  packages: PackageStore;
}

/** The shared temp directory of a cache (downloads of the server). */
export function defaultTmpDir(cacheDir: string): string {
  return join(cacheDir, "tmp");
}

/**
 * Opens the stores of a cache directory.
 *
 * @param opts.tmpDir where this process writes temp files (default `<cacheDir>/tmp`)
 * @param opts.create create `refs/`, `packages/` and the temp dir when
 *   missing (default true; commands that only read pass false, so a mistyped
 *   path is not turned into an empty cache)
 */
export async function openCacheDir(
  cacheDir: string,
  log: Logger,
  opts: { tmpDir?: string; create?: boolean } = {},
): Promise<CacheDir> {
  const tmpDir = opts.tmpDir ?? defaultTmpDir(cacheDir);
  if (opts.create ?? true) {
    await Deno.mkdir(join(cacheDir, "refs"), { recursive: true });
    await Deno.mkdir(join(cacheDir, "packages"), { recursive: true });
    await Deno.mkdir(tmpDir, { recursive: true });
  }
  const storage = new DiskStorage(cacheDir, tmpDir);
  const refs = new RefsStore(storage);
  const packages = new PackageStore(storage, refs, log);
  return { storage, refs, packages };
}
