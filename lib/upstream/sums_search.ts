/**
 * The search for a version's signed SHA256SUMS, which is found through any
 * download document of the version that exists: the platforms the version
 * lists first (a bounded number of them), then the client's own, then common
 * ones. A hostile version list must not cost an unbounded number of requests.
 * @module
 */
import type { Config } from "../config/config.ts";
import { NotFoundError, UpstreamError } from "../http/errors.ts";
import type { NegativeCache } from "../cache/negative_cache.ts";
import type { Sourced } from "../cache/cache_status.ts";
import { refKeys } from "../cache/refs_store.ts";
import {
  type PlatformRef,
  platformString,
  type ProviderRef,
  providerString,
} from "../protocol/names.ts";
import type { DownloadValue, VersionEntry } from "../protocol/registry_json.ts";
import { givenUp, type Slots } from "./slots.ts";

/**
 * How many of the platforms a version lists are tried to find a download
 * document (and through it SHA256SUMS): a hostile list of thousands that all
 * answer 404 must not cost thousands of requests.
 */
const MAX_LISTED_PROBES = 32;

/**
 * Platforms tried after the listed ones, most used first: a version that
 * lists none (or only wrong ones) still has its SHA256SUMS found through
 * one of these.
 */
export const COMMON_PLATFORMS: readonly PlatformRef[] = [
  "linux_amd64",
  "darwin_arm64",
  "windows_amd64",
  "linux_arm64",
  "darwin_amd64",
  "linux_386",
  "linux_arm",
  "windows_386",
  "freebsd_amd64",
].map((s) => {
  const [os, arch] = s.split("_") as [string, string];
  return { os, arch };
});

/** What the search asks of the upstream metadata (`Metadata` in `metadata.ts` is one). */
export interface SumsSearchSource {
  readonly config: Config;
  readonly platformSlots: Slots;
  versionEntry(p: ProviderRef, version: string): Promise<Sourced<VersionEntry>>;
  download(p: ProviderRef, version: string, pl: PlatformRef): Promise<Sourced<DownloadValue>>;
}

/**
 * The first download document of a version that exists: the platforms
 * the version lists, in order (at most {@link MAX_LISTED_PROBES}), then
 * `also`, then {@link COMMON_PLATFORMS} — SHA256SUMS would say which exist, but it is
 * found through a document. One at a time at first (the honest case
 * costs one request), then up to `limits.platformConcurrency`; a 404 is
 * remembered like any other, so asking again costs nothing.
 */
export async function sumsDocument(
  m: SumsSearchSource,
  negative: NegativeCache,
  p: ProviderRef,
  version: string,
  signal?: AbortSignal,
  also?: PlatformRef,
): Promise<Sourced<DownloadValue>> {
  const entry = await m.versionEntry(p, version);
  const seen = new Set<string>();
  const candidates: PlatformRef[] = [];
  for (
    const pl of [
      ...(entry.value.platforms ?? []).slice(0, MAX_LISTED_PROBES),
      ...(also ? [also] : []),
      ...COMMON_PLATFORMS,
    ]
  ) {
    const name = platformString(pl);
    if (seen.has(name)) continue;
    seen.add(name);
    candidates.push(pl);
  }
  // Known 404s are skipped without a request.
  const todo = candidates.filter((pl) => !negative.has(refKeys.download(p, version, pl)));
  const width = Math.max(1, m.config.limits.platformConcurrency);
  // Batches of 1, 1, 2, 4 … up to the width: a list with one wrong
  // platform costs one extra request, a hostile one is still searched
  // `width` at a time.
  let at = 0;
  for (let round = 0; at < todo.length; round++) {
    if (signal?.aborted) throw givenUp();
    const size = Math.min(width, round === 0 ? 1 : 2 ** (round - 1));
    const batch = todo.slice(at, at + size);
    at += batch.length;
    // Past the first document the search is upstream work like a fan-out's.
    const counted = round > 0;
    const got = await Promise.all(batch.map(async (pl) => {
      if (counted) await m.platformSlots.take(signal);
      try {
        return await m.download(p, version, pl);
      } catch (e) {
        if (e instanceof NotFoundError) return undefined;
        throw e;
      } finally {
        if (counted) m.platformSlots.give();
      }
    }));
    const first = got.find((d) => d !== undefined);
    if (first) return first;
  }
  throw new UpstreamError(
    `upstream ${p.hostname} has no download document for ${providerString(p)} ${version} ` +
      `(tried ${candidates.map(platformString).join(", ")}), so its SHA256SUMS cannot be found`,
  );
}
