/**
 * The effective configuration as a document in `repoxy.json`'s own key names
 * (defaults filled, overrides applied, paths absolute, durations as "30s",
 * sizes in bytes), for `repoxy config check`. Secrets never appear: tokens,
 * the URL-signing key and token hashes are replaced by {@link REDACTED}
 * whatever their source (literal, `env:`, `file:`), and `publicUrl` loses any
 * userinfo and query; `via.token` and `storage.credentials` are redacted too.
 * A new config section adds its keys here too.
 * @module
 */
import { redactUrl } from "../base/redact.ts";
import type { Config, S3StorageConfig } from "./config.ts";

/** What stands in for a secret. */
export const REDACTED = "<redacted>";

const UNITS: Array<[string, number]> = [["h", 3_600_000], ["m", 60_000], ["s", 1000]];

/** Milliseconds as the largest whole unit: 30000 → "30s", 86400000 → "24h", 1500 → "1500ms". */
export function formatDurationMs(ms: number): string {
  for (const [unit, size] of UNITS) {
    if (ms > 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** The effective config, secrets redacted, in the file's key names. */
export function effectiveConfig(c: Config): Record<string, unknown> {
  const l = c.limits;
  const out: Record<string, unknown> = {
    listen: c.listen.hostname.includes(":")
      ? `[${c.listen.hostname}]:${c.listen.port}`
      : `${c.listen.hostname}:${c.listen.port}`,
  };
  if (c.tls) out.tls = { cert: c.tls.cert, key: c.tls.key, http2: c.tls.http2 };
  out.cacheDir = c.cacheDir;
  out.upstreams = Object.fromEntries(
    [...c.upstreams.values()].map((u) => {
      const entry: Record<string, unknown> = { url: u.url };
      if (u.token !== undefined) entry.token = REDACTED;
      // Public keys are not secret, but a whole armored block helps nobody here.
      entry.trustedKeys = u.trustedKeys.map((k) => `<armored key, ${k.length} characters>`);
      return [u.hostname, entry];
    }),
  );
  out.defaultUpstream = c.defaultUpstream;
  out.metadataTtl = formatDurationMs(c.metadataTtlMs);
  out.upstreamTimeout = formatDurationMs(c.upstreamTimeoutMs);
  out.offline = c.offline;
  // A public URL may carry userinfo or a query (it is the operator's to write): not printed.
  if (c.publicUrl !== undefined) out.publicUrl = redactUrl(c.publicUrl);
  out.logFormat = c.logFormat;
  if (c.maxCacheSizeBytes !== undefined) out.maxCacheSize = c.maxCacheSizeBytes;
  out.limits = {
    metadataMemory: l.metadataMemoryBytes,
    metadataDocument: l.metadataDocumentBytes,
    moduleAnswer: l.moduleAnswerBytes,
    platformConcurrency: l.platformConcurrency,
    archiveSize: l.archiveBytes,
    minTransferRate: l.minTransferRate,
    transferRateWindow: formatDurationMs(l.transferRateWindowMs),
    headerTimeout: formatDurationMs(l.headerTimeoutMs),
    idleTimeout: formatDurationMs(l.idleTimeoutMs),
    maxConnections: l.maxConnections,
    negativeTtl: formatDurationMs(l.negativeTtlMs),
    negativeEntries: l.negativeEntries,
  };
  out.allowPrivateNetworks = c.egress.allowPrivateNetworks;
  out.egressAllow = c.egress.egressAllow;
  if (c.auth) {
    const auth: Record<string, unknown> = {
      // Only the hash is kept, but a hash of a short token can be guessed offline.
      tokens: c.auth.tokens.map((t) => ({ ...t, sha256: REDACTED })),
      protectOps: c.auth.protectOps,
      urlTtl: formatDurationMs(c.auth.urlTtlMs),
    };
    if (c.auth.urlKey !== undefined) auth.urlKey = REDACTED;
    out.auth = auth;
  }
  out.backgroundVerify = {
    rate: c.backgroundVerify.bytesPerSecond,
    interval: formatDurationMs(c.backgroundVerify.intervalMs),
  };
  if (c.via) {
    out.via = c.via.token === undefined ? { url: c.via.url } : { url: c.via.url, token: REDACTED };
  }
  if (c.storage) out.storage = effectiveStorage(c.storage);
  return out;
}

/** `storage` in the file's key names; every credential redacted, even the access key id. */
function effectiveStorage(s: S3StorageConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    kind: s.kind,
    endpoint: s.endpoint,
    bucket: s.bucket,
    prefix: s.prefix,
    region: s.region,
    pathStyle: s.pathStyle,
    redirect: s.redirect,
    redirectTtl: formatDurationMs(s.redirectTtlMs),
    multipartThreshold: s.multipartThresholdBytes,
    partSize: s.partSizeBytes,
    abandonedUploadAge: formatDurationMs(s.abandonedUploadAgeMs),
    timeout: formatDurationMs(s.timeoutMs),
    leaseTtl: formatDurationMs(s.leaseTtlMs),
    leaseWait: formatDurationMs(s.leaseWaitMs),
    replicaId: s.replicaId,
  };
  if (s.retention) {
    const age = s.retention.maxAgeMs;
    out.retention = {
      ...(s.retention.maxBytes !== undefined ? { maxSize: s.retention.maxBytes } : {}),
      // Whole days as days ("90d"), the unit retention is written in.
      ...(age === undefined
        ? {}
        : { maxAge: age % 86_400_000 === 0 ? `${age / 86_400_000}d` : formatDurationMs(age) }),
    };
  }
  if (s.credentials) {
    out.credentials = {
      accessKeyId: REDACTED,
      secretAccessKey: REDACTED,
      ...(s.credentials.sessionToken !== undefined ? { sessionToken: REDACTED } : {}),
    };
  }
  return out;
}
