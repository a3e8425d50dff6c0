/**
 * OpenTelemetry's JavaScript API (`@opentelemetry/api`), which Deno's
 * built-in OpenTelemetry (`OTEL_DENO=true`) registers its tracer, context
 * manager and propagators with: spans made through it join the ones Deno
 * makes for `Deno.serve` and `fetch`, and Deno exports them all over OTLP.
 *
 * Loaded only when Deno's OpenTelemetry is on ({@link otelEnabled}), like
 * openpgp.js: a server without tracing neither parses nor keeps it. The
 * specifier is a static string, so `deno compile` still embeds the package.
 * @module
 */
import type * as OtelApi from "@opentelemetry/api";

/** The API namespace, for type positions (`OtelApi.Span`). */
export type { OtelApi };

/**
 * The key under which version 1 of the OpenTelemetry JS API finds its
 * registered providers (`@opentelemetry/api`'s global registry). Deno puts
 * its providers there at start-up when, and only when, `OTEL_DENO=true`.
 */
const API_GLOBAL = Symbol.for("opentelemetry.js.api.1");

/**
 * Whether Deno's built-in OpenTelemetry is on in this process: the runtime
 * registered its providers. Needs no permission (the runtime read the
 * environment, not us) and loads nothing.
 */
export function otelEnabled(): boolean {
  return (globalThis as Record<symbol, unknown>)[API_GLOBAL] !== undefined;
}

let loading: Promise<typeof OtelApi> | undefined;

/**
 * The `@opentelemetry/api` module, imported on the first call and shared
 * afterwards. A failed import is not cached, so a later call tries again.
 */
export function loadOtelApi(): Promise<typeof OtelApi> {
  loading ??= import("@opentelemetry/api").catch((err) => {
    loading = undefined;
    throw err;
  });
  return loading;
}
