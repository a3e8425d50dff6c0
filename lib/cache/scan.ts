/**
 * Reading the cache directory from outside the serving path: walking
 * `packages/`, and reading or dropping archive meta records in `refs/` straight
 * from disk. The maintenance commands run in their own process next to a live
 * server, so they never trust an in-memory copy.
 * @module
 */
import { join } from "../deps/path.ts";
import { refKeys } from "./refs_store.ts";
import {
  isValidHostname,
  isValidPart,
  parseArchiveFilename,
  type PlatformRef,
  type ProviderRef,
} from "../protocol/names.ts";
import { type ArchiveMeta, parseArchiveMeta } from "./archive_meta.ts";

/** One archive file found under `packages/`. */
export interface CachedFile {
  provider: ProviderRef;
  version: string;
  platform: PlatformRef;
  filename: string;
  path: string;
  size: number;
  atime: Date | null;
  mtime: Date | null;
}

/** Sorted names of the files or directories in `path` (empty when it does not exist). */
export async function dirNames(path: string, want: "file" | "dir"): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(path)) {
      if (want === "dir" ? e.isDirectory : e.isFile) out.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

/**
 * Lists the archive files of one provider directory (`packages/host/ns/type`).
 * Names that are not `terraform-provider-{type}_{version}_{os}_{arch}.zip` are
 * ignored.
 */
export async function scanProviderDir(cacheDir: string, p: ProviderRef): Promise<CachedFile[]> {
  const dir = join(cacheDir, "packages", p.hostname, p.namespace, p.type);
  const out: CachedFile[] = [];
  for (const filename of await dirNames(dir, "file")) {
    const parsed = parseArchiveFilename(p.type, filename);
    if (!parsed) continue;
    const path = join(dir, filename);
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // evicted meanwhile
      throw e;
    }
    out.push({
      provider: p,
      version: parsed.version,
      platform: { os: parsed.os, arch: parsed.arch },
      filename,
      path,
      size: st.size,
      atime: st.atime,
      mtime: st.mtime,
    });
  }
  return out;
}

/** Walks every archive under `<cacheDir>/packages/`, provider by provider. */
export async function* scanPackages(cacheDir: string): AsyncGenerator<CachedFile> {
  const root = join(cacheDir, "packages");
  for (const hostname of await dirNames(root, "dir")) {
    if (!isValidHostname(hostname)) continue;
    for (const namespace of await dirNames(join(root, hostname), "dir")) {
      if (!isValidPart(namespace)) continue;
      for (const type of await dirNames(join(root, hostname, namespace), "dir")) {
        if (!isValidPart(type)) continue;
        yield* await scanProviderDir(cacheDir, { hostname, namespace, type });
      }
    }
  }
}

/** Path of an archive's meta record in `refs/`. */
export function metaPath(cacheDir: string, p: ProviderRef, v: string, pl: PlatformRef): string {
  return join(cacheDir, "refs", refKeys.archive(p, v, pl) + ".json");
}

/** Reads an archive's meta record from disk; undefined when absent or unreadable. */
export async function readArchiveMeta(
  cacheDir: string,
  p: ProviderRef,
  v: string,
  pl: PlatformRef,
): Promise<ArchiveMeta | undefined> {
  try {
    const envelope = JSON.parse(await Deno.readTextFile(metaPath(cacheDir, p, v, pl)));
    if (typeof envelope?.body === "string") return parseArchiveMeta(envelope.body);
  } catch { /* absent or unreadable: not cached */ }
  return undefined;
}

/**
 * Deletes an archive's meta record, but only while it still describes the
 * same download (`sha256` and `cachedAt`): a server that re-fetched the
 * archive in the meantime keeps its fresh record.
 */
export async function dropArchiveMeta(
  cacheDir: string,
  f: Pick<CachedFile, "provider" | "version" | "platform">,
  seen: ArchiveMeta,
): Promise<void> {
  const now = await readArchiveMeta(cacheDir, f.provider, f.version, f.platform);
  if (!now || now.sha256 !== seen.sha256 || now.cachedAt !== seen.cachedAt) return;
  await Deno.remove(metaPath(cacheDir, f.provider, f.version, f.platform)).catch(() => {});
}

/**
 * Puts an archive's access time back after a maintenance read (verify,
 * export), which the kernel may have counted as an access (relatime); the
 * access time is what `prune` evicts by.
 */
export async function restoreAccessTime(f: CachedFile): Promise<void> {
  if (!f.atime || !f.mtime) return;
  await Deno.utime(f.path, f.atime, f.mtime).catch(() => {});
}
