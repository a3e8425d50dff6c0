/**
 * Opening the cache a maintenance command works on, with the shared bucket
 * behind the local directory when the config says `storage.kind: "s3"`: the
 * same tier the server runs on (lib/storage_s3/mod.ts), loaded only then, so
 * `export`, `import`, `verify` and `prune` see what the fleet holds and not
 * only this host's disk.
 * @module
 */
import type { Logger } from "../base/log.ts";
import { type CacheDir, openCacheDir } from "../cache/cache_dir.ts";
import type { Storage } from "../cache/storage.ts";
import type { StorageConfig } from "../config/storage_config.ts";
import type { BucketTier } from "../storage_s3/mod.ts";

/** A cache opened by a command: the local directory, and the bucket tier when there is one. */
export interface CommandCache extends AsyncDisposable {
  cache: CacheDir;
  /** The bucket of `storage.kind: "s3"`, undefined on the local disk alone. */
  tier: BucketTier | undefined;
  /** What the stores read and write: the tiered storage, or the local disk. */
  shared: Storage;
}

/**
 * Opens `cacheDir` (created when `create`), with the bucket of `storage`
 * behind it. Disposing waits for the tier's background work (local fills,
 * access marks) and closes the cache.
 */
export async function openCommandCache(
  cacheDir: string,
  storage: StorageConfig,
  log: Logger,
  opts: { create?: boolean } = {},
): Promise<CommandCache> {
  const tier = storage
    ? (await import("../storage_s3/mod.ts")).openBucketTier(storage, { log })
    : undefined;
  let shared: Storage | undefined;
  const cache = await openCacheDir(cacheDir, log, {
    create: opts.create ?? false,
    ...(tier ? { tier: (local) => shared = tier.wrap(local) } : {}),
  });
  const close = async () => {
    try {
      await tier?.settle();
    } finally {
      await cache.close();
    }
  };
  return {
    cache,
    tier,
    shared: shared ?? cache.storage,
    [Symbol.asyncDispose]: close,
  };
}
