/**
 * Metadata answers as JSON: encoded once (length, ETag), 304 on
 * If-None-Match, and kept in the response cache for reuse while every input
 * stays current.
 * @module
 */
import type { CacheStatus } from "../cache/cache_status.ts";
import type { ResponseCache } from "../http/response_cache.ts";
import { bodyEtag, serveBody, utf8Length } from "../http/serve_body.ts";
import { keepKey, type RequestContext } from "./context.ts";

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
  const key = keepKey(ctx);
  const maxAge = maxAgeUntil(from.keepUntil, answers.now());
  if (key !== undefined && from.status !== "stale" && from.keepUntil > 0) {
    answers.put(key, {
      ...enc,
      route: ctx.route,
      maxAge,
      generation: ctx.generation,
      expiresAt: from.keepUntil,
    });
  }
  return jsonResponse(req, enc, from.status, maxAge);
}

/**
 * The `max-age` (s) of an answer that stays current until `keepUntil` (ms):
 * at most 60, and never past the freshness of the version list it was built
 * from, so an HTTP cache in front of Repoxy adds nothing to the delay before
 * a new release shows.
 */
export function maxAgeUntil(keepUntil: number, now: number): number {
  return Math.min(60, Math.max(0, Math.ceil((keepUntil - now) / 1000)));
}
