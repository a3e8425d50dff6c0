/**
 * Timing trace for profiling the uncached path: spans (upstream request to
 * headers and to body end, signature check, fsync, rename) written as one
 * "trace" log line each. Off unless enabled (REPOXY_TRACE=1 for `serve`), and
 * then a no-op costing one branch per span.
 * @module
 */

/** Where finished spans go: `what`, milliseconds, and fields. */
export type TraceSink = (what: string, ms: number, fields: Record<string, string | number>) => void;

let sink: TraceSink | undefined;

/** Turns tracing on (a sink) or off (undefined). */
export function setTraceSink(s: TraceSink | undefined): void {
  sink = s;
}

/** Whether spans are being recorded. */
export function tracing(): boolean {
  return sink !== undefined;
}

/**
 * Starts a span; call the returned function when it ends. Fields given at the
 * end are added to those given at the start.
 */
export function span(
  what: string,
  fields: Record<string, string | number> = {},
): (more?: Record<string, string | number>) => void {
  if (!sink) return noop;
  const t0 = performance.now();
  const s = sink;
  return (more) =>
    s(what, Math.round((performance.now() - t0) * 100) / 100, { ...fields, ...more });
}

/** Times `work` as a span named `what`. */
export async function traced<T>(
  what: string,
  fields: Record<string, string | number>,
  work: () => Promise<T>,
): Promise<T> {
  if (!sink) return await work();
  const end = span(what, fields);
  try {
    return await work();
  } finally {
    end();
  }
}

const noop = () => {};
