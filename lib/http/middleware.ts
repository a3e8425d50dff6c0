/**
 * Request handling as small composable wrappers (the way Hono composes
 * middleware): a handler takes the request and a per-request record of facts
 * for the access log; a middleware wraps a handler. Generic: the route and
 * cache labels are plain strings here.
 * @module
 */
import type { BodyEnd } from "./serve_file.ts";

/** Per-request facts gathered for the access log and metrics. */
export interface RequestInfo {
  /** The route's name once routing matched it ("none" before). */
  route: string;
  /** Where the answer came from (hit, miss, stale), when that applies. */
  cache: string | undefined;
  /** Request path. */
  path: string;
  /** `performance.now()` when the request arrived. */
  started: number;
  /** Set when the response body reports its own end (streamed bodies). */
  reported: boolean;
  /** Reports how the response ended; called once per request. */
  done: (end: BodyEnd) => void;
}

/** Answers one request. */
export type Handler<I extends RequestInfo = RequestInfo> = (
  req: Request,
  info: I,
) => Promise<Response>;

/** Wraps a handler. */
export type Middleware<I extends RequestInfo = RequestInfo> = (next: Handler<I>) => Handler<I>;

/** `handler` wrapped by `middleware`, the first one outermost. */
export function compose<I extends RequestInfo>(
  handler: Handler<I>,
  ...middleware: Middleware<I>[]
): Handler<I> {
  return middleware.reduceRight((next, mw) => mw(next), handler);
}

/**
 * The answer of `work`, or the error `onTimeout` makes once `ms` have passed.
 * The work goes on after a timeout (it may fill a cache); if it still
 * produces a response, its body is cancelled.
 */
export function raceDeadline(
  work: Promise<Response>,
  ms: number,
  onTimeout: () => Error,
): Promise<Response> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      work.then((r) => r.body?.cancel()).catch(() => {});
      reject(onTimeout());
    }, ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
