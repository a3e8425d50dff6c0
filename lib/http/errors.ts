/**
 * Errors that render themselves: each {@link HttpError} knows its status, a
 * message safe to show to clients and extra headers, and turns itself into
 * the JSON error answer the registry protocol uses. Generic HTTP only: the
 * gateway errors say "the origin failed", whoever the origin is.
 * @module
 */

/** An error with an HTTP status and a message safe to show to clients. */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(readonly status: number, message: string, readonly headers: HeadersInit = {}) {
    super(message);
  }

  /** The JSON error answer for this error. */
  toResponse(): Response {
    return errorResponse(this.status, this.message, this.headers);
  }
}

/** The request names something malformed (400). */
export class BadRequestError extends HttpError {
  override name = "BadRequestError";
  constructor(message: string) {
    super(400, message);
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

/**
 * The upstream refused the mirror's own credentials (it answered 401 or 403 to
 * a request Repoxy made). Not transient: retrying with the same token cannot
 * help, and "try again later" (a 502) would send the user looking in the
 * wrong place. The client gets 403 with a message naming the config key to
 * fix: Terraform reports a 401/403 from a registry or mirror as "requires
 * authentication credentials" / "rejected the given authentication
 * credentials", the nearest thing its output has to the truth (it prints no
 * body for any status), and 403 is never confused with the 401 Repoxy's own
 * client auth answers.
 */
export class UpstreamAuthError extends UpstreamError {
  override name = "UpstreamAuthError";
  constructor(
    message: string,
    /** What the upstream answered (401 or 403). */
    readonly upstreamStatus: number,
  ) {
    super(message, 403);
  }
}

/** The upstream did not answer in time. */
export class UpstreamTimeoutError extends UpstreamError {
  override name = "UpstreamTimeoutError";
  constructor(message: string) {
    super(message, 504);
  }
}

/** What clients see for an error that is not an {@link HttpError}: no internals. */
export const INTERNAL_ERROR_MESSAGE = "internal error; see the server log";

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
