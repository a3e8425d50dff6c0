/**
 * What every handler gets: the per-request context, the app's services, and
 * the shape of a handler.
 * @module
 */
import type { AccessControl } from "../auth/access.ts";
import type { Logger } from "../base/log.ts";
import type { CacheStatus } from "../cache/cache_status.ts";
import type { DiskHealth } from "../cache/disk_health.ts";
import type { CacheInventory } from "../cache/inventory.ts";
import type { PackageStore } from "../cache/package_store.ts";
import type { RefsStore } from "../cache/refs_store.ts";
import type { OpenObject } from "../cache/storage.ts";
import type { StorageFigures } from "../ops/storage_metrics.ts";
import type { Config } from "../config/config.ts";
import type { RequestInfo } from "../http/middleware.ts";
import type { ResponseCache } from "../http/response_cache.ts";
import type { Telemetry } from "../ops/telemetry.ts";
import type { Route } from "../protocol/paths.ts";
import type { ProviderSource } from "../sources/source.ts";
import type { ModuleService } from "../modules/module_service.ts";

/** Per-request facts: the generic ones, plus what Repoxy's handlers record. */
export interface RequestContext extends RequestInfo {
  route: Route["kind"] | "none";
  cache: CacheStatus | undefined;
  /** Refs generation when the request began (see http/response_cache.ts). */
  generation: number;
  /** Name of the client's token (for the access log; never the token itself). */
  client?: string;
  /**
   * Whether the answer may be kept and reused for other requests: false when
   * client auth is on, since answers then depend on the token's rules and
   * carry signed links that belong to this request.
   */
  shareable: boolean;
  /**
   * Turns the path of an archive or SHA256SUMS URL embedded in this answer
   * (relative to the request's path, or rooted) into the query to append so
   * the client can fetch it without credentials. Undefined when auth is off:
   * URLs are then embedded bare.
   */
  signUrl?: (path: string) => string;
  /** Set once `signUrl` was used: the answer carries this request's links and is never kept. */
  linked?: boolean;
  /** `performance.now()` at which the answer's deadline passes (set by dispatch; none for streams). */
  deadlineAt?: number;
  /** The request's OpenTelemetry trace id, when tracing is on (ops/tracing.ts), for the access log. */
  traceId?: string;
}

/**
 * The key under which a request's answer may be kept for reuse, or
 * undefined when it may not be kept. An open mirror keys by path; under
 * client auth an answer is kept only for the same token (it was produced
 * after that token passed its rules for that path) and never when it carries
 * signed links.
 */
export function keepKey(ctx: RequestContext): string | undefined {
  if (ctx.linked) return undefined;
  if (ctx.client !== undefined) return clientKey(ctx.client, ctx.path);
  return ctx.shareable ? ctx.path : undefined;
}

/** The kept-answer key of `path` for the token named `client`. */
export function clientKey(client: string, path: string): string {
  // A NUL cannot occur in a request path, so no path collides with a client's key.
  return `${client}\u0000${path}`;
}

/** The app's parts that handlers use; each handler takes the ones it needs. */
export interface Services {
  config: Config;
  log: Logger;
  /** Client authentication; undefined when `auth` is not configured (open mirror). */
  access?: AccessControl;
  /** Where provider answers come from: the upstreams, or (offline) the cache alone. */
  source: ProviderSource;
  packages: PackageStore;
  refs: RefsStore;
  /** Registry modules: version lists, stored archives, passed-through sources. */
  modules: ModuleService;
  /** Finished metadata answers kept for reuse. */
  answers: ResponseCache;
  telemetry: Telemetry;
  inventory: CacheInventory;
  /** Archive downloads in progress. */
  inflightDownloads: () => number;
  /** Whether the cache disk takes downloads (`/-/readyz`). */
  diskHealth: DiskHealth;
  /** The shared bucket behind the local disk (`storage.kind: s3`; lib/storage_s3/mod.ts). */
  bucket?: {
    readiness(): Promise<{ ok: boolean; kind: "s3"; bucket: string; reason?: string }>;
    redirect(object: OpenObject): Promise<string | undefined>;
    figures(): StorageFigures;
  };
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
