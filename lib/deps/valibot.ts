/**
 * Valibot, the schema library the config is checked with (`lib/config/`).
 * Chosen over zod for its size and cost (figures in the issue 15 closing
 * note). Named re-exports, not `export *`, so a bundle keeps only what Repoxy
 * uses; callers import it as a namespace, `v`. The pinned
 * version lives in deno.json, the import in this one place.
 * @module
 */
export {
  array,
  boolean,
  check,
  integer,
  literal,
  maxValue,
  minLength,
  minValue,
  number,
  optional,
  picklist,
  pipe,
  rawCheck,
  rawTransform,
  record,
  regex,
  safeInteger,
  safeParse,
  strictObject,
  string,
  transform,
  union,
  variant,
} from "valibot";
export type { BaseIssue, GenericSchema, InferOutput, ObjectEntries, ObjectSchema } from "valibot";
