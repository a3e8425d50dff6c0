/**
 * Storage failures: the cache cannot be written (full, read-only, gone).
 * @module
 */

/** The cache directory cannot be written (full, read-only, gone). */
export class DiskError extends Error {
  override name = "DiskError";
}
