/**
 * What every handler gets: the per-request context, the app's services, and
 * the JSON answer helpers (an ETag, 304, and keeping finished answers in the
 * response cache while every input stays current).
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { CacheStatus } from "../cache/cache_status.ts";
import type { CacheInventory } from "../cache/inventory.ts";
import type { PackageStore } from "../cache/package_store.ts";
import type { RefsStore } from "../cache/refs_store.ts";
import type { Config } from "../config/config.ts";
import type { RequestInfo } from "../http/pipeline.ts";
import type { ResponseCache } from "../http/response_cache.ts";
import { bodyEtag, serveBody, utf8Length } from "../http/serve_body.ts";
import type { Telemetry } from "../ops/telemetry.ts";
import type { Route } from "../protocol/paths.ts";
import type { ProviderSource } from "../sources/source.ts";

/** Per-request facts: the generic ones, plus what Repoxy's handlers record. */
export interface RequestContext extends RequestInfo {
  route: Route["kind"] | "none";
  cache: CacheStatus | undefined;
  /** Refs generation when the request began (see http/response_cache.ts). */
  generation: number;
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

/** A JSON body ready to send: text, its UTF-8 length and its ETag. */
export interface EncodedJson {
  text: string;
  length: number;
  etag: string;
}

/** Encodes a JSON text once: its length and ETag. */
export function encodeJson(text: string): EncodedJson {
  return { text, length: utf8Length(text), etag: bodyEtag(text) };
}

/** A metadata answer: short max-age, an ETag of the body, 304 on If-None-Match. */
export function jsonResponse(
  req: Request,
  body: string | EncodedJson,
  cache: CacheStatus | undefined,
  maxAge = 60,
): Response {
  const enc = typeof body === "string" ? encodeJson(body) : body;
  return serveBody(req, enc.text, {
    contentType: "application/json",
    cacheControl: `public, max-age=${maxAge}`,
    etag: enc.etag,
    length: enc.length,
    ...(cache ? { headers: { "x-repoxy-cache": cache } } : {}),
  });
}

/**
 * Sends a metadata answer and keeps it for the same path until `keepUntil`,
 * provided nothing in `refs/` was written since the request began (a stale
 * answer, or one that may not be kept, is only sent).
 */
export function keptJson(
  req: Request,
  ctx: RequestContext,
  answers: ResponseCache,
  body: string | EncodedJson,
  from: { status: CacheStatus; keepUntil: number },
): Response {
  const enc = typeof body === "string" ? encodeJson(body) : body;
  if (from.status !== "stale" && from.keepUntil > 0) {
    answers.put(ctx.path, {
      ...enc,
      route: ctx.route,
      maxAge: 60,
      generation: ctx.generation,
      expiresAt: from.keepUntil,
    });
  }
  return jsonResponse(req, enc, from.status);
}
