/**
 * A cheap look at an upstream JSON document's shape before it is parsed.
 *
 * `limits.metadataDocument` bounds a document's bytes, but not what parsing
 * it costs: V8 spends a few hundred bytes of heap per object or array, so a
 * 4 MB body of `[[[[…` or `{},{},…` made the server peak at 400–800 MB for
 * one request (and a few such providers at once would kill it). Registry
 * documents are shallow (depth ≤ 6) and sparse (a container per ≥ 18 bytes:
 * `{"os":"linux","arch":"amd64"},` is 31), so bounding depth and container
 * density refuses the hostile shapes without touching real ones.
 * @module
 */

/** Deepest nesting accepted (registry documents use at most 6 levels). */
export const MAX_JSON_DEPTH = 32;
/** At most one object or array per this many bytes (plus a small allowance). */
export const MIN_BYTES_PER_CONTAINER = 12;
const CONTAINER_ALLOWANCE = 1024;

/**
 * Why `text` is not a plausible registry document (too deep, or more objects
 * and arrays than its size allows), or undefined. Scans the text once
 * without allocating; strings are skipped, escapes included.
 */
export function jsonShapeProblem(text: string): string | undefined {
  const maxContainers = CONTAINER_ALLOWANCE + Math.floor(text.length / MIN_BYTES_PER_CONTAINER);
  let depth = 0;
  let containers = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_JSON_DEPTH) return `JSON nested deeper than ${MAX_JSON_DEPTH} levels`;
      if (++containers > maxContainers) {
        return `more than ${maxContainers} JSON objects and arrays in ${text.length} bytes`;
      }
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return undefined;
}
