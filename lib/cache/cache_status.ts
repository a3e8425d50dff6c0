/**
 * Where an answer came from: the provenance every metadata value carries to
 * the access log, the metrics and the `x-repoxy-cache` header.
 * @module
 */

/**
 * Where an answer came from: `hit` (cache, fresh), `revalidated` (cache, its
 * freshness had run out and the upstream just confirmed it unchanged),
 * `miss` (fetched from the upstream), `stale` (cache, the upstream failed or
 * was slow to confirm it).
 */
export type CacheStatus = "hit" | "revalidated" | "miss" | "stale";

/** A value with its provenance. */
export interface Sourced<T> {
  value: T;
  status: CacheStatus;
  /** Epoch ms when the value was fetched from its upstream. */
  fetchedAt: number;
}

/**
 * Combines cache statuses: any stale part makes the answer stale, any miss a
 * miss, any revalidated part a revalidation.
 */
export function worstStatus(...s: Array<CacheStatus | undefined>): CacheStatus {
  if (s.includes("stale")) return "stale";
  if (s.includes("miss")) return "miss";
  if (s.includes("revalidated")) return "revalidated";
  return "hit";
}
