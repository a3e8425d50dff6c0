/**
 * The packed mirror layout that `terraform providers mirror` writes and
 * `filesystem_mirror` reads: `{hostname}/{namespace}/{type}/terraform-provider-{type}_{version}_{os}_{arch}.zip`.
 * Repoxy's `packages/`, `repoxy export` output and `repoxy import` input all
 * use it; this is the one place that spells it.
 * @module
 */
import {
  archiveFilename,
  isValidHostname,
  isValidPart,
  parseArchiveFilename,
  type PlatformRef,
  type ProviderRef,
} from "./names.ts";

/** One archive located in the packed layout. */
export interface PackedArchive {
  provider: ProviderRef;
  version: string;
  platform: PlatformRef;
  filename: string;
}

/** `host/ns/type`: the directory of a provider, relative to the layout's root. */
export function providerDir(p: ProviderRef): string {
  return `${p.hostname}/${p.namespace}/${p.type}`;
}

/** `host/ns/type/terraform-provider-…zip`: an archive, relative to the layout's root. */
export function packedArchivePath(p: ProviderRef, version: string, pl: PlatformRef): string {
  return `${providerDir(p)}/${archiveFilename(p.type, version, pl)}`;
}

/**
 * Parses a path relative to the layout's root (`/`-separated). Undefined for
 * anything that is not a valid archive path, as the client would ignore it.
 */
export function parsePackedPath(rel: string): PackedArchive | undefined {
  const parts = rel.split("/");
  if (parts.length !== 4) return undefined;
  const [hostname, namespace, type, filename] = parts as [string, string, string, string];
  if (!isValidHostname(hostname) || !isValidPart(namespace) || !isValidPart(type)) {
    return undefined;
  }
  const a = parseArchiveFilename(type, filename);
  if (!a) return undefined;
  return {
    provider: { hostname, namespace, type },
    version: a.version,
    platform: { os: a.os, arch: a.arch },
    filename,
  };
}
