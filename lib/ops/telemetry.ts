/**
 * What Repoxy measures about itself: the Prometheus metric set served at
 * `/-/metrics` and the per-upstream health shown on the status page. The
 * application calls the `on*` hooks; nothing here does I/O.
 * @module
 */
import type { CacheInventory } from "../cache/inventory.ts";
import type { CredentialsProblem, UpstreamRequestInfo } from "../upstream/client.ts";
import { Counter, Gauge, Histogram, Registry } from "./metrics.ts";
import { ProcessCollector, type ProcessSources } from "./process_metrics.ts";

/** The last good and the last bad exchange with one upstream. */
export interface UpstreamHealth {
  requests: number;
  failures: number;
  lastSuccess?: { at: number; status: number; url: string };
  lastFailure?: { at: number; status: number | "error"; url: string; error?: string };
  /**
   * The last time the registry refused Repoxy's own credentials (401/403 from
   * its origin), and whether its `upstreams.<host>.token` is missing or was
   * rejected. Stays until a later success shows it fixed.
   */
  credentials?: { at: number; status: number; problem: CredentialsProblem };
}

/** What the metrics need to read at scrape time. */
export interface TelemetrySources {
  version: string;
  upstreams: string[];
  inventory: CacheInventory;
  inflightDownloads: () => number;
  /** What the background check did (background_verify.ts), when it runs. */
  backgroundVerify?: { archives: number; bytes: number; bad: number };
  /** The configured `maxCacheSize` in bytes, exported so dashboards can show usage against it. */
  maxCacheBytes?: number | undefined;
  /** Where the process series are read (tests only; the default is the real process). */
  process?: ProcessSources;
  now?: () => number;
}

/** The route kind whose answer is a provider archive; every other cached answer is metadata. */
const ARCHIVE_ROUTE = "archive";

/** Latency buckets (seconds) for answers that are mostly local: sub-millisecond to a minute. */
const REQUEST_BUCKETS = [
  0.0005,
  0.001,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];
/** Latency buckets (seconds) for upstream round trips. */
const UPSTREAM_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * Whether an upstream answer counts against its health. 404 is an answer
 * ("not there"); missing answers, 5xx, 429 and refused credentials (401, 403:
 * a token that stopped working) are failures.
 */
export function isUpstreamFailure(status: number | "error"): boolean {
  return status === "error" || status >= 500 || status === 429 || status === 401 ||
    status === 403;
}

/** Repoxy's metrics and upstream health. */
export class Telemetry {
  readonly registry = new Registry();
  readonly requests: Counter;
  readonly requestDuration: Histogram;
  readonly bytesServed: Counter;
  readonly cacheLookups: Counter;
  readonly upstreamRequests: Counter;
  readonly upstreamErrors: Counter;
  readonly upstreamDuration: Histogram;
  readonly startedAt: number;
  readonly #health = new Map<string, UpstreamHealth>();
  readonly #now: () => number;
  readonly #process: ProcessCollector;

  constructor(readonly sources: TelemetrySources) {
    this.#now = sources.now ?? Date.now;
    this.startedAt = this.#now();
    const r = this.registry;
    r.register(
      new Gauge(
        "repoxy_build_info",
        "Repoxy version (the value is always 1)",
        ["version"],
        (g) => g.set({ version: sources.version }, 1),
      ),
    );
    this.requests = r.register(
      new Counter(
        "repoxy_http_requests_total",
        "HTTP requests answered, by route kind and status code",
        ["route", "status"],
      ),
    );
    this.requestDuration = r.register(
      new Histogram(
        "repoxy_http_request_duration_seconds",
        "Time until the response headers were ready, by route kind",
        REQUEST_BUCKETS,
        ["route"],
      ),
    );
    this.bytesServed = r.register(
      new Counter(
        "repoxy_http_response_bytes_total",
        "Response body bytes sent to clients (counted when a body ends or is abandoned)",
        ["route"],
      ),
    );
    this.cacheLookups = r.register(
      new Counter(
        "repoxy_cache_lookups_total",
        "Answers by where they came from: hit (cache), revalidated (cache, upstream confirmed it), miss (fetched upstream), stale (cache, upstream failed)",
        ["route", "result"],
      ),
    );
    this.upstreamRequests = r.register(
      new Counter(
        "repoxy_upstream_requests_total",
        'Requests to upstream registries and their download hosts, by status ("error": no response)',
        ["upstream", "status"],
      ),
    );
    this.upstreamErrors = r.register(
      new Counter(
        "repoxy_upstream_errors_total",
        "Upstream requests that failed: no_response (connect error, timeout), credentials (the registry refused Repoxy's token: 401/403 from its origin) or bad_status (5xx, 429, a download host's 401/403)",
        ["upstream", "reason"],
      ),
    );
    this.upstreamDuration = r.register(
      new Histogram(
        "repoxy_upstream_request_duration_seconds",
        "Time until upstream response headers arrived",
        UPSTREAM_BUCKETS,
        ["upstream"],
      ),
    );
    r.register(
      new Gauge(
        "repoxy_downloads_in_flight",
        "Archive downloads from upstreams in progress",
        [],
        (g) => g.set({}, sources.inflightDownloads()),
      ),
    );
    r.register(
      new Gauge(
        "repoxy_cache_size_bytes",
        "Total size of the cached provider archives",
        [],
        (g) => g.set({}, sources.inventory.totalBytes),
      ),
    );
    r.register(
      new Gauge(
        "repoxy_cache_archives",
        "Number of cached provider archives",
        [],
        (g) => g.set({}, sources.inventory.count),
      ),
    );
    const quota = sources.maxCacheBytes;
    if (quota !== undefined) {
      r.register(
        new Gauge(
          "repoxy_cache_max_bytes",
          "The configured maxCacheSize: archives are evicted to keep repoxy_cache_size_bytes under it",
          [],
          (g) => g.set({}, quota),
        ),
      );
    }
    const bv = sources.backgroundVerify;
    if (bv) {
      r.register(
        new Gauge(
          "repoxy_background_verify_archives",
          "Archives re-hashed by the background check since start",
          [],
          (g) => g.set({}, bv.archives),
        ),
      );
      r.register(
        new Gauge(
          "repoxy_background_verify_bad_archives",
          "Archives the background check found bad and quarantined since start",
          [],
          (g) => g.set({}, bv.bad),
        ),
      );
    }
    // Standard process_* series (and the heap), from /proc/self where there is one.
    this.#process = r.registerCollector(new ProcessCollector(sources.process));
    // Zero series from the start, so `rate()` and alerts see the first failure.
    for (const u of sources.upstreams) {
      this.upstreamErrors.inc({ upstream: u, reason: "no_response" }, 0);
      this.upstreamErrors.inc({ upstream: u, reason: "bad_status" }, 0);
      this.upstreamErrors.inc({ upstream: u, reason: "credentials" }, 0);
    }
  }

  /** Records an answered request (when its headers are ready). */
  onRequest(route: string, status: number, seconds: number, cache?: string): void {
    this.requests.inc({ route, status });
    this.requestDuration.observe({ route }, seconds);
    if (cache) this.cacheLookups.inc({ route, result: cache });
  }

  /** Records the body bytes of a response once the body ended. */
  onBytes(route: string, bytes: number): void {
    this.bytesServed.inc({ route }, bytes);
  }

  /** Records one upstream exchange. */
  onUpstream(info: UpstreamRequestInfo): void {
    const upstream = info.hostname;
    this.upstreamRequests.inc({ upstream, status: info.status });
    if (info.durationMs !== undefined && info.status !== "error") {
      this.upstreamDuration.observe({ upstream }, info.durationMs / 1000);
    }
    let h = this.#health.get(upstream);
    if (!h) {
      h = { requests: 0, failures: 0 };
      this.#health.set(upstream, h);
    }
    h.requests++;
    const at = this.#now();
    if (isUpstreamFailure(info.status)) {
      h.failures++;
      this.upstreamErrors.inc({
        upstream,
        reason: info.status === "error"
          ? "no_response"
          : info.credentials
          ? "credentials"
          : "bad_status",
      });
      if (info.credentials) {
        h.credentials = { at, status: info.status as number, problem: info.credentials };
      }
      h.lastFailure = {
        at,
        status: info.status,
        url: info.url,
        ...(info.error !== undefined ? { error: info.error } : {}),
      };
    } else {
      h.lastSuccess = { at, status: info.status as number, url: info.url };
    }
  }

  /** Health of one upstream (zeros when it was never contacted). */
  upstreamHealth(hostname: string): UpstreamHealth {
    return this.#health.get(hostname) ?? { requests: 0, failures: 0 };
  }

  /**
   * Cache answers for archives or for metadata since start. `hits` and
   * `stale` both came from the cache; `total` adds the misses.
   */
  cacheRatio(kind: "archive" | "metadata"): { hits: number; stale: number; total: number } {
    const count = (result: string) => {
      const archives = this.cacheLookups.get({ route: ARCHIVE_ROUTE, result });
      return kind === "archive" ? archives : this.cacheLookups.sum({ result }) - archives;
    };
    // A revalidated answer is served from the cache too (the upstream said 304).
    const hits = count("hit") + count("revalidated");
    const stale = count("stale");
    return { hits, stale, total: hits + stale + count("miss") };
  }

  /** Releases what the process collector keeps open (libc); rendering again reopens it. */
  close(): void {
    this.#process[Symbol.dispose]();
  }

  /** The metrics in the Prometheus text format. */
  render(): string {
    return this.registry.render();
  }
}
