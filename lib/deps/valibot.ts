/**
 * Valibot, the schema library the config is checked with (`lib/config/`).
 * Chosen over zod for its size: what Repoxy uses bundles to ~7 KB against
 * ~95 KB, and it costs less start-up time and RSS (figures in the issue 15
 * closing note). One re-export so the pinned version lives in deno.json and
 * the import in this one place.
 * @module
 */
export * as v from "valibot";
