/**
 * `repoxy prune`: evicts least-recently-used archives until the cache fits a
 * size (see cache/quota.ts for how recency and "being served" are tracked).
 * @module
 */
import {
  type Command,
  COMMON_HELP,
  defineCommand,
  EXIT_FAILED,
  EXIT_OK,
  EXIT_USAGE,
  flagBool,
  flagString,
} from "./cli.ts";
import { platformString, providerString } from "../protocol/names.ts";
import { createLogger } from "../base/log.ts";
import { openCacheDir } from "../cache/cache_dir.ts";
import { pruneCache } from "../cache/quota.ts";
import { formatSize, parseSize } from "../base/size.ts";

const HELP = `Usage: repoxy prune [options]

Evicts the least recently used provider and module archives until the archives in the
cache take at most the given size. Archives being downloaded or served right
now are never evicted (they are skipped). Safe to run next to a live server,
which itself prunes after each new archive when "maxCacheSize" is set.

Options:
      --max-size SIZE   e.g. 50GB, 500MB, 2GiB or a number of bytes
                        (default: "maxCacheSize" of the config)
      --dry-run         only list what would be evicted
${COMMON_HELP}

Sizes: KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024.
Exit codes: 0 the cache fits, 1 it still does not (busy archives, named),
2 bad arguments or config.`;

/** `repoxy prune`. */
export const pruneCommand: Command = defineCommand({
  name: "prune",
  summary: "evict least-recently-used archives down to a size",
  help: HELP,
  options: {
    "max-size": { type: "string" },
    "dry-run": { type: "boolean" },
  },
  positionals: { max: 0 },
  async run({ args: parsed, config, io }) {
    const flag = flagString(parsed, "max-size");
    const maxBytes = flag === undefined ? config.maxCacheSizeBytes : parseSize(flag);
    if (maxBytes === undefined) {
      io.err(
        flag === undefined
          ? `repoxy prune: give --max-size or set "maxCacheSize" in the config`
          : `repoxy prune: --max-size must be a size such as 50GB, 500MB or a number of bytes, got "${flag}"`,
      );
      return EXIT_USAGE;
    }
    const dryRun = flagBool(parsed, "dry-run");
    await using cache = await openCacheDir(
      config.cacheDir,
      createLogger("text", undefined, "warn"),
      {
        create: false,
      },
    );
    const r = await pruneCache(cache, { maxBytes, dryRun });
    const verb = dryRun ? "would evict" : "evicted";
    for (const f of r.evicted) {
      io.out(
        `${verb} ${providerString(f.provider)} ${f.version} ${platformString(f.platform)} (${
          formatSize(f.size)
        })`,
      );
    }
    for (const f of r.evictedModules) io.out(`${verb} module ${f.key} (${formatSize(f.size)})`);
    for (const f of [...r.busy, ...r.busyModules]) {
      io.err(`repoxy prune: skipped ${cache.storage.pathOf(f.key)}: in use`);
    }
    io.out(
      `prune: ${verb} ${r.evicted.length + r.evictedModules.length} of ${r.files} archive(s), ` +
        `${formatSize(r.sizeBefore - r.sizeAfter)} freed; ${formatSize(r.sizeAfter)} ` +
        `${dryRun ? "would remain" : "remain"} (limit ${formatSize(maxBytes)})` +
        (r.busy.length + r.busyModules.length
          ? `; ${r.busy.length + r.busyModules.length} in use skipped`
          : ""),
    );
    if (r.sizeAfter > maxBytes) {
      io.err(`repoxy prune: the cache is still over ${formatSize(maxBytes)}`);
      return EXIT_FAILED;
    }
    return EXIT_OK;
  },
});
