/**
 * The `storage` section: where `refs/` and `packages/` live besides the
 * local cache directory. Absent (or `{ "kind": "disk" }`): the local disk
 * alone, as always. `{ "kind": "s3", … }`: a bucket on S3-compatible object
 * storage shared by every replica, with the local cache directory as a
 * read-through tier in front of it.
 * @module
 */
import { MAX_TIMER_MS, parseDurationMs } from "../base/duration.ts";
import { parseSize } from "../base/size.ts";

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

const KEYS = [
  "kind",
  "endpoint",
  "bucket",
  "prefix",
  "region",
  "pathStyle",
  "credentials",
  "redirect",
  "redirectTtl",
  "multipartThreshold",
  "partSize",
  "abandonedUploadAge",
  "timeout",
  "leaseTtl",
  "leaseWait",
  "replicaId",
  "retention",
];

/** S3's smallest part (all but the last). */
export const MIN_PART_BYTES = 5 * 2 ** 20;

type ErrorCtor = new (message: string) => Error;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Parses `storage`. `secret` resolves `env:`/`file:` values (the same rules
 * as upstream tokens).
 */
export async function parseStorage(
  raw: unknown,
  Err: ErrorCtor,
  secret: (value: string, key: string) => Promise<string>,
): Promise<StorageConfig> {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) throw new Err(`"storage" must be an object`);
  for (const k of Object.keys(raw)) {
    if (!KEYS.includes(k)) throw new Err(`unknown key "storage.${k}" (known: ${KEYS.join(", ")})`);
  }
  if (raw.kind === "disk" || raw.kind === undefined) {
    if (Object.keys(raw).some((k) => k !== "kind")) {
      throw new Err(`"storage" with kind "disk" takes no other keys`);
    }
    return undefined;
  }
  if (raw.kind !== "s3") {
    throw new Err(`"storage.kind" must be "disk" or "s3", got ${JSON.stringify(raw.kind)}`);
  }
  const str = (k: string, dflt?: string): string => {
    const v = raw[k] ?? dflt;
    if (typeof v !== "string" || v === "") {
      throw new Err(`"storage.${k}" must be a non-empty string`);
    }
    return v;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = raw[k] ?? dflt;
    if (typeof v !== "boolean") throw new Err(`"storage.${k}" must be true or false`);
    return v;
  };
  const size = (k: string, dflt: number, min: number): number => {
    if (raw[k] === undefined) return dflt;
    const n = parseSize(raw[k]);
    if (n === undefined || n < min) {
      throw new Err(`"storage.${k}" must be a size of at least ${min} bytes, such as "16MiB"`);
    }
    return n;
  };
  const duration = (k: string, dflt: number): number => {
    if (raw[k] === undefined) return dflt;
    const ms = parseDurationMs(raw[k]);
    if (ms === undefined || ms <= 0 || ms > MAX_TIMER_MS) {
      throw new Err(`"storage.${k}" must be a duration such as "10s" or "5m"`);
    }
    return ms;
  };
  const endpoint = str("endpoint");
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Err(`"storage.endpoint" must be an http(s) URL, got ${JSON.stringify(endpoint)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Err(`"storage.endpoint" must be an http(s) URL`);
  }
  if (url.search || url.hash || url.username) {
    throw new Err(`"storage.endpoint" must have no query, fragment or user`);
  }
  const bucket = str("bucket");
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new Err(`"storage.bucket" is not a valid bucket name: ${JSON.stringify(bucket)}`);
  }
  const prefix = raw.prefix === undefined ? "" : String(raw.prefix);
  if (typeof raw.prefix !== "undefined" && typeof raw.prefix !== "string") {
    throw new Err(`"storage.prefix" must be a string`);
  }
  if (
    prefix && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(prefix) ||
    /(^|\/)\.\.?(\/|$)/.test(prefix)
  ) {
    throw new Err(
      `"storage.prefix" must be "/"-separated names of letters, digits, ".", "_", "-" (no leading or trailing "/")`,
    );
  }
  let credentials: S3StorageConfig["credentials"];
  if (raw.credentials !== undefined) {
    const c = raw.credentials;
    if (!isObject(c)) throw new Err(`"storage.credentials" must be an object`);
    for (const k of Object.keys(c)) {
      if (!["accessKeyId", "secretAccessKey", "sessionToken"].includes(k)) {
        throw new Err(
          `unknown key "storage.credentials.${k}" (known: accessKeyId, secretAccessKey, sessionToken)`,
        );
      }
    }
    const get = async (k: string) => {
      const v = c[k];
      if (typeof v !== "string" || v === "") {
        throw new Err(
          `"storage.credentials.${k}" must be a non-empty string (literal, env: or file:)`,
        );
      }
      return await secret(v, `storage.credentials.${k}`);
    };
    credentials = {
      accessKeyId: await get("accessKeyId"),
      secretAccessKey: await get("secretAccessKey"),
      ...(c.sessionToken !== undefined ? { sessionToken: await get("sessionToken") } : {}),
    };
  }
  const partSizeBytes = size("partSize", 16 * 2 ** 20, MIN_PART_BYTES);
  const config: S3StorageConfig = {
    kind: "s3",
    endpoint: endpoint.replace(/\/+$/, ""),
    bucket,
    prefix,
    region: str("region", "us-east-1"),
    pathStyle: bool("pathStyle", true),
    redirect: bool("redirect", false),
    redirectTtlMs: duration("redirectTtl", 300_000),
    multipartThresholdBytes: size("multipartThreshold", 64 * 2 ** 20, partSizeBytes),
    partSizeBytes,
    abandonedUploadAgeMs: duration("abandonedUploadAge", 24 * 3_600_000),
    timeoutMs: duration("timeout", 10_000),
    leaseTtlMs: duration("leaseTtl", 15_000),
    leaseWaitMs: duration("leaseWait", 30_000),
    replicaId: "",
  };
  const replicaId = raw.replicaId === undefined ? defaultReplicaId() : raw.replicaId;
  if (typeof replicaId !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(replicaId)) {
    throw new Err(`"storage.replicaId" must be 1 to 64 letters, digits, ".", "_" or "-"`);
  }
  config.replicaId = replicaId;
  if (raw.retention !== undefined) config.retention = parseRetention(raw.retention, Err);
  // The bucket's Last-Modified has one-second precision (cache/fleet_lease.ts).
  if (config.leaseTtlMs < 3_000) throw new Err(`"storage.leaseTtl" must be at least 3s`);
  if (credentials) config.credentials = credentials;
  if (config.redirectTtlMs > 7 * 24 * 3_600_000) {
    throw new Err(`"storage.redirectTtl" must be at most 7 days (S3's limit for presigned URLs)`);
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

function parseRetention(raw: unknown, Err: ErrorCtor): BucketRetention {
  if (!isObject(raw)) throw new Err(`"storage.retention" must be an object`);
  const out: BucketRetention = {};
  for (const k of Object.keys(raw)) {
    if (k !== "maxSize" && k !== "maxAge") {
      throw new Err(`unknown key "storage.retention.${k}" (known: maxSize, maxAge)`);
    }
  }
  if (raw.maxSize !== undefined) {
    const n = parseSize(raw.maxSize);
    if (n === undefined || n <= 0) {
      throw new Err(`"storage.retention.maxSize" must be a size such as "500GB"`);
    }
    out.maxBytes = n;
  }
  if (raw.maxAge !== undefined) {
    // Days are the natural unit of retention; the shared parser stops at hours.
    const days = typeof raw.maxAge === "string" ? /^(\d+)d$/.exec(raw.maxAge.trim()) : null;
    const ms = days ? Number(days[1]) * 86_400_000 : parseDurationMs(raw.maxAge);
    // At least a day: recency across replicas is known to a day (access marks).
    if (ms === undefined || ms < 86_400_000) {
      throw new Err(`"storage.retention.maxAge" must be a duration of at least 1d, such as "90d"`);
    }
    out.maxAgeMs = ms;
  }
  return out;
}
