/**
 * The maintenance commands on the shared bucket: `repoxy verify` re-hashes
 * the bucket's archives and quarantines mismatches ({@link verifyBucket});
 * `repoxy prune` applies `storage.retention` ({@link pruneBucket}). Both
 * run next to live replicas and touch only `packages/`, `quarantine/` and
 * `access/` keys; the archive records under `refs/` stay (they hold the hash
 * verified against the signed SHA256SUMS, which the next fetch re-checks).
 * @module
 */
import type { ArchiveMeta } from "../cache/archive_meta.ts";
import { type CachedFile, scanPackages } from "../cache/scan.ts";
import { createHash } from "../deps/crypto.ts";
import { accessKey, packageKeyOfMark } from "./access_marks.ts";
import type { S3Object } from "./s3_object.ts";
import type { S3Storage } from "./s3_storage.ts";

/** One bucket archive that failed verification. */
export interface BucketMismatch {
  file: CachedFile;
  reason: string;
  /** Where it now is (`s3://…/quarantine/…`), or "nowhere (removed)" when the copy failed. */
  quarantined: string;
}

/** What {@link verifyBucket} found. */
export interface BucketVerifyReport {
  checked: number;
  bytes: number;
  mismatches: BucketMismatch[];
  /** Archives with neither a record nor a sha256 stored with them (not judged). */
  unrecorded: CachedFile[];
}

/** Options of {@link verifyBucket}. */
export interface BucketVerifyOptions {
  /** The archive's record as the fleet holds it (`refs/`). */
  readMeta: (f: CachedFile) => Promise<ArchiveMeta | undefined>;
  now?: () => number;
  onProgress?: (done: number, total: number, bytes: number) => void;
}

/** Every archive under `packages/` in the bucket, in key order. */
export async function listBucketArchives(bucket: S3Storage): Promise<CachedFile[]> {
  const out: CachedFile[] = [];
  for await (const f of scanPackages(bucket)) out.push(f);
  return out;
}

/** sha256 and length of the bucket object `key` as it reads now; undefined when gone. */
async function hashObject(
  bucket: S3Storage,
  key: string,
): Promise<{ sha256: string; size: number; recorded: string | undefined } | undefined> {
  const object = await bucket.open(key) as S3Object | undefined;
  if (!object) return undefined;
  try {
    const h = createHash("sha256");
    const buf = new Uint8Array(1 << 20);
    let size = 0;
    for (let n = await object.read(buf); n !== null; n = await object.read(buf)) {
      h.update(buf.subarray(0, n));
      size += n;
    }
    return { sha256: h.digest("hex"), size, recorded: object.head.sha256 };
  } finally {
    object.close();
  }
}

/**
 * Re-hashes every archive in the bucket against its record (size and
 * sha256; falling back to the sha256 stored with the object at upload). A
 * mismatch is copied (server side) to
 * `quarantine/{host}/{ns}/{type}/<file>.<time>` with a `.json` note beside,
 * then deleted from `packages/`: no replica fills its local tier from it
 * again, and the next request fetches a good copy from the upstream.
 */
export async function verifyBucket(
  bucket: S3Storage,
  opts: BucketVerifyOptions,
): Promise<BucketVerifyReport> {
  const now = opts.now ?? Date.now;
  const files = await listBucketArchives(bucket);
  const report: BucketVerifyReport = { checked: 0, bytes: 0, mismatches: [], unrecorded: [] };
  for (const [i, f] of files.entries()) {
    opts.onProgress?.(i, files.length, report.bytes);
    const meta = await opts.readMeta(f);
    const got = await hashObject(bucket, f.key);
    if (!got) continue; // evicted meanwhile
    const expected = meta?.sha256 ?? got.recorded;
    if (!expected) {
      report.unrecorded.push(f);
      continue;
    }
    report.checked++;
    report.bytes += got.size;
    let reason: string | undefined;
    if (meta && got.size !== meta.size) reason = `size is ${got.size} bytes, recorded ${meta.size}`;
    else if (got.sha256 !== expected.toLowerCase()) {
      reason = `sha256 is ${got.sha256}, recorded ${expected}`;
    }
    if (!reason) continue;
    const stamp = new Date(now()).toISOString().replace(/[:.]/g, "-");
    const dest = `quarantine/${f.key.replace(/^packages\//, "")}.${stamp}`;
    let quarantined = "nowhere (removed: the bucket refused the copy)";
    const copied = await bucket.copy(f.key, dest).then(() => true, () => false);
    if (copied) {
      quarantined = bucket.locate(dest);
      await bucket.put(
        dest + ".json",
        JSON.stringify(
          { key: bucket.bucketKey(f.key), reason, recorded: meta ?? null, quarantinedAt: now() },
          null,
          2,
        ) + "\n",
      );
    }
    // Removed even when the copy failed: no bad object stays under packages/.
    await bucket.delete(f.key);
    report.mismatches.push({ file: f, reason, quarantined });
  }
  opts.onProgress?.(files.length, files.length, report.bytes);
  return report;
}

/** One archive of the bucket with when the fleet last used it. */
export interface BucketEntry extends CachedFile {
  /** The later of its upload and its access marker (bucket clock). */
  usedAt: number;
}

/** What {@link pruneBucket} did. */
export interface BucketPruneReport {
  files: number;
  sizeBefore: number;
  sizeAfter: number;
  evicted: BucketEntry[];
  /** Archives that would have gone but a fleet lease is active for them. */
  leased: BucketEntry[];
}

/**
 * A lease object not renewed for this long (bucket clock) belongs to a
 * replica that died without anyone taking its archive over since: it no
 * longer protects the archive. A live holder renews every few seconds.
 */
export const DEAD_LEASE_MS = 3_600_000;

/** Options of {@link pruneBucket}: at least one bound. */
export interface BucketPruneOptions {
  maxBytes?: number | undefined;
  maxAgeMs?: number | undefined;
  dryRun?: boolean;
  /** The bucket's clock now (default: the `Date` of a request to it). */
  now?: number;
}

/**
 * Evicts archives from the bucket: those unused for longer than `maxAgeMs`,
 * then the least recently used until the rest takes at most `maxBytes`.
 * An archive with a live lease object (a replica is fetching it; one not
 * renewed for {@link DEAD_LEASE_MS} is a dead holder's) is never evicted.
 * An evicted archive's access marker goes with it.
 */
export async function pruneBucket(
  bucket: S3Storage,
  opts: BucketPruneOptions,
): Promise<BucketPruneReport> {
  const now = opts.now ?? await bucket.serverNow();
  const marks = new Map<string, number>();
  for await (const m of bucket.list("access/")) {
    if (m.mtime) marks.set(packageKeyOfMark(m.key), m.mtime.getTime());
  }
  const leased = new Set<string>();
  for await (const l of bucket.list("leases/")) {
    if (l.mtime && now - l.mtime.getTime() > DEAD_LEASE_MS) continue;
    leased.add("packages/" + l.key.replace(/^leases\//, "").replace(/\.lease$/, ""));
  }
  const entries: BucketEntry[] = (await listBucketArchives(bucket)).map((f) => ({
    ...f,
    usedAt: Math.max(f.mtime?.getTime() ?? 0, marks.get(f.key) ?? 0),
  }));
  // Oldest use first; the key breaks ties so runs are repeatable.
  entries.sort((a, b) => a.usedAt - b.usedAt || (a.key < b.key ? -1 : 1));
  const sizeBefore = entries.reduce((n, e) => n + e.size, 0);
  const report: BucketPruneReport = {
    files: entries.length,
    sizeBefore,
    sizeAfter: sizeBefore,
    evicted: [],
    leased: [],
  };
  for (const e of entries) {
    const old = opts.maxAgeMs !== undefined && now - e.usedAt > opts.maxAgeMs;
    const over = opts.maxBytes !== undefined && report.sizeAfter > opts.maxBytes;
    if (!old && !over) continue;
    if (leased.has(e.key)) {
      report.leased.push(e);
      continue;
    }
    if (!opts.dryRun) {
      await bucket.delete(e.key);
      await bucket.delete(accessKey(e.key));
    }
    report.evicted.push(e);
    report.sizeAfter -= e.size;
  }
  return report;
}
