/**
 * The source seam: where the answers about providers come from. Two
 * implementations, one chosen when the app is wired:
 *
 * - {@link ./upstream_source.ts}: the configured upstream registries, with
 *   metadata kept in `refs/` and archives downloaded into the cache (online);
 * - {@link ./cache_source.ts}: the cache alone, never contacting anyone
 *   (`offline: true`).
 *
 * Modelled on Terraform's `getproviders.Source` (one implementation per way of
 * finding providers). Handlers ask it for everything but a cached archive,
 * which `routes/mirror.ts` serves from the package store before asking.
 * @module
 */
import type { CacheStatus } from "../cache/cache_status.ts";
import type { Download } from "../cache/download.ts";
import type { MirrorArchive } from "../protocol/mirror_json.ts";
import type { ModuleRef } from "../protocol/paths.ts";
import type { PlatformRef, ProviderRef } from "../protocol/names.ts";
import type { DownloadValue, SumsValue } from "../protocol/registry_json.ts";

/** A value, where it came from, and how long an answer built from it may be reused. */
export interface Answer<T> {
  value: T;
  status: CacheStatus;
  /**
   * Epoch ms until which a rendered answer may be kept and served again
   * without asking the source (`Infinity`: immutable; `0`: never keep).
   */
  keepUntil: number;
}

/** The versions a client may pick. */
export interface VersionList {
  versions: string[];
}

/** The archives of one version, as `{version}.json` lists them. */
export interface VersionArchives {
  archives: MirrorArchive[];
  /**
   * The same object for as long as the platforms listed stay the same, so a
   * rendering can be kept beside it (the hashes may still change).
   */
  memoKey: object;
}

/** How an archive that is not cached reaches the client. */
export type ArchiveFetch =
  /** Downloaded into the cache; clients read it behind the writer. */
  | { kind: "download"; download: Download }
  /** Streamed from upstream, verified, not cached (the cache cannot be written). */
  | { kind: "bypass"; body: ReadableStream<Uint8Array>; size: number | undefined };

/** A module registry answer to pass on (any status the upstream gave). */
export interface ModuleAnswer {
  status: number;
  /** The final URL it came from (after redirects). */
  url: URL;
  contentType: string;
  /** The `X-Terraform-Get` header, absolute. */
  terraformGet?: string;
  /** The body (empty for 204). */
  body: string;
}

/** Where provider answers come from. */
export interface ProviderSource {
  /** Every version a client may pick (network mirror `index.json`). */
  versionList(p: ProviderRef): Promise<Answer<VersionList>>;
  /** The registry protocol's `versions` document, as it is to be served. */
  versionsDocument(p: ProviderRef): Promise<Answer<string>>;
  /**
   * The archives of one version with their hashes (network mirror `{version}.json`).
   * `signal` aborts when the caller stops waiting; work nobody waits for may stop.
   */
  versionArchives(
    p: ProviderRef,
    version: string,
    signal?: AbortSignal,
  ): Promise<Answer<VersionArchives>>;
  /**
   * One platform's registry `download` document (before Repoxy rewrites its
   * URLs). `signal` aborts when the caller stops waiting (a search for
   * SHA256SUMS, which decides about an unlisted platform, stops).
   */
  downloadDocument(
    p: ProviderRef,
    version: string,
    pl: PlatformRef,
    signal?: AbortSignal,
  ): Promise<Answer<DownloadValue>>;
  /**
   * SHA256SUMS and its signature, byte for byte. `signal` aborts when the
   * caller stops waiting (the search for a download document naming it stops).
   */
  checksums(p: ProviderRef, version: string, signal?: AbortSignal): Promise<Answer<SumsValue>>;
  /** Gets an archive the cache does not hold (verified before a client gets its last byte). */
  fetchArchive(p: ProviderRef, version: string, pl: PlatformRef): Promise<ArchiveFetch>;
  /**
   * A module registry answer (`versions`, or `{version}/download`);
   * `signal` aborts the upstream request when the caller stops waiting.
   */
  moduleAnswer(m: ModuleRef, suffix: string, signal?: AbortSignal): Promise<ModuleAnswer>;
  /**
   * The registry's answer to the legacy-namespace lookup
   * `{providers.v1}-/{type}/versions`, any status, body bounded by
   * `limits.metadataDocument`; passed through, never cached.
   */
  legacyLookup(hostname: string, type: string, signal?: AbortSignal): Promise<ModuleAnswer>;
  /** Waits for background work it started (read-aheads), if any. */
  settle?(): Promise<void>;
}
