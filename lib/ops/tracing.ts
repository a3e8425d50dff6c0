/**
 * Tracing with Deno's built-in OpenTelemetry (`OTEL_DENO=true`): Repoxy's
 * spans join the ones Deno makes for `Deno.serve` (the HTTP server span,
 * which honours an incoming `traceparent`) and `fetch`, and Deno exports
 * them over OTLP. A request's trace reads:
 *
 *     GET (Deno.serve)
 *     └─ repoxy <route>          route, status, cache decision, bytes sent
 *        ├─ cache lookup         key, decision (hit|miss|revalidated|stale), joined
 *        │  └─ upstream GET      host, path, status, bytes, propagated
 *        │     └─ GET (Deno's fetch span, when the context is propagated)
 *        ├─ upstream document    (the body of a metadata document)
 *        ├─ signature check
 *        ├─ archive download     (its upstream GETs, archive fsync+commit)
 *        ├─ read-ahead           (background fetches this request started)
 *        └─ fsync, rename, fsync dir
 *
 * Why `@opentelemetry/api` rather than `Deno.telemetry` alone: Deno's
 * namespace exposes its provider objects typed `any` and documents the npm
 * API as the way to use them; the API brings the types, context helpers and
 * span kinds, is what Deno's own docs and tests use, and costs nothing when
 * tracing is off (it is not loaded).
 *
 * Trace context reaches an upstream only when its hostname is listed in
 * `REPOXY_OTEL_PROPAGATE_TO`: for any other, the request is made outside
 * the client's trace, so the `traceparent` Deno's fetch adds names a new
 * trace of that one request (its own fetch span), never the client's trace
 * id nor one shared by other requests.
 *
 * Off (Deno's OpenTelemetry not on, or {@link startTracing} not called),
 * nothing here is loaded into the request path: {@link tracingHooks} is
 * undefined and app.ts takes its plain path.
 * @module
 */
import { type Fields, setSpanBackend, type SpanBackend } from "../base/trace.ts";
import { loadOtelApi, type OtelApi, otelEnabled } from "../deps/otel.ts";
import type { BodyEnd } from "../http/serve_file.ts";
import type { FetchFn } from "../upstream/client.ts";

/** Name and version of the instrumentation scope of Repoxy's spans. */
const SCOPE = "repoxy";

/** The per-request facts the request span reads (routes/context.ts RequestContext). */
export interface TracedContext {
  route: string;
  cache: string | undefined;
  path: string;
  /** Called once when the answer's body ended (or at once for a bodiless answer). */
  done: (end: BodyEnd) => void;
  /** Set here: the access log line names the trace. */
  traceId?: string;
}

/** What app.ts wraps when tracing is on. */
export interface TracingHooks {
  /** Runs the handling of one request inside its span; the span ends with the body. */
  request<C extends TracedContext>(
    req: Request,
    ctx: C,
    handle: (req: Request, ctx: C) => Promise<Response>,
  ): Promise<Response>;
  /** Wraps the upstream fetch: one span per HTTP exchange (each redirect hop). */
  fetch(f: FetchFn): FetchFn;
}

/** Options of {@link startTracing}. */
export interface TracingOptions {
  /**
   * Hostnames (upstream registries, download hosts) that may receive the
   * trace context (`traceparent`) of the client's request: internal
   * services traced into the same backend. Empty: none does.
   */
  propagateTo: readonly string[];
  /** Repoxy's version (the tracer's scope version). */
  version: string;
}

let hooks: TracingHooks | undefined;

/** The tracing hooks, or undefined when tracing is off. */
export function tracingHooks(): TracingHooks | undefined {
  return hooks;
}

/**
 * Turns tracing on when Deno's OpenTelemetry is: loads `@opentelemetry/api`
 * and installs the span backend. Call before createApp.
 *
 * @returns whether tracing is now on
 */
export async function startTracing(opts: TracingOptions): Promise<boolean> {
  if (!otelEnabled()) return false;
  const api = await loadOtelApi();
  const tracer = api.trace.getTracer(SCOPE, opts.version);
  setSpanBackend(spanBackend(api, tracer));
  hooks = makeHooks(api, tracer, new Set(opts.propagateTo.map((h) => h.toLowerCase())));
  return true;
}

/**
 * Reads `REPOXY_OTEL_PROPAGATE_TO`: comma-separated hostnames, blanks
 * ignored.
 */
export function parsePropagateTo(value: string | undefined): string[] {
  return (value ?? "").split(",").map((h) => h.trim().toLowerCase()).filter((h) => h !== "");
}

/** OTel attribute names for the fields base/trace.ts spans carry. */
const ATTRIBUTE_OF: Record<string, string> = {
  status: "http.response.status_code",
  path: "url.path",
  bytes: "repoxy.bytes",
};

function attributes(fields: Fields | undefined, into: OtelApi.Attributes = {}): OtelApi.Attributes {
  if (fields) {
    for (const k in fields) into[ATTRIBUTE_OF[k] ?? `repoxy.${k}`] = fields[k];
  }
  return into;
}

/** The span names base/trace.ts uses that another span here already covers. */
const COVERED = new Set([
  // The "upstream GET" span of the fetch wrapper is the same exchange.
  "upstream headers",
]);

function spanBackend(api: typeof OtelApi, tracer: OtelApi.Tracer): SpanBackend {
  const noop = () => {};
  return {
    start(what, fields) {
      if (COVERED.has(what)) return noop;
      const s = tracer.startSpan(what, { attributes: attributes(fields) });
      return (more) => {
        if (more) s.setAttributes(attributes(more));
        s.end();
      };
    },
    run(what, fields, work, outcome) {
      return tracer.startActiveSpan(what, { attributes: attributes(fields) }, async (s) => {
        try {
          const r = await work();
          if (outcome) s.setAttributes(attributes(outcome(r)));
          return r;
        } catch (e) {
          failed(api, s, e);
          throw e;
        } finally {
          s.end();
        }
      });
    },
    note(fields) {
      api.trace.getActiveSpan()?.setAttributes(attributes(fields));
    },
  };
}

function failed(api: typeof OtelApi, s: OtelApi.Span, e: unknown): void {
  s.recordException(e instanceof Error ? e : String(e));
  s.setStatus({ code: api.SpanStatusCode.ERROR, message: (e as Error)?.message ?? String(e) });
}

function makeHooks(
  api: typeof OtelApi,
  tracer: OtelApi.Tracer,
  propagateTo: ReadonlySet<string>,
): TracingHooks {
  return {
    request(req, ctx, handle) {
      const s = tracer.startSpan("repoxy request", {
        attributes: { "http.request.method": req.method },
      });
      // Only a trace that is exported (sampled) is worth naming in the log.
      const sc = s.spanContext();
      if (sc.traceFlags & api.TraceFlags.SAMPLED) ctx.traceId = sc.traceId;
      const done = ctx.done;
      ctx.done = (end) => {
        s.updateName(`repoxy ${ctx.route}`);
        s.setAttributes({
          "repoxy.route": ctx.route,
          "url.path": ctx.path || new URL(req.url).pathname,
          "http.response.status_code": end.status,
          "repoxy.cache": ctx.cache ?? "none",
          "repoxy.bytes": end.bytes,
        });
        if (end.note) s.setAttribute("repoxy.note", end.note);
        if (end.status >= 500) s.setStatus({ code: api.SpanStatusCode.ERROR });
        s.end();
        done(end);
      };
      return api.context.with(
        api.trace.setSpan(api.context.active(), s),
        handle,
        undefined,
        req,
        ctx,
      );
    },
    fetch(f) {
      return (input, init) => {
        const url = new URL(input instanceof Request ? input.url : input);
        const method = init?.method ?? (input instanceof Request ? input.method : "GET");
        const propagated = propagateTo.has(url.hostname);
        const attrs: OtelApi.Attributes = {
          "http.request.method": method,
          "server.address": url.hostname,
          // The path alone: a download URL's query may carry a signature.
          "url.path": url.pathname,
          "repoxy.propagated": propagated,
        };
        if (url.port) attrs["server.port"] = Number(url.port);
        return tracer.startActiveSpan(
          `upstream ${method}`,
          { kind: api.SpanKind.CLIENT, attributes: attrs },
          async (s) => {
            try {
              // Outside the client's trace unless this host may see it:
              // Deno's fetch adds a traceparent of whatever context is active.
              const res = propagated
                ? await f(input, init)
                : await api.context.with(api.ROOT_CONTEXT, f, undefined, input, init);
              s.setAttribute("http.response.status_code", res.status);
              const length = res.headers.get("content-length");
              if (length !== null) s.setAttribute("http.response.body.size", Number(length));
              if (res.status >= 500 || res.status === 429) {
                s.setStatus({ code: api.SpanStatusCode.ERROR });
              }
              return res;
            } catch (e) {
              failed(api, s, e);
              throw e;
            } finally {
              s.end();
            }
          },
        );
      };
    },
  };
}
