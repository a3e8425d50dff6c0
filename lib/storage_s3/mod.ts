/**
 * Opens the shared bucket of `storage.kind: "s3"` and the local tier in
 * front of it. The one module of this folder the app imports, and it does so
 * dynamically, only when the config names a bucket: the default (disk)
 * start-up and memory do not pay for the S3 code.
 *
 * At start the bucket is pinged and multipart uploads older than
 * `storage.abandonedUploadAge` (a replica died mid-upload) are aborted, both
 * in the background: a bucket that is down delays nothing, the replica
 * serves its local tier and says so in `/-/readyz` and the log.
 * @module
 */
import type { Logger } from "../base/log.ts";
import type { DiskStorage } from "../cache/disk_storage.ts";
import type { CoordinationStore } from "../cache/coordination.ts";
import type { FleetStats } from "../cache/fleet_lease.ts";
import type { BucketFigures as BaseBucketFigures, OpenObject, Storage } from "../cache/storage.ts";
import type { S3StorageConfig } from "../config/storage_config.ts";
import { AccessMarks } from "./access_marks.ts";
import { BucketHealth } from "./bucket_health.ts";
import { awsCredentialChain, fixedCredentials } from "./credentials.ts";
import { S3Client } from "./s3_client.ts";
import { S3Storage } from "./s3_storage.ts";
import { type FilledListener, FillingObject, TieredStorage } from "./tiered_storage.ts";

/** A readiness ping waits at most this long (readyz must answer quickly). */
const PING_TIMEOUT_MS = 2_000;

/** What `/-/readyz` and the archive route see of the bucket. */
export interface BucketView {
  /** Whether the bucket answers now (pinged at most once a second). */
  readiness(): Promise<{ ok: boolean; kind: "s3"; bucket: string; reason?: string }>;
  /**
   * In redirect mode, a presigned GET for an archive being served from the
   * bucket; undefined otherwise (served from the local tier, or streamed).
   */
  redirect(object: OpenObject): Promise<string | undefined>;
  /** What this replica sees of the bucket and did with it (status page, metrics). */
  figures(): BucketFigures;
}

/** One replica's view of the bucket, with its fleet lease outcomes once the leases run. */
export interface BucketFigures extends BaseBucketFigures {
  leases?: FleetStats;
}

/** The bucket, its health and the tier built on it. */
export interface BucketTier extends BucketView {
  readonly bucket: S3Storage;
  readonly health: BucketHealth;
  /** The tiered storage over the local cache directory (see openCacheDir's `tier`). */
  wrap(local: DiskStorage): Storage;
  /** Calls `l` after each archive the local tier got from the bucket. */
  onFilled(l: FilledListener): void;
  /** The fleet lease settings of this bucket (store, TTL, wait, replica id). */
  fleetTuning(): { store: CoordinationStore; ttlMs: number; maxWaitMs: number; replica: string };
  /** The lease counters shown with {@link BucketView.figures}. */
  leases: FleetStats | undefined;
  /** Keeps `leases` for the figures; returns what `/-/metrics` reads (ops/storage_metrics.ts). */
  observed(leases: FleetStats | undefined): { bucket: () => BucketFigures; fleet?: FleetStats };
  /** Waits for background work (fills, the start-up sweep). */
  settle(): Promise<void>;
}

/** Opens the bucket of `config` (nothing is sent before the background start-up jobs). */
export function openBucketTier(
  config: S3StorageConfig,
  deps: { log: Logger; now?: () => number; fetch?: typeof fetch; maxFillBytes?: number },
): BucketTier {
  const { log } = deps;
  const client = new S3Client({
    endpoint: config.endpoint,
    bucket: config.bucket,
    region: config.region,
    pathStyle: config.pathStyle,
    credentials: config.credentials ? fixedCredentials(config.credentials) : awsCredentialChain(),
    timeoutMs: config.timeoutMs,
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
  });
  let tiered: TieredStorage | undefined;
  const listeners: FilledListener[] = [];
  const bucket = new S3Storage(client, {
    prefix: config.prefix,
    tempPath: (hint) => {
      if (!tiered) throw new Error("the bucket's temp files need the local tier");
      return tiered.local.tempPath(hint);
    },
    multipartThresholdBytes: config.multipartThresholdBytes,
    partSizeBytes: config.partSizeBytes,
  });
  const where = client.where(config.prefix ? `${config.prefix}/` : "");
  const health = new BucketHealth(where, log, async () => {
    const a = await client.call("HEAD", "", { signal: AbortSignal.timeout(PING_TIMEOUT_MS) });
    if (a.status !== 200) throw client.error("HEAD", "", a);
  }, deps.now);
  const marks = new AccessMarks(bucket, config.replicaId, deps.now);
  const startup = (async () => {
    await health.check();
    if (!health.ok) return;
    try {
      const n = await bucket.sweepUploads(config.abandonedUploadAgeMs);
      if (n > 0) {
        log.info("aborted abandoned multipart uploads in the bucket", { count: n, bucket: where });
      }
    } catch (e) {
      log.warn("cannot sweep abandoned multipart uploads", {
        bucket: where,
        error: (e as Error).message,
      });
    }
  })();
  const self: BucketTier = {
    bucket,
    health,
    wrap(local) {
      tiered = new TieredStorage(local, bucket, health, log, deps.maxFillBytes);
      tiered.marks = marks;
      for (const l of listeners) tiered.onFilled(l);
      return tiered;
    },
    onFilled(l) {
      listeners.push(l);
      tiered?.onFilled(l);
    },
    leases: undefined,
    observed(leases) {
      self.leases = leases;
      return { bucket: () => self.figures(), ...(leases ? { fleet: leases } : {}) };
    },
    fleetTuning() {
      return {
        store: bucket.coordination(),
        ttlMs: config.leaseTtlMs,
        maxWaitMs: config.leaseWaitMs,
        replica: config.replicaId,
      };
    },
    figures() {
      return {
        ...(self.leases ? { leases: self.leases } : {}),
        kind: "s3" as const,
        bucket: where,
        replicaId: config.replicaId,
        ...health.snapshot(),
        reachable: health.ok,
        tier: tiered?.stats ??
          { fills: 0, fillBytes: 0, uploads: 0, uploadBytes: 0, uploadFailures: 0 },
      };
    },
    async readiness() {
      const r = await health.check();
      return { ...r, kind: "s3" as const, bucket: where };
    },
    async redirect(object) {
      // Only an object whose upload recorded the verified sha256: another
      // (planted, altered) one is streamed, and checked on the way.
      if (!config.redirect || !(object instanceof FillingObject) || !object.vouched) {
        return undefined;
      }
      // Whole seconds, at least one: S3 refuses X-Amz-Expires=0.
      return await bucket.presign(object.key, Math.max(1, Math.ceil(config.redirectTtlMs / 1000)));
    },
    async settle() {
      await startup;
      await tiered?.settle();
    },
  };
  return self;
}
