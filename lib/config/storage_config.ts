/**
 * The `storage` section: where `refs/` and `packages/` live besides the
 * local cache directory. Absent (or `{ "kind": "disk" }`): the local disk
 * alone, as always. `{ "kind": "s3", … }`: a bucket on S3-compatible object
 * storage shared by every replica, with the local cache directory as a
 * read-through tier in front of it.
 * @module
 */
import * as v from "../deps/valibot.ts";
import { parseDurationMs } from "../base/duration.ts";
import { bool, duration, httpUrl, nonEmpty, size, str, strict, typeName } from "./fields.ts";

/** A bucket on S3-compatible object storage (`storage.kind: "s3"`). */
export interface S3StorageConfig {
  kind: "s3";
  /** Base URL of the S3 API (`https://s3.eu-west-1.amazonaws.com`, `http://rgw:7480`). */
  endpoint: string;
  bucket: string;
  /** Key prefix (no leading or trailing `/`; "" for the bucket's root). */
  prefix: string;
  /** Signing region (default `us-east-1`, which RGW and MinIO accept). */
  region: string;
  /** Path-style URLs `endpoint/bucket/key` (default true: works with every S3 implementation). */
  pathStyle: boolean;
  /** A fixed key pair (resolved from `env:`/`file:`); absent: the standard AWS credential chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Answer warm archives with a 302 to a presigned GET instead of streaming them. */
  redirect: boolean;
  /** How long a presigned GET stays valid, in ms (default 5 minutes). */
  redirectTtlMs: number;
  /** Archives larger than this are uploaded in parts (default 64 MiB). */
  multipartThresholdBytes: number;
  /** Size of one part (default 16 MiB; S3 needs at least 5 MiB). */
  partSizeBytes: number;
  /** Multipart uploads older than this are aborted by the start-up sweep (default 24 h). */
  abandonedUploadAgeMs: number;
  /** Timeout of one bucket request (not counting a streamed body), in ms (default 10 s). */
  timeoutMs: number;
  /** A fleet lease not renewed for this long (by the bucket's clock) is taken over (default 15 s). */
  leaseTtlMs: number;
  /** Longest a replica waits for another one's download before fetching itself (default 30 s). */
  leaseWaitMs: number;
  /**
   * Names this replica in its logs, lease bodies, metrics and status page
   * (default `<hostname>-<pid>`).
   */
  replicaId: string;
  /**
   * Bucket retention applied by `repoxy prune` (absent: the bucket keeps
   * everything). Each bound is optional.
   */
  retention?: BucketRetention;
}

/** How much the bucket keeps (`storage.retention`). */
export interface BucketRetention {
  /** Total archive bytes the bucket may hold; least recently used go first. */
  maxBytes?: number;
  /** Archives not used for this long (ms) are evicted. */
  maxAgeMs?: number;
}

/** The storage configuration: undefined for the local disk alone. */
export type StorageConfig = S3StorageConfig | undefined;

/** S3's smallest part (all but the last). */
export const MIN_PART_BYTES = 5 * 2 ** 20;

const SECRET = v.pipe(
  str("a non-empty string (literal, env: or file:)"),
  v.minLength(1, "must be a non-empty string (literal, env: or file:)"),
);

const DAY_MS = 24 * 3_600_000;

// Any positive duration up to the timer ceiling.
const positiveDuration = () => duration(1, "1ms");

/**
 * How long an archive may go unused in the bucket: a duration, also in days
 * ("90d": the natural unit of retention, which the shared parser stops short
 * of), at least a day (recency across replicas is known to a day).
 */
function retentionAge() {
  const msg = (i: { input: unknown }) =>
    `must be a duration such as "90d", "720h" or a number of seconds, got ${
      JSON.stringify(i.input)
    }`;
  return v.pipe(
    v.union([
      v.pipe(v.string(msg), v.regex(/^\s*\d+(\.\d+)?(ms|s|m|h|d)\s*$/, msg)),
      v.pipe(v.number(msg), v.minValue(0, msg)),
    ], msg),
    v.transform((x) =>
      typeof x === "string" && /d\s*$/.test(x) ? parseFloat(x) * DAY_MS : parseDurationMs(x)!
    ),
    v.minValue(DAY_MS, "must be at least 1d (recency across replicas is known to a day)"),
  );
}

const DISK = strict(
  { kind: v.optional(v.literal("disk")) },
  `storage with kind "disk" takes no other keys; known`,
);

const S3 = strict({
  kind: v.literal("s3"),
  endpoint: httpUrl(),
  bucket: v.pipe(
    str(),
    v.regex(
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      (i) => `is not a valid bucket name: ${JSON.stringify(i.input)}`,
    ),
  ),
  prefix: v.optional(v.pipe(
    str(),
    v.regex(
      // "/"-separated names, none of them "." or "..": a key never climbs out of the prefix.
      /^(?!(?:.*\/)?\.\.?(?:\/|$))([A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*)?$/,
      `must be "/"-separated names of letters, digits, ".", "_", "-" (no leading or trailing "/", no "." or "..")`,
    ),
  )),
  region: v.optional(nonEmpty()),
  pathStyle: v.optional(bool()),
  credentials: v.optional(strict({
    accessKeyId: SECRET,
    secretAccessKey: SECRET,
    sessionToken: v.optional(SECRET),
  })),
  redirect: v.optional(bool()),
  redirectTtl: v.optional(v.pipe(
    positiveDuration(),
    v.maxValue(7 * DAY_MS, "must be at most 7 days (S3's limit for presigned URLs)"),
  )),
  multipartThreshold: v.optional(size({ min: MIN_PART_BYTES, minText: "5MiB" })),
  partSize: v.optional(size({ min: MIN_PART_BYTES, minText: "5MiB (S3's smallest part)" })),
  abandonedUploadAge: v.optional(positiveDuration()),
  timeout: v.optional(positiveDuration()),
  // The bucket's Last-Modified has one-second precision (cache/fleet_lease.ts).
  leaseTtl: v.optional(duration(3_000, "3s")),
  leaseWait: v.optional(positiveDuration()),
  replicaId: v.optional(v.pipe(
    str(),
    v.regex(/^[A-Za-z0-9._-]{1,64}$/, `must be 1 to 64 letters, digits, ".", "_" or "-"`),
  )),
  retention: v.optional(strict({
    maxSize: v.optional(size({ min: 1, minText: "1 byte" })),
    maxAge: v.optional(retentionAge()),
  })),
});

// The kind picks the option, so a mistake is reported against that option's keys.
const STORAGE = v.variant(
  "kind",
  [DISK, S3],
  (i) =>
    // The same message serves a section that is no object and a kind that is neither.
    i.expected === "Object"
      ? `must be an object such as { "kind": "s3", ... }, got ${typeName(i.input)}`
      : `must be "disk" or "s3", got ${JSON.stringify(i.input)}`,
);

/** The config key this file owns, spread into the whole config's schema. */
export const STORAGE_ENTRIES = { storage: v.optional(STORAGE) };

type StorageInput = v.InferOutput<typeof STORAGE>;

/**
 * `storage` with defaults filled and credentials read (`secret` resolves
 * `env:`/`file:` values, the same rules as upstream tokens). Problems go to
 * `problem` by key path: the rule spanning two keys (`multipartThreshold` at
 * least `partSize`) is checked here, after the schema.
 */
export async function resolveStorage(
  raw: StorageInput | undefined,
  secret: (value: string, key: string) => Promise<string | undefined>,
  problem: (message: string) => void,
): Promise<StorageConfig> {
  if (raw === undefined || raw.kind !== "s3") return undefined;
  const partSizeBytes = raw.partSize ?? 16 * 2 ** 20;
  const config: S3StorageConfig = {
    kind: "s3",
    endpoint: raw.endpoint.replace(/\/+$/, ""),
    bucket: raw.bucket,
    prefix: raw.prefix ?? "",
    region: raw.region ?? "us-east-1",
    pathStyle: raw.pathStyle ?? true,
    redirect: raw.redirect ?? false,
    redirectTtlMs: raw.redirectTtl ?? 300_000,
    multipartThresholdBytes: raw.multipartThreshold ?? 64 * 2 ** 20,
    partSizeBytes,
    abandonedUploadAgeMs: raw.abandonedUploadAge ?? DAY_MS,
    timeoutMs: raw.timeout ?? 10_000,
    leaseTtlMs: raw.leaseTtl ?? 15_000,
    leaseWaitMs: raw.leaseWait ?? 30_000,
    replicaId: raw.replicaId ?? defaultReplicaId(),
  };
  if (raw.retention) {
    config.retention = {
      ...(raw.retention.maxSize !== undefined ? { maxBytes: raw.retention.maxSize } : {}),
      ...(raw.retention.maxAge !== undefined ? { maxAgeMs: raw.retention.maxAge } : {}),
    };
  }
  if (config.multipartThresholdBytes < partSizeBytes) {
    problem(
      `"storage.multipartThreshold" must be at least "storage.partSize" (${partSizeBytes} bytes)`,
    );
  }
  const c = raw.credentials;
  if (c !== undefined) {
    const id = await secret(c.accessKeyId, "storage.credentials.accessKeyId");
    const key = await secret(c.secretAccessKey, "storage.credentials.secretAccessKey");
    const session = c.sessionToken === undefined
      ? undefined
      : await secret(c.sessionToken, "storage.credentials.sessionToken");
    if (id === undefined || key === undefined) return undefined;
    if (c.sessionToken !== undefined && session === undefined) return undefined;
    config.credentials = {
      accessKeyId: id,
      secretAccessKey: key,
      ...(session !== undefined ? { sessionToken: session } : {}),
    };
  }
  return config;
}

/** `<hostname>-<pid>`, cut to the characters a replica id may hold. */
export function defaultReplicaId(): string {
  let host = "replica";
  try {
    host = Deno.hostname();
  } catch { /* no --allow-sys: keep the generic name */ }
  return `${host.replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 50)}-${Deno.pid}`;
}
