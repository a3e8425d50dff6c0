/**
 * The conditional primitives replicas coordinate through (the fleet-wide
 * single upstream fetch takes its leases with them). The object store is the
 * only coordinator: no replica talks to another, and staleness is judged by
 * the store's own clock (`lastModified`, `serverNow`), never a replica's.
 *
 * Implemented by the S3 storage (`S3Storage.coordination()` in
 * lib/storage_s3/); tests of the callers use an in-memory fake.
 * @module
 */

/** Small objects written and read with conditions, for coordination between replicas. */
export interface CoordinationStore {
  /** PUT with If-None-Match: *. "exists" when the key is there (412). */
  create(key: string, body: Uint8Array): Promise<{ etag: string } | "exists">;
  /** PUT with If-Match: etag. "changed" when the stored etag differs (412). */
  replace(key: string, body: Uint8Array, etag: string): Promise<{ etag: string } | "changed">;
  /** GET; `lastModified` and `serverNow` (the response's Date header) are the store's clock. */
  read(key: string): Promise<
    { body: Uint8Array; etag: string; lastModified: Date; serverNow: Date } | undefined
  >;
  /**
   * DELETE (with If-Match when given). Ceph RGW ignores If-Match on DELETE
   * (measured: a wrong etag still deletes, 204), so callers must not rely on
   * it: remove only what they hold, and re-read before acting on a removal.
   */
  remove(key: string, etag?: string): Promise<void>;
}
