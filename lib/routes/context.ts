/**
 * What every handler gets: the per-request context, the app's services, and
 * the shape of a handler.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { CacheStatus } from "../cache/cache_status.ts";
import type { CacheInventory } from "../cache/inventory.ts";
import type { PackageStore } from "../cache/package_store.ts";
import type { RefsStore } from "../cache/refs_store.ts";
import type { Config } from "../config/config.ts";
import type { RequestInfo } from "../http/middleware.ts";
import type { ResponseCache } from "../http/response_cache.ts";
import type { Telemetry } from "../ops/telemetry.ts";
import type { Route } from "../protocol/paths.ts";
import type { ProviderSource } from "../sources/source.ts";

/** Per-request facts: the generic ones, plus what Repoxy's handlers record. */
export interface RequestContext extends RequestInfo {
  route: Route["kind"] | "none";
  cache: CacheStatus | undefined;
  /** Refs generation when the request began (see http/response_cache.ts). */
  generation: number;
  /** `performance.now()` at which the answer's deadline passes (set by dispatch; none for streams). */
  deadlineAt?: number;
}

/** The app's parts that handlers use; each handler takes the ones it needs. */
export interface Services {
  config: Config;
  log: Logger;
  /** Where provider answers come from: the upstreams, or (offline) the cache alone. */
  source: ProviderSource;
  packages: PackageStore;
  refs: RefsStore;
  /** Finished metadata answers kept for reuse. */
  answers: ResponseCache;
  telemetry: Telemetry;
  inventory: CacheInventory;
  /** Archive downloads in progress. */
  inflightDownloads: () => number;
  now: () => number;
  version: string;
}

/** A handler of one route kind. */
export type RouteHandler<K extends Route["kind"]> = (
  req: Request,
  ctx: RequestContext,
  route: Extract<Route, { kind: K }>,
  services: Services,
) => Promise<Response> | Response;
