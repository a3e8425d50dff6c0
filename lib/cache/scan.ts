/**
 * Walking the archives in `packages/` from outside the serving path: the
 * inventory at start-up, the offline listings, and the maintenance commands
 * (which run in their own process next to a live server, so they never trust
 * an in-memory copy). Objects whose key is not a valid packed-layout path are
 * skipped, as the client would skip them.
 * @module
 */
import type { ProviderRef } from "../protocol/names.ts";
import { type PackedArchive, parsePackedPath, providerDir } from "../protocol/packed_layout.ts";
import { PACKAGES_PREFIX } from "./package_store.ts";
import type { ObjectInfo, Storage } from "./storage.ts";

/** One archive found under `packages/`: where it is in the layout and its object facts. */
export interface CachedFile extends PackedArchive, ObjectInfo {}

/** Walks every archive under `packages/`, in key order. */
export async function* scanPackages(
  storage: Storage,
  under: string = PACKAGES_PREFIX,
): AsyncGenerator<CachedFile> {
  for await (const info of storage.list(under)) {
    const parsed = parsePackedPath(info.key.slice(PACKAGES_PREFIX.length));
    if (parsed) yield { ...parsed, ...info };
  }
}

/** The archives of one provider (`packages/host/ns/type/`). */
export async function scanProvider(storage: Storage, p: ProviderRef): Promise<CachedFile[]> {
  const out: CachedFile[] = [];
  for await (const f of scanPackages(storage, `${PACKAGES_PREFIX}${providerDir(p)}/`)) out.push(f);
  return out;
}
