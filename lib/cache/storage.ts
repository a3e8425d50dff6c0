/**
 * The storage seam: where `refs/` and `packages/` live. Keys are
 * `/`-separated paths relative to the cache root (`refs/…json`,
 * `packages/{host}/{ns}/{type}/…zip`), built only from validated names.
 *
 * Implementations: the local disk ({@link ./disk_storage.ts}), and (when
 * `storage.kind` is `s3`) a bucket with the local disk as a read-through tier
 * in front of it (lib/storage_s3/); the handlers only see this interface
 * through the refs and package stores.
 * @module
 */

/** The cache cannot be written (full, read-only, gone). */
export class DiskError extends Error {
  override name = "DiskError";
}

/** Facts about one stored object. */
export interface ObjectInfo {
  key: string;
  size: number;
  mtime: Date | null;
  /** Last recorded access (LRU eviction), when the storage keeps one. */
  atime: Date | null;
}

/**
 * A stored object opened for reading. The bytes cannot change while it is
 * open (objects are replaced by atomic commit, never rewritten in place), so
 * `size` always belongs to what `read` returns.
 */
export interface OpenObject extends ObjectInfo {
  /**
   * Names this version of the object (device, inode, size, change times),
   * when the storage can tell: equal identities mean no write went through
   * the filesystem in between, so a fingerprint checked once still holds.
   */
  readonly identity?: string;
  /** Reads from the current position; null at the end. */
  read(buf: Uint8Array): Promise<number | null>;
  /** Moves the read position (used for ranges). */
  seek(offset: number, whence: Deno.SeekMode): Promise<number>;
  close(): void;
  /**
   * Marks the object as being served: protected from eviction while open and
   * its access time recorded for LRU. Never throws.
   */
  markServing(now?: number): Promise<void>;
  /**
   * Names the verified sha256 the bytes must hash to (the archive's record),
   * for a storage that cannot vouch for its bytes (a shared bucket): it
   * checks them while they stream and fails the read that would complete a
   * body that does not match, so a client sees a cut transfer, never a whole
   * wrong body.
   */
  expect?(sha256: string): void;
}

// Keys come from validated names; this keeps a bug elsewhere from ever
// reaching outside the root (or the bucket's prefix).
// deno-lint-ignore no-control-regex
const BAD_KEY = /(^|\/)\.{0,2}(\/|$)|[\\\x00]/;

/** Throws a TypeError for a key with an empty, `.` or `..` segment, a backslash or a NUL. */
export function checkKey(key: string): void {
  if (BAD_KEY.test(key)) throw new TypeError(`invalid storage key "${key}"`);
}

/** The default bound of {@link Storage.get}. */
export const SMALL_OBJECT_MAX_BYTES = 32 * 2 ** 20;

/** Where refs and packages are kept. */
export interface Storage {
  /** Where an object is, for messages (a file path, a URL). */
  locate(key: string): string;
  /**
   * A small object whole (a refs document), or undefined when absent,
   * unreadable, not a regular object or larger than `maxBytes` (default
   * {@link SMALL_OBJECT_MAX_BYTES}): whatever someone planted there never
   * costs more than that much memory, and never blocks.
   */
  get(key: string, maxBytes?: number): Promise<Uint8Array | undefined>;
  /** Writes a small object atomically: readers see the old bytes or the new, never half. */
  put(key: string, data: Uint8Array | string): Promise<void>;
  /** Opens an object for reading, or undefined when it is absent (or not a regular object). */
  open(key: string): Promise<OpenObject | undefined>;
  /** Size and times of an object, or undefined when it is absent. */
  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Every object under a key prefix (ending in `/`), in key order. */
  list(prefix: string): AsyncGenerator<ObjectInfo>;
  /** A fresh local path for a temp file, on the same filesystem as what `commit` writes. */
  tempPath(hint: string): string;
  /**
   * Makes a complete, verified temp file (from {@link tempPath}) visible
   * under `key` in one step. The temp file is consumed. `sha256` is the hash
   * the caller verified, when it has one: a storage that copies the bytes
   * elsewhere (a bucket) stores exactly those bytes or nothing.
   */
  commit(tempPath: string, key: string, sha256?: string): Promise<void>;
  /** Removes an object; false when it was not there. */
  delete(key: string): Promise<boolean>;
}

/** What a local tier did with a shared bucket behind it (lib/storage_s3). */
export interface TierStats {
  /** Archives copied from the bucket into the local tier, and their bytes. */
  fills: number;
  fillBytes: number;
  /** Archives this replica uploaded to the bucket, and their bytes. */
  uploads: number;
  uploadBytes: number;
  /** Archives kept on the local tier only because the upload failed. */
  uploadFailures: number;
}

/** One replica's view of a shared bucket, for the status page and `/-/metrics`. */
export interface BucketFigures {
  kind: "s3";
  /** `s3://bucket/prefix/`. */
  bucket: string;
  replicaId: string;
  reachable: boolean;
  /** Since when the bucket has been reachable (or not), in ms since the epoch. */
  since: number;
  /** Failed bucket requests since start. */
  errors: number;
  lastError?: string;
  lastErrorAt?: number;
  tier: TierStats;
}
