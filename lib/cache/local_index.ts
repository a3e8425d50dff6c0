/**
 * What the cache itself can vouch for, without any upstream metadata: the
 * versions and platforms of a provider whose archives are stored with a
 * record. The offline source answers every listing from this (`index.json`,
 * `{version}.json`, and the filtered registry `versions`), so providers that
 * arrived by `repoxy import` without registry documents (from `terraform
 * providers mirror` output, say) are served through the mirror protocol too.
 *
 * Reads the disk every time, so archives imported by another process while the
 * server runs show up at once.
 * @module
 */
import type { PlatformRef, ProviderRef } from "../protocol/names.ts";
import type { ArchiveMeta } from "./archive_meta.ts";
import type { CacheDir } from "./cache_dir.ts";
import { scanProvider } from "./scan.ts";

/** One stored archive of a version. */
export interface LocalArchive {
  platform: PlatformRef;
  filename: string;
  meta: ArchiveMeta;
}

async function validArchives(cache: CacheDir, p: ProviderRef, version?: string) {
  const out: Array<LocalArchive & { version: string }> = [];
  for (const f of await scanProvider(cache.storage, p)) {
    if (version !== undefined && f.version !== version) continue;
    const meta = await cache.packages.readMeta(p, f.version, f.platform);
    // Same rule as serving: a file counts only with a record whose size it has.
    if (!meta || meta.size !== f.size) continue;
    out.push({ version: f.version, platform: f.platform, filename: f.filename, meta });
  }
  return out;
}

/** The stored archives of a provider, by version. */
export async function cachedArchivesByVersion(
  cache: CacheDir,
  p: ProviderRef,
): Promise<Map<string, LocalArchive[]>> {
  const out = new Map<string, LocalArchive[]>();
  for (const { version, ...a } of await validArchives(cache, p)) {
    const list = out.get(version) ?? [];
    list.push(a);
    out.set(version, list);
  }
  return out;
}
