/**
 * What the cache itself can vouch for, without any upstream metadata: the
 * versions and platforms of a provider whose archives are stored with a meta
 * record. An offline mirror answers `index.json` and `{version}.json` from this
 * for providers that arrived by `repoxy import` (which brings no registry
 * documents) and for versions newer than the last cached upstream list.
 *
 * Reads the disk every time, so archives imported by another process while the
 * server runs show up at once.
 * @module
 */
import { compareVersions, type PlatformRef, type ProviderRef } from "../protocol/names.ts";
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

/** Versions of a provider with at least one stored archive, newest first. */
export async function listCachedVersions(cache: CacheDir, p: ProviderRef): Promise<string[]> {
  const versions = new Set((await validArchives(cache, p)).map((a) => a.version));
  return [...versions].sort((a, b) => compareVersions(b, a));
}

/** The stored archives of one version, with their meta records. */
export async function listCachedPlatforms(
  cache: CacheDir,
  p: ProviderRef,
  version: string,
): Promise<LocalArchive[]> {
  return (await validArchives(cache, p, version)).map(({ platform, filename, meta }) => ({
    platform,
    filename,
    meta,
  }));
}
