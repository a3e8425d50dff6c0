/**
 * Timing trace of the uncached path: spans (upstream request to headers and
 * to body end, cache lookup, signature check, fsync, rename) go to up to two
 * places: one "trace" log line each (REPOXY_TRACE=1 for `serve`, a profiling
 * aid), and OpenTelemetry spans when Deno's OpenTelemetry is on (a
 * {@link SpanBackend} installed by ops/tracing.ts). With neither, every
 * call here is a no-op costing one branch.
 * @module
 */

/** Span fields: names as in the log line; ops/tracing.ts maps them to OTel attributes. */
export type Fields = Record<string, string | number | boolean>;

/** Where finished spans go: `what`, milliseconds, and fields. */
export type TraceSink = (what: string, ms: number, fields: Fields) => void;

/** A tracer that makes real spans (OpenTelemetry), nested by async context. */
export interface SpanBackend {
  /** Starts a span under the active one; the returned function ends it. */
  start(what: string, fields: Fields): (more?: Fields) => void;
  /** Runs `work` with a new span active (spans started inside become its children). */
  run<T>(
    what: string,
    fields: Fields,
    work: () => Promise<T>,
    outcome?: (r: T) => Fields,
  ): Promise<T>;
  /** Adds fields to the active span (none: nothing). */
  note(fields: Fields): void;
}

let sink: TraceSink | undefined;
let backend: SpanBackend | undefined;

/** Turns the log-line trace on (a sink) or off (undefined). */
export function setTraceSink(s: TraceSink | undefined): void {
  sink = s;
}

/** Installs (or removes) the OpenTelemetry span backend. */
export function setSpanBackend(b: SpanBackend | undefined): void {
  backend = b;
}

/** Whether spans are being recorded anywhere. */
export function tracing(): boolean {
  return sink !== undefined || backend !== undefined;
}

/**
 * Starts a span; call the returned function when it ends. Fields given at the
 * end are added to those given at the start.
 */
export function span(what: string, fields: Fields = {}): (more?: Fields) => void {
  if (!sink && !backend) return noop;
  const endOtel = backend?.start(what, fields);
  if (!sink) return endOtel!;
  const t0 = performance.now();
  const s = sink;
  return (more) => {
    endOtel?.(more);
    s(what, Math.round((performance.now() - t0) * 100) / 100, { ...fields, ...more });
  };
}

/**
 * Times `work` as a span named `what`; with OpenTelemetry, the span is the
 * active one while `work` runs, so what it starts nests under it.
 * `outcome` adds fields from the result (a cache decision, say).
 */
export async function traced<T>(
  what: string,
  fields: Fields,
  work: () => Promise<T>,
  outcome?: (r: T) => Fields,
): Promise<T> {
  if (!sink && !backend) return await work();
  const s = sink;
  const t0 = performance.now();
  let more: Fields | undefined;
  try {
    const r = backend ? await backend.run(what, fields, work, outcome) : await work();
    more = outcome?.(r);
    return r;
  } finally {
    s?.(what, Math.round((performance.now() - t0) * 100) / 100, { ...fields, ...more });
  }
}

/** Adds a field to the active OpenTelemetry span (no log line); off, allocates nothing. */
export function traceNote(key: string, value: string | number | boolean): void {
  backend?.note({ [key]: value });
}

const noop = () => {};
