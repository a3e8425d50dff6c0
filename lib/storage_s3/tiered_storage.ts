/**
 * The local disk as a read-through tier in front of the bucket, on every
 * replica. `refs/` and `packages/` are shared through the bucket; anything
 * else (the change marker other processes on this disk poll) stays local.
 *
 * - **Archives** (`open`): a hit on disk is served from disk, at disk speed.
 *   A miss on disk that the bucket has is streamed from the bucket while the
 *   bytes read in order are written to a local temp file; when the whole
 *   object went through and hashed to the sha256 recorded at upload, it is
 *   committed to the disk (fsync, rename), so the next request is a disk hit.
 * - **Refs** (`get`, `put`): written to disk and bucket; read from the bucket
 *   (the fleet's shared view, with the freshness carried in each entry, so
 *   the bound is the same as on one disk), falling back to the disk copy,
 *   which is refreshed from what the bucket returned.
 * - **Commit**: the verified archive goes to disk first, then to the bucket
 *   (signed with its verified sha256); a bucket failure leaves it on disk.
 * - **Delete** and **list** are the local tier's: pruning the quota or
 *   dropping a bad local copy never removes anything from the bucket.
 *
 * While the bucket fails ({@link BucketHealth}), everything is served from
 * the local tier alone and nothing waits on the bucket.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { DiskStorage } from "../cache/disk_storage.ts";
import type { ObjectInfo, OpenObject, Storage, TierStats } from "../cache/storage.ts";
import { SMALL_OBJECT_MAX_BYTES } from "../cache/storage.ts";
import { createHash } from "../deps/crypto.ts";
import type { AccessMarks } from "./access_marks.ts";
import type { BucketHealth } from "./bucket_health.ts";
import { S3Error } from "./s3_client.ts";
import { identityOf, type S3Object } from "./s3_object.ts";
import type { S3Storage } from "./s3_storage.ts";

/** Told about every archive the local tier got from the bucket (inventory, quota). */
export type FilledListener = (key: string, size: number) => void;

const DOWN = Symbol("bucket down");

/** Bad bucket objects remembered at most (each entry is a key and an ETag). */
const BAD_MAX = 4096;

function shared(key: string): boolean {
  return key.startsWith("refs/") || key.startsWith("packages/");
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A local {@link DiskStorage} in front of an {@link S3Storage}. */
export class TieredStorage implements Storage {
  readonly stats: TierStats = {
    fills: 0,
    fillBytes: 0,
    uploads: 0,
    uploadBytes: 0,
    uploadFailures: 0,
  };
  /** Records archive use in the bucket for its retention (set by mod.ts). */
  marks: AccessMarks | undefined;
  readonly #jobs = new Set<Promise<void>>();
  readonly #filled: FilledListener[] = [];
  /** Keys being filled from the bucket now: one fill per key. */
  readonly #filling = new Set<string>();
  /** Bucket objects that failed their hash (key → identity): read as absent while unchanged. */
  readonly #bad = new Map<string, string>();

  /**
   * @param maxFillBytes objects larger than this are streamed from the bucket
   *   without being kept on the local tier (the archive size limit, or the
   *   whole quota when that is smaller)
   */
  constructor(
    readonly local: DiskStorage,
    readonly bucket: S3Storage,
    readonly health: BucketHealth,
    readonly log: Logger,
    readonly maxFillBytes = Infinity,
  ) {}

  /** Calls `l` after each archive filled into the local tier from the bucket. */
  onFilled(l: FilledListener): void {
    this.#filled.push(l);
  }

  /** Runs `f` on the bucket unless it is down; a failure marks it down. */
  async #remote<T>(f: () => Promise<T>): Promise<T | typeof DOWN> {
    if (!this.health.usable) return DOWN;
    try {
      const r = await f();
      this.health.succeed();
      return r;
    } catch (e) {
      if (!(e instanceof S3Error)) throw e;
      this.health.fail(e);
      return DOWN;
    }
  }

  #track(job: Promise<void>): void {
    this.#jobs.add(job);
    job.finally(() => this.#jobs.delete(job)).catch(() => {});
  }

  #mark(key: string): void {
    const marks = this.marks;
    if (!marks?.due(key) || !this.health.usable) return;
    // Off the serving path; a failure only makes the archive look older.
    this.#track(
      marks.write(key).catch((e) => {
        this.log.warn("cannot record an archive's use in the bucket", {
          bucket: this.bucket.locate(key),
          error: (e as Error).message,
        });
      }),
    );
  }

  locate(key: string): string {
    return this.local.locate(key);
  }

  async get(key: string, maxBytes = SMALL_OBJECT_MAX_BYTES): Promise<Uint8Array | undefined> {
    if (!shared(key)) return await this.local.get(key, maxBytes);
    const got = await this.#remote(() => this.bucket.get(key, maxBytes));
    if (got === DOWN || got === undefined) return await this.local.get(key, maxBytes);
    // Kept on disk too, so a bucket outage still finds it.
    const mine = await this.local.get(key, maxBytes);
    if (!mine || !equalBytes(mine, got)) {
      await this.local.put(key, got).catch((e) =>
        this.log.warn("cannot keep a shared document on the local disk", {
          path: this.local.locate(key),
          error: (e as Error).message,
        })
      );
    }
    return got;
  }

  async put(key: string, data: Uint8Array | string): Promise<void> {
    await this.local.put(key, data);
    if (shared(key)) await this.#remote(() => this.bucket.put(key, data));
  }

  async open(key: string): Promise<OpenObject | undefined> {
    const here = await this.local.open(key);
    if (!key.startsWith("packages/")) return here;
    // Served from either tier, it counts as used for the bucket's retention.
    if (here) {
      this.#mark(key);
      return here;
    }
    const there = await this.#remote(() => this.bucket.open(key));
    if (there === DOWN || there === undefined) return undefined;
    if (this.#bad.get(key) === there.identity) return undefined;
    this.#mark(key);
    return new FillingObject(there as S3Object, this);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const here = await this.local.stat(key);
    if (here || !shared(key)) return here;
    const bad = this.#bad.get(key);
    if (bad !== undefined) {
      // Found bad and not replaced since: not there (a download must not
      // take it for a commit of another replica).
      const h = await this.#remote(() => this.bucket.head(key));
      if (h === DOWN || h === undefined || identityOf(h) === bad) return undefined;
      return { key, size: h.size, mtime: h.lastModified, atime: null };
    }
    const there = await this.#remote(() => this.bucket.stat(key));
    return there === DOWN ? undefined : there;
  }

  list(prefix: string): AsyncGenerator<ObjectInfo> {
    return this.local.list(prefix);
  }

  tempPath(hint: string): string {
    return this.local.tempPath(hint);
  }

  async commit(tempPath: string, key: string, sha256?: string): Promise<void> {
    if (!shared(key)) return await this.local.commit(tempPath, key);
    // Opened before the rename: the verified bytes stay readable through the
    // handle even if the quota evicts the file before the upload ends.
    using file = await Deno.open(tempPath, { read: true });
    await this.local.commit(tempPath, key);
    const path = this.local.locate(key);
    let r: void | typeof DOWN;
    try {
      // One found bad is replaced whatever sha256 it claims to have.
      const bad = this.#bad.has(key);
      r = await this.#remote(() => this.bucket.uploadFile(file, key, sha256, bad));
      if (r !== DOWN) this.#bad.delete(key);
    } catch (e) {
      this.stats.uploadFailures++;
      // Not the bucket's fault (a local read failed): the local commit stands.
      this.log.warn("cannot upload an archive to the bucket", {
        path,
        error: (e as Error).message,
      });
      return;
    }
    if (r !== DOWN) {
      this.stats.uploads++;
      this.stats.uploadBytes += (await file.stat().catch(() => ({ size: 0 }))).size;
      this.marks?.wrote(key);
    } else {
      this.stats.uploadFailures++;
      this.log.warn("archive kept on the local tier only; the bucket did not take it", {
        path,
        bucket: this.bucket.locate(key),
        error: this.health.reason,
      });
    }
  }

  delete(key: string): Promise<boolean> {
    return this.local.delete(key);
  }

  /**
   * Remembers a bucket object that failed its hash: until it changes (a
   * verified upload replaces it), `open` reads it as absent, so the archive
   * is fetched and verified again instead of cut again.
   */
  markBad(key: string, identity: string): void {
    this.#bad.delete(key);
    this.#bad.set(key, identity);
    if (this.#bad.size > BAD_MAX) this.#bad.delete(this.#bad.keys().next().value!);
  }

  /** Starts a fill of `key` unless one runs; false when one does. */
  claimFill(key: string): boolean {
    if (this.#filling.has(key)) return false;
    this.#filling.add(key);
    return true;
  }

  /**
   * Finishes a fill: fsyncs and closes the complete temp file and commits it
   * to the local tier, in the background (off the serving path; `settle`
   * waits for it). Without `tmp`, the fill was given up.
   */
  finishFill(key: string, tmp: string | undefined, size: number, file?: Deno.FsFile): void {
    if (!tmp) {
      this.#filling.delete(key);
      return;
    }
    this.#track((async () => {
      try {
        try {
          await file?.syncData();
        } finally {
          file?.close();
        }
        await this.local.commit(tmp, key);
        this.stats.fills++;
        this.stats.fillBytes += size;
        for (const l of this.#filled) l(key, size);
      } catch (e) {
        await Deno.remove(tmp).catch(() => {});
        this.log.warn("cannot keep an archive from the bucket on the local tier", {
          path: this.local.locate(key),
          error: (e as Error).message,
        });
      } finally {
        this.#filling.delete(key);
      }
    })());
  }

  /** Waits for local fills in flight. */
  async settle(): Promise<void> {
    while (this.#jobs.size) await Promise.allSettled([...this.#jobs]);
  }
}

/**
 * A bucket object being served. Every byte read in order from the start is
 * hashed (reads at other positions — the fingerprint's tail, ranges — do not
 * disturb it: only bytes at the end of what was hashed count) and, while
 * filling, also written to a local temp file. The bucket is shared with
 * whoever can write to it, so it vouches for nothing: the read that reaches
 * the end checks the whole hash against the archive's verified record
 * ({@link expect}; the `x-amz-meta-sha256` stored beside the object only when
 * no record was named) and throws on a mismatch, so the client sees a cut
 * transfer instead of a complete wrong body, the local tier keeps nothing,
 * and the tier reads that object as absent from then on (the next request
 * fetches and verifies the archive again, replacing it in the bucket).
 */
export class FillingObject implements OpenObject {
  readonly key: string;
  readonly size: number;
  readonly mtime: Date | null;
  readonly atime: Date | null = null;
  readonly identity: string;
  #pos = 0;
  /** Bytes hashed so far, all in order from the start. */
  #written = 0;
  #file: Deno.FsFile | undefined;
  #tmp: string | undefined;
  #hash = createHash("sha256");
  /** The sha256 the whole object must have (lowercase hex). */
  #expected: string | undefined;
  /** Whether {@link expect} named the record's sha256. */
  #named = false;
  /** Set once every byte was hashed: whether they matched. */
  #verdict: boolean | undefined;
  /** False once filling was given up (another fill runs, a write failed). */
  #filling: boolean;
  #closed = false;

  constructor(readonly object: S3Object, readonly tier: TieredStorage) {
    this.key = object.key;
    this.size = object.size;
    this.mtime = object.mtime;
    this.identity = object.identity;
    this.#expected = object.head.sha256?.toLowerCase();
    this.#filling = object.size <= tier.maxFillBytes && tier.claimFill(this.key);
  }

  /** The archive's verified sha256 (its record): the authority, not the bucket's metadata. */
  expect(sha256: string): void {
    this.#expected = sha256.toLowerCase();
    this.#named = true;
  }

  /**
   * Whether the sha256 stored beside the object at upload is the archive's
   * verified one: the least a redirect to the bucket needs, since the client
   * then reads the object without this replica checking a byte.
   */
  get vouched(): boolean {
    return this.#named && this.object.head.sha256?.toLowerCase() === this.#expected;
  }

  async read(buf: Uint8Array): Promise<number | null> {
    if (this.#verdict === false) throw this.#mismatch();
    const at = this.#pos;
    const n = await this.object.read(buf);
    if (n === null) return null;
    this.#pos += n;
    if (at <= this.#written && at + n > this.#written) {
      const fresh = buf.subarray(this.#written - at, n);
      this.#hash.update(fresh);
      this.#written += fresh.length;
      if (this.#filling) await this.#append(fresh);
      // The bytes that would complete a wrong body are never handed out.
      if (this.#written === this.size && !this.#judge()) throw this.#mismatch();
    }
    return n;
  }

  /** Whether the whole object hashed to what was expected (logs and forgets it if not). */
  #judge(): boolean {
    const got = this.#hash.digest("hex");
    this.#verdict = this.#expected !== undefined && got === this.#expected;
    if (this.#verdict) return true;
    this.#giveUp();
    this.tier.markBad(this.key, this.identity);
    this.tier.log.warn(
      "bucket object does not hash to the sha256 recorded for the archive; not served whole, not kept",
      { bucket: this.tier.bucket.locate(this.key), expected: this.#expected ?? "none", got },
    );
    return false;
  }

  #mismatch(): S3Error {
    return new S3Error(
      `${this.tier.bucket.locate(this.key)} does not hash to the archive's verified sha256`,
      0,
    );
  }

  async #append(bytes: Uint8Array): Promise<void> {
    try {
      if (!this.#file) {
        this.#tmp = this.tier.tempPath(this.key.split("/").pop() ?? "fill");
        this.#file = await Deno.open(this.#tmp, { write: true, createNew: true });
      }
      let off = 0;
      while (off < bytes.length) off += await this.#file.write(bytes.subarray(off));
    } catch (e) {
      this.#giveUp();
      this.tier.log.warn("cannot fill the local tier from the bucket", {
        path: this.tier.locate(this.key),
        error: (e as Error).message,
      });
    }
  }

  #giveUp(): void {
    if (!this.#filling) return;
    this.#filling = false;
    try {
      this.#file?.close();
    } catch { /* closed */ }
    if (this.#tmp) Deno.remove(this.#tmp).catch(() => {});
    this.#file = undefined;
    this.#tmp = undefined;
    this.tier.finishFill(this.key, undefined, 0);
  }

  async seek(offset: number, whence: Deno.SeekMode): Promise<number> {
    const p = await this.object.seek(offset, whence);
    this.#pos = p;
    // Back to the start: a new pass, read by a new GET that may not return
    // the bytes of the last one. What is checked must be what this pass
    // hands out, so the hash (and the fill) start over — unless the object
    // was already found bad, which stays so.
    if (p === 0 && this.#written > 0 && this.#verdict !== false) await this.#restart();
    return p;
  }

  async #restart(): Promise<void> {
    this.#hash = createHash("sha256");
    this.#written = 0;
    this.#verdict = undefined;
    if (!this.#file) return;
    try {
      await this.#file.truncate(0);
      await this.#file.seek(0, Deno.SeekMode.Start);
    } catch (e) {
      this.#giveUp();
      this.tier.log.warn("cannot fill the local tier from the bucket", {
        path: this.tier.locate(this.key),
        error: (e as Error).message,
      });
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.object.close();
    if (!this.#filling) return;
    if (this.#verdict !== true || !this.#file) return this.#giveUp();
    const file = this.#file;
    const tmp = this.#tmp!;
    this.#file = undefined;
    this.#filling = false;
    this.tier.finishFill(this.key, tmp, this.size, file);
  }

  markServing(): Promise<void> {
    return Promise.resolve();
  }
}
