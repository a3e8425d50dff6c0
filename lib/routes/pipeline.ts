/**
 * How every request is handled, as named steps composed in app.ts:
 *
 * 1. {@link keptAnswer}: a finished metadata answer still current is sent
 *    from memory (the hot path of a warm mirror, so it runs before the
 *    composed steps rather than as one of them: no extra promise hops);
 * 2. {@link observe}: metrics and the access log line, whatever happens below;
 * 3. {@link mapErrors}: every error becomes a JSON answer (never a bare 500);
 * 4. {@link dispatch}: method, path and registry checks, then the route's
 *    handler, under the metadata deadline unless the route streams.
 * @module
 */
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
import { type RequestContext, type RouteHandler, type Services } from "./context.ts";
import { jsonResponse } from "./json_answer.ts";

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
    ...(end.note ? { note: end.note } : {}),
  });
}

/**
 * A kept metadata answer for this path, if one is still current: a map
 * lookup and a Response, no routing, no refs lookups, no rendering.
 */
export function keptAnswer(req: Request, ctx: RequestContext, s: Services): Response | undefined {
  if (req.method !== "GET" && req.method !== "HEAD") return undefined;
  const path = pathOf(req.url);
  const kept = s.answers.get(path);
  if (!kept) return undefined;
  ctx.path = path;
  ctx.cache = "hit";
  ctx.route = kept.route as Route["kind"];
  const res = jsonResponse(req, kept, "hit", kept.maxAge);
  record(s, req, ctx, res);
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
): void {
  const seconds = (performance.now() - ctx.started) / 1000;
  s.telemetry.onRequest(ctx.route, res.status, seconds, ctx.cache);
  if (!ctx.reported) {
    const bytes = req.method === "HEAD" ? 0 : Number(res.headers.get("content-length") ?? 0);
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
 * Turns errors into JSON answers: an {@link HttpError} renders itself, a bad
 * path is a 400, anything else is logged with its stack and answered without
 * internals.
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
  const hostname = "provider" in r ? r.provider.hostname : "module" in r ? r.module.hostname : "";
  if (hostname && !config.upstreams.has(hostname)) {
    throw new NotFoundError(`registry ${hostname} is not configured on this mirror`);
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
    const r = parseRoute(url.pathname, s.config.defaultUpstream);
    if (!r) throw new NotFoundError(`nothing is served at ${url.pathname}`);
    ctx.route = r.kind;
    requireRegistry(s.config, r);
    const spec = table[r.kind] as RouteSpec<Route["kind"]>;
    if (!spec.streams) ctx.deadlineAt = performance.now() + deadlineMs;
    const work = (async () => await spec.handler(req, ctx, r as never, s))();
    if (spec.streams) return work;
    return raceDeadline(
      work,
      deadlineMs,
      () => new UpstreamTimeoutError("the upstream did not answer in time; try again shortly"),
    );
  };
}
