/**
 * The conditional-write primitives of a storage shared by several replicas
 * (S3 `If-None-Match: *` / `If-Match`): the only coordinator of a fleet.
 * Fleet leases ({@link ./fleet_lease.ts}) are built on it; the local disk
 * has none, and nothing coordinates there.
 * @module
 */

/** Conditional writes and reads on the shared store, judged by the store's own clock. */
export interface CoordinationStore {
  /** PUT with If-None-Match: *. "exists" when the key is there (412). */
  create(key: string, body: Uint8Array): Promise<{ etag: string } | "exists">;
  /** PUT with If-Match: etag. "changed" when the stored etag differs (412). */
  replace(key: string, body: Uint8Array, etag: string): Promise<{ etag: string } | "changed">;
  /** GET; `lastModified` and `serverNow` (the response's Date header) are the store's clock. */
  read(
    key: string,
  ): Promise<{ body: Uint8Array; etag: string; lastModified: Date; serverNow: Date } | undefined>;
  /** DELETE (with If-Match when given). */
  remove(key: string, etag?: string): Promise<void>;
}
