/**
 * The signal a handler hands to work it starts for one request: aborted when
 * the request's deadline passes or the client goes away, so upstream work
 * nobody waits for any more can stop.
 * @module
 */
import type { RequestContext } from "./context.ts";

/**
 * Runs `fn` with a signal that aborts at the request's deadline
 * (`ctx.deadlineAt`) or when the client disconnects; the timer is cleared
 * when `fn` settles.
 */
export async function withDeadline<T>(
  req: Request,
  ctx: RequestContext,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const ac = new AbortController();
  const onClientGone = () => ac.abort();
  req.signal.addEventListener("abort", onClientGone, { once: true });
  const timer = ctx.deadlineAt === undefined
    ? undefined
    : setTimeout(() => ac.abort(), Math.max(0, ctx.deadlineAt - performance.now()));
  try {
    return await fn(ac.signal);
  } finally {
    clearTimeout(timer);
    req.signal.removeEventListener("abort", onClientGone);
  }
}
