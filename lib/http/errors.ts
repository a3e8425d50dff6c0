/**
 * Error classes the handler maps to HTTP statuses, and the one function that
 * does the mapping (so no error reaches a client as a bare 500).
 * @module
 */
import { ConfigError } from "../config/config.ts";
import { BadPathError } from "../protocol/paths.ts";

/** An error with an HTTP status and a message safe to show to clients. */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(readonly status: number, message: string, readonly headers: HeadersInit = {}) {
    super(message);
  }
}

/** The thing asked for does not exist (here or upstream). */
export class NotFoundError extends HttpError {
  override name = "NotFoundError";
  constructor(message: string) {
    super(404, message);
  }
}

/** The upstream answered, but with something unusable (bad JSON, bad status, bad bytes). */
export class UpstreamError extends HttpError {
  override name = "UpstreamError";
  /** Worth retrying: connection trouble, 5xx, 429. */
  transient = false;
  /** What the upstream asked us to wait (Retry-After), in ms. */
  retryAfterMs: number | undefined;
  constructor(message: string, status = 502, headers: HeadersInit = {}) {
    super(status, message, headers);
  }
}

/** The upstream did not answer in time. */
export class UpstreamTimeoutError extends UpstreamError {
  override name = "UpstreamTimeoutError";
  constructor(message: string) {
    super(message, 504);
  }
}

/** The cache directory cannot be written (full, read-only, gone). */
export class DiskError extends Error {
  override name = "DiskError";
}

/** Maps any thrown value to a status code. */
export function toErrorStatus(e: unknown): number {
  if (e instanceof HttpError) return e.status;
  if (e instanceof BadPathError) return 400;
  if (e instanceof ConfigError) return 500;
  if (e instanceof Deno.errors.NotFound) return 404;
  return 500;
}

/** A JSON error response: `{"errors": ["message"]}` as the registry protocol uses. */
export function errorResponse(
  status: number,
  message: string,
  headers: HeadersInit = {},
): Response {
  const h = new Headers(headers);
  h.set("content-type", "application/json");
  h.set("cache-control", "no-store");
  const body = new TextEncoder().encode(JSON.stringify({ errors: [message] }) + "\n");
  h.set("content-length", String(body.length));
  return new Response(body as BodyInit, { status, headers: h });
}
