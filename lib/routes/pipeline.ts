/**
 * How every request is handled, as named steps composed in app.ts:
 *
 * 1. {@link keptAnswer}: a finished metadata answer still current is sent
 *    from memory (the hot path of a warm mirror, so it runs before the
 *    composed steps rather than as one of them: no extra promise hops);
 * 2. {@link observe}: metrics and the access log line, whatever happens below;
 * 3. {@link mapErrors}: every error becomes a JSON answer (never a bare 500);
 * 4. {@link dispatch}: method, path, client auth ({@link authorize}) and
 *    registry checks, then the route's handler, under the metadata deadline
 *    unless the route streams.
 * @module
 */
import type { Decision } from "../auth/access.ts";
import type { Logger } from "../base/log.ts";
import type { Config } from "../config/config.ts";
import {
  BadRequestError,
  errorResponse,
  HttpError,
  INTERNAL_ERROR_MESSAGE,
  NotFoundError,
  UpstreamTimeoutError,
} from "../http/errors.ts";
import { type Handler, type Middleware, raceDeadline } from "../http/middleware.ts";
import { pathOf } from "../http/response_cache.ts";
import type { BodyEnd } from "../http/serve_file.ts";
import { BadPathError, parseRoute, type Route } from "../protocol/paths.ts";
import { unknownModuleMessage, unknownProviderMessage } from "../protocol/names.ts";
import { offlineUnknownMessage } from "../sources/cache_source.ts";
import { clientKey, type RequestContext, type RouteHandler, type Services } from "./context.ts";
import { jsonResponse, maxAgeUntil } from "./json_answer.ts";

/** How one route is served. */
export interface RouteSpec<K extends Route["kind"]> {
  handler: RouteHandler<K>;
  /**
   * The answer is a body streamed for as long as it takes (archives): no
   * deadline. Every other answer must beat the client's 10 s timeout.
   */
  streams?: boolean;
}

/** A handler for every route kind. */
export type RouteTable = { [K in Route["kind"]]: RouteSpec<K> };

/** A fresh context for a request. */
export function newContext(req: Request, s: Services): RequestContext {
  const ctx: RequestContext = {
    route: "none",
    cache: undefined,
    path: "",
    started: performance.now(),
    reported: false,
    generation: s.refs.generation,
    shareable: !s.access,
    done: (end) => {
      s.telemetry.onBytes(ctx.route, end.bytes);
      accessLog(s.log, req, ctx, end);
    },
  };
  return ctx;
}

/** The access log line of a request, written when its body ended. */
function accessLog(log: Logger, req: Request, ctx: RequestContext, end: BodyEnd): void {
  log.info("request", {
    method: req.method,
    path: ctx.path || new URL(req.url).pathname,
    status: end.status,
    bytes: end.bytes,
    ms: Math.round((performance.now() - ctx.started) * 10) / 10,
    cache: ctx.cache ?? "-",
    // Absent fields are left out of the line by the logger: no spread per request.
    client: ctx.client || undefined,
    note: end.note || undefined,
    trace: ctx.traceId,
  });
}

/**
 * A kept metadata answer for this path, if one is still current: a map
 * lookup and a Response, no routing, no refs lookups, no rendering.
 */
export function keptAnswer(req: Request, ctx: RequestContext, s: Services): Response | undefined {
  if (req.method !== "GET" && req.method !== "HEAD") return undefined;
  const path = pathOf(req.url);
  // With client auth, only this token's own answers (see keepKey): anyone
  // else goes the slow way, through authorize().
  let client: string | undefined;
  if (s.access) {
    const presented = s.access.tokens.identify(req.headers.get("authorization"));
    if (presented.kind !== "valid") return undefined;
    client = presented.token.name;
  }
  const kept = s.answers.get(client === undefined ? path : clientKey(client, path));
  if (!kept) return undefined;
  ctx.path = path;
  ctx.cache = "hit";
  ctx.route = kept.route as Route["kind"];
  let res = jsonResponse(
    req,
    kept,
    "hit",
    Math.min(kept.maxAge, maxAgeUntil(kept.expiresAt, s.now())),
  );
  if (client !== undefined) {
    ctx.client = client;
    res = keepPrivate(res);
  }
  // Its body size is known: reading it back from res.headers would build the
  // Headers object Deno otherwise skips.
  record(s, req, ctx, res, req.method === "HEAD" || res.status !== 200 ? 0 : kept.length);
  return res;
}

/**
 * Records an answered request in the metrics, and writes its access log line
 * unless the body does so itself when it ends (streamed archives: bytes sent,
 * client aborts).
 */
function record(
  s: Pick<Services, "telemetry">,
  req: Request,
  ctx: RequestContext,
  res: Response,
  bodyBytes?: number,
): void {
  const seconds = (performance.now() - ctx.started) / 1000;
  s.telemetry.onRequest(ctx.route, res.status, seconds, ctx.cache);
  if (!ctx.reported) {
    const bytes = bodyBytes ??
      (req.method === "HEAD" ? 0 : Number(res.headers.get("content-length") ?? 0));
    ctx.done({ status: res.status, bytes });
  }
}

/**
 * Records the request (metrics, access log) when its answer is ready. No
 * wrapper stream is put around bodies here: it would cost a stream hop per
 * chunk, and archive bodies must reach Deno.serve unwrapped (see
 * markSocketRequest in http/serve_file.ts).
 */
export function observe(s: Pick<Services, "telemetry">): Middleware<RequestContext> {
  return (next) => async (req, ctx) => {
    const res = await next(req, ctx);
    record(s, req, ctx, res);
    return res;
  };
}

/**
 * Turns errors into JSON answers: an {@link HttpError} renders itself (an
 * upstream refusing Repoxy's own credentials is a 403 naming the config key,
 * never a "try again later" 502), a malformed path is a 400 (an unknown one
 * is a 404 from dispatch), anything else is logged with its stack and
 * answered without internals.
 */
export function mapErrors(s: Pick<Services, "log">): Middleware<RequestContext> {
  return (next) => async (req, ctx) => {
    try {
      return await next(req, ctx);
    } catch (e) {
      ctx.reported = false;
      if (e instanceof HttpError) return e.toResponse();
      if (e instanceof BadPathError) return new BadRequestError(e.message).toResponse();
      const status = e instanceof Deno.errors.NotFound ? 404 : 500;
      if (status === 500) {
        s.log.error("internal error", {
          path: new URL(req.url).pathname,
          error: (e as Error)?.stack ?? String(e),
        });
      }
      return errorResponse(status, INTERNAL_ERROR_MESSAGE);
    }
  };
}

/** Only configured registries are ever contacted or served: 404 before any work. */
function requireRegistry(config: Config, r: Route): void {
  const hostname = "provider" in r
    ? r.provider.hostname
    : "module" in r
    ? r.module.hostname
    : "hostname" in r
    ? r.hostname
    : "";
  if (hostname && !config.upstreams.has(hostname)) {
    throw new NotFoundError(`registry ${hostname} is not configured on this mirror`);
  }
}

/** Where a client learns how to present a token. */
const CREDENTIALS_HINT =
  'give the client a token for this mirror: credentials "<mirror host[:port]>" { token = "..." } ' +
  "in the CLI config, or TF_TOKEN_<mirror_host>";

/**
 * Client auth (when configured): lets the request through and records who
 * asked (and how to sign the links its answer embeds), or throws the answer:
 * 401 without a usable token, 403 for a signed link that does not hold, 404
 * for what the token may not see (the same answer as for something that does
 * not exist, and given before any lookup, so it leaks nothing). Messages
 * never contain the presented token.
 */
export function authorize(
  req: Request,
  url: URL,
  r: Route | undefined,
  ctx: RequestContext,
  s: Services,
): void {
  const access = s.access!;
  const d: Decision = access.decide(req, url, r, s.now());
  switch (d.kind) {
    case "allow": {
      const token = d.token;
      if (!token) return;
      ctx.client = token.name;
      if (d.via === "bearer") {
        ctx.signUrl = (path) => {
          ctx.linked = true;
          return access.signedQuery(ctx.path, path, token, s.now());
        };
      }
      return;
    }
    case "unauthenticated":
      throw new HttpError(
        401,
        d.invalidToken
          ? `the token presented is not valid for this mirror; ${CREDENTIALS_HINT}`
          : `this mirror requires a token; ${CREDENTIALS_HINT}`,
        {
          "www-authenticate": d.invalidToken
            ? 'Bearer realm="repoxy", error="invalid_token"'
            : 'Bearer realm="repoxy"',
        },
      );
    case "badLink":
      s.log.warn("refused a signed link", { path: url.pathname, problem: d.problem });
      throw new HttpError(
        403,
        "this download link has expired or is not valid; ask the mirror for the metadata again",
      );
    case "hidden":
      // Word for word what a provider or module the upstream lacks gets.
      throw new NotFoundError(
        d.hiddenUpstream
          ? `registry ${d.hostname} is not configured on this mirror`
          : r && s.config.offline
          ? offlineUnknownMessage(r) ?? `nothing is served at ${url.pathname}`
          : r && "provider" in r
          ? unknownProviderMessage(r.provider, s.config.offline)
          : r && "module" in r
          ? unknownModuleMessage(r.module, s.config.offline)
          : `nothing is served at ${url.pathname}`,
      );
  }
}

/**
 * An answer given to an authenticated client must not be kept by shared
 * caches (a corporate proxy would otherwise hand a token's answer, or an
 * archive fetched with a token, to clients without one): `public` becomes
 * `private`, and the answer varies by Authorization. Headers are set on the
 * same Response, so streamed archive bodies stay unwrapped.
 */
function keepPrivate(res: Response): Response {
  const cc = res.headers.get("cache-control");
  const value = cc === null ? "private" : cc.replace(/\bpublic\b/i, "private");
  try {
    res.headers.set("cache-control", value);
    res.headers.append("vary", "Authorization");
    return res;
  } catch {
    // Immutable headers (a Response from fetch): copy them.
    const headers = new Headers(res.headers);
    headers.set("cache-control", value);
    headers.append("vary", "Authorization");
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
  }
}

/**
 * Routes a request to its handler. Everything Repoxy serves is read-only, so
 * only GET and HEAD pass. The route's spec, not the handler, decides whether
 * the deadline applies: past it, the client gets a 504 while the work goes on
 * and fills the cache.
 *
 * @param deadlineMs the deadline of every answer that does not stream
 */
export function dispatch(
  table: RouteTable,
  s: Services,
  deadlineMs: number,
): Handler<RequestContext> {
  return (req, ctx) => {
    const url = new URL(req.url);
    ctx.path = url.pathname;
    if (req.method !== "GET" && req.method !== "HEAD") {
      throw new HttpError(405, `method ${req.method} is not allowed; use GET or HEAD`, {
        allow: "GET, HEAD",
      });
    }
    let r: Route | undefined;
    try {
      r = parseRoute(url.pathname, s.config.defaultUpstream);
    } catch (e) {
      // Under auth even a malformed path is a 401 first: nothing about paths
      // is told to a client without a token.
      if (!s.access || !(e instanceof BadPathError)) throw e;
      authorize(req, url, undefined, ctx, s);
      throw e;
    }
    if (r) ctx.route = r.kind; // refusals are counted under the route they were for
    if (s.access) authorize(req, url, r, ctx, s);
    if (!r) {
      // Well-formed but unknown (parseRoute throws for malformed): 404, as
      // the registry answers; a trailing slash is the usual slip, so say so.
      throw new NotFoundError(
        url.pathname.endsWith("/")
          ? `nothing is served at ${url.pathname}; paths here have no trailing slash`
          : `nothing is served at ${url.pathname}`,
      );
    }
    requireRegistry(s.config, r);
    const spec = table[r.kind] as RouteSpec<Route["kind"]>;
    if (!spec.streams) ctx.deadlineAt = performance.now() + deadlineMs;
    const work = (async () => {
      const res = await spec.handler(req, ctx, r as never, s);
      return ctx.client ? keepPrivate(res) : res;
    })();
    if (spec.streams) return work;
    return raceDeadline(
      work,
      deadlineMs,
      () => new UpstreamTimeoutError("the upstream did not answer in time; try again shortly"),
    );
  };
}
