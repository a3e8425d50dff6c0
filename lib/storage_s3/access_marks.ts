/**
 * When an archive in the bucket was last used, as the whole fleet knows it,
 * for the bucket's retention (`storage.retention`, applied by `repoxy prune`).
 *
 * S3 keeps no access time, and replica clocks are not trusted, so use is
 * recorded in the bucket itself: serving an archive (from either tier)
 * writes a small marker `<prefix>/access/{host}/{ns}/{type}/…zip`, and the
 * marker's `Last-Modified` (the bucket's own clock) is the last use. Each
 * replica writes a marker at most once a day per archive ({@link MARK_EVERY_MS}),
 * off the serving path: a hot archive costs the bucket one small PUT per
 * replica per day, and recency is known to within a day — which is why
 * `storage.retention.maxAge` is at least a day. An archive's recency is the
 * later of its own `Last-Modified` (its upload) and its marker's.
 * @module
 */
import type { S3Storage } from "./s3_storage.ts";

/** A replica re-records the use of an archive at most this often. */
export const MARK_EVERY_MS = 86_400_000;
/** How many archives a replica remembers having marked (then it forgets the oldest). */
const REMEMBERED = 50_000;

/** The access marker key of a package key (`packages/h/…zip` → `access/h/…zip`). */
export function accessKey(packageKey: string): string {
  return "access/" + packageKey.replace(/^packages\//, "");
}

/** The package key of an access marker key (inverse of {@link accessKey}). */
export function packageKeyOfMark(markKey: string): string {
  return "packages/" + markKey.replace(/^access\//, "");
}

/** One replica's writer of access markers. */
export class AccessMarks {
  readonly #last = new Map<string, number>();

  constructor(
    readonly bucket: S3Storage,
    readonly replica: string,
    readonly now: () => number = Date.now,
  ) {}

  /** Whether `key`'s use should be recorded now (not recorded by this replica for a day). */
  due(key: string): boolean {
    const at = this.#last.get(key);
    return at === undefined || this.now() - at >= MARK_EVERY_MS;
  }

  /** Notes that the bucket's copy of `key` was just written (its upload is its latest use). */
  wrote(key: string): void {
    this.#last.delete(key);
    this.#last.set(key, this.now());
    if (this.#last.size > REMEMBERED) this.#last.delete(this.#last.keys().next().value!);
  }

  /** Writes the marker of `key` (claimed first, so concurrent serves write once). */
  async write(key: string): Promise<void> {
    this.wrote(key);
    try {
      await this.bucket.put(
        accessKey(key),
        JSON.stringify({ replica: this.replica, at: new Date(this.now()).toISOString() }) + "\n",
      );
    } catch (e) {
      this.#last.delete(key); // try again on the next use
      throw e;
    }
  }
}
