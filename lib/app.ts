/**
 * The Repoxy application: `createApp(config, deps)` wires the stores, the
 * source (the upstream registries, or the cache alone when offline) and the
 * route table into one request handler. Everything with a side effect outside
 * the cache dir (fetch, clock, logging) is injected, so most tests call
 * `app.handle(new Request(...))` without a socket.
 *
 * A request goes: {@link keptAnswer} (finished metadata answers from memory)
 * → {@link observe} (metrics, access log) → {@link mapErrors} (JSON errors)
 * → {@link dispatch} (route, deadline) → the handler named in `ROUTES` (routes/table.ts).
 * @module
 */
import { AccessControl } from "./auth/access.ts";
import { loadUrlKey } from "./auth/url_key.ts";
import { createLogger, type Logger } from "./base/log.ts";
import { withFields } from "./base/log_fields.ts";
import { USER_AGENT, VERSION } from "./base/version.ts";
import type { BackgroundVerifier } from "./cache/background_verify.ts";
import { type CacheDir, openCacheDir } from "./cache/cache_dir.ts";
import type { Downloads } from "./cache/download.ts";
import type { CacheInventory } from "./cache/inventory.ts";
import type { PackageStore } from "./cache/package_store.ts";
import { startUpkeep, type UpkeepOptions } from "./cache/upkeep.ts";
import type { Config } from "./config/config.ts";
import { compose } from "./http/middleware.ts";
import { ResponseCache } from "./http/response_cache.ts";
import { registerStorageMetrics } from "./ops/storage_metrics.ts";
import { Telemetry } from "./ops/telemetry.ts";
import { tracingHooks } from "./ops/tracing.ts";
import type { Services } from "./routes/context.ts";
import { dispatch, keptAnswer, mapErrors, newContext, observe } from "./routes/pipeline.ts";
import { ROUTES } from "./routes/table.ts";
import { CacheSource } from "./sources/cache_source.ts";
import type { ProviderSource } from "./sources/source.ts";
import { UpstreamSource } from "./sources/upstream_source.ts";
import { type FetchFn, upstreamClients, type UpstreamRequestInfo } from "./upstream/client.ts";
import type { Resolver } from "./upstream/egress.ts";
import { Metadata } from "./upstream/metadata.ts";
import type { ModuleService } from "./modules/module_service.ts";
import { createModuleService } from "./modules/wiring.ts";

export { ROUTES };
export { serveApp } from "./http/server.ts";
/** Injected dependencies; every field has a real default. */
export interface AppDeps {
  fetch?: FetchFn;
  log?: Logger;
  now?: () => number;
  /** Called for every upstream HTTP request (tests count them; metrics get them anyway). */
  onUpstreamRequest?: (info: UpstreamRequestInfo) => void;
  /** Waits between upstream retries. */
  sleep?: (ms: number) => Promise<void>;
  /** DNS resolver of the egress policy (tests inject one). */
  resolve?: Resolver;
  /** Environment the proxy variables are read from (default `Deno.env`). */
  env?: (name: string) => string | undefined;
  /** Idle timeout of archive downloads, in ms. */
  downloadIdleTimeoutMs?: number;
  /** Deadline for a whole metadata answer, in ms (default: upstreamTimeout + 1.5 s, at most 9.5 s). */
  requestDeadlineMs?: number;
  /** Waits in the background jobs (inventory watch, background verify); tests pass a fast one. */
  backgroundSleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Time between disk recovery probes after a disk failure, in ms (default 5 s). */
  diskProbeIntervalMs?: number;
  /** Fleet lease tuning, and a coordination store other than the bucket's (tests). */
  fleet?: UpkeepOptions["fleet"];
}

/** A running Repoxy instance (without the listening socket). */
export interface App {
  readonly config: Config;
  readonly log: Logger;
  /** The cache directory's stores. */
  readonly cache: CacheDir;
  readonly packages: PackageStore;
  /** Archive downloads in flight (single-flight). */
  readonly downloads: Downloads;
  /** Where answers come from: the upstreams, or (offline) the cache alone. */
  readonly source: ProviderSource;
  /** Metrics and upstream health (served at `/-/metrics` and `/`). */
  readonly telemetry: Telemetry;
  /** The archives in `packages/`, kept in memory for metrics and the status page. */
  readonly inventory: CacheInventory;
  /** Re-hashes the cache in the background (`backgroundVerify`). */
  readonly verifier: BackgroundVerifier;
  /** Registry modules: version lists, stored archives. */
  readonly modules: ModuleService;
  /** Handles one request. Never throws: errors become JSON responses. */
  handle(req: Request): Promise<Response>;
  /** Waits for in-flight downloads and background jobs. */
  settle(): Promise<void>;
  /** Aborts upstream work (downloads in flight fail and clean up). */
  close(): Promise<void>;
}

/**
 * Creates the application. Prepares the cache directory and claims this
 * process's own temp folder in it (removing those of dead processes).
 */
export async function createApp(config: Config, deps: AppDeps = {}): Promise<App> {
  const log = withFields(deps.log ?? createLogger(config.logFormat), config.storage?.replicaId);
  const now = deps.now ?? Date.now;
  const shutdown = new AbortController();
  // S3 code loads only with a bucket; its leases (`fleet`) make one fetch per archive fleet-wide.
  const maxFillBytes = Math.min(config.limits.archiveBytes, config.maxCacheSizeBytes ?? Infinity);
  const s3 = config.storage ? await import("./storage_s3/mod.ts") : undefined;
  const tier = s3?.openBucketTier(config.storage!, { log, now, maxFillBytes });
  const cache = await openCacheDir(config.cacheDir, log, {
    tier: tier?.wrap,
    onSwept: (count) => {
      if (count > 0) log.warn("removed leftover temp files from an earlier run", { count });
    },
  });
  const { refs, packages } = cache;
  // Before anything starts: a key file that cannot be trusted stops start-up here.
  const urlKey = config.auth &&
    await loadUrlKey(config.cacheDir, config.auth.urlKey).catch(async (e) => {
      await cache.close();
      throw e;
    });
  // limits.metadataMemory bounds all metadata held: 5/8 for refs entries (and
  // what is parsed from them), 1/8 for `{version}.json` renderings
  // (routes/mirror.ts), 1/4 for finished answers.
  refs.setMemoryBytes(Math.floor(config.limits.metadataMemoryBytes * 5 / 8));
  // An envelope holds one document, JSON-escaped (at most twice its size).
  refs.maxEntryBytes = 2 * config.limits.metadataDocumentBytes + 2 ** 20;
  const upkeep = await startUpkeep(cache, {
    log,
    now,
    maxCacheBytes: config.maxCacheSizeBytes,
    limits: config.limits,
    backgroundVerify: config.backgroundVerify,
    downloadIdleTimeoutMs: deps.downloadIdleTimeoutMs,
    backgroundSleep: deps.backgroundSleep,
    diskProbeIntervalMs: deps.diskProbeIntervalMs,
    fleet: { ...tier?.fleetTuning(), ...deps.fleet },
  });
  const { inventory, downloads, diskHealth, verifier } = upkeep;
  tier?.onFilled(upkeep.stored);
  const telemetry = new Telemetry({
    version: VERSION,
    upstreams: [...config.upstreams.keys()],
    inventory,
    inflightDownloads: () => downloads.count,
    backgroundVerify: verifier.stats,
    maxCacheBytes: config.maxCacheSizeBytes,
    now,
  });
  registerStorageMetrics(telemetry.registry, tier?.observed(downloads.opts.fleet?.stats) ?? {});
  // Captured once: off, the request path has no tracing code in it at all.
  const tracer = tracingHooks();
  const fetchFn: FetchFn = deps.fetch ?? ((input, init) => fetch(input, init));
  const clients = upstreamClients(config, {
    fetch: tracer ? tracer.fetch(fetchFn) : fetchFn,
    log,
    userAgent: USER_AGENT,
    timeoutMs: config.upstreamTimeoutMs,
    signal: shutdown.signal,
    ...(deps.sleep ? { sleep: deps.sleep } : {}),
    ...(deps.resolve ? { resolve: deps.resolve } : {}),
    ...(deps.env ? { env: deps.env } : {}),
    onRequest: (info) => {
      telemetry.onUpstream(info);
      deps.onUpstreamRequest?.(info);
    },
  });
  const metadata = new Metadata(config, refs, clients, log, now);
  // The one place offline mode is decided.
  const source: ProviderSource = config.offline
    ? new CacheSource(cache)
    : new UpstreamSource({ config, metadata, packages, downloads, log, shutdown: shutdown.signal });
  const modules = await createModuleService(config, {
    ...cache,
    log,
    now,
    shutdown: shutdown.signal,
    clients,
    metrics: telemetry.registry,
    onStored: upkeep.afterStore,
    resolve: deps.resolve,
    env: deps.env,
    ...(config.offline ? {} : { answer: source.moduleAnswer.bind(source) }),
  });
  const access = config.auth ? new AccessControl(config.auth, urlKey!) : undefined;
  const services: Services = {
    config,
    log,
    ...(access ? { access } : {}),
    source,
    packages,
    refs,
    modules,
    answers: new ResponseCache(
      () => refs.generation,
      now,
      4096,
      Math.floor(config.limits.metadataMemoryBytes / 4),
    ),
    telemetry,
    inventory,
    inflightDownloads: () => downloads.count,
    diskHealth,
    ...(tier ? { bucket: tier } : {}),
    now,
    version: VERSION,
  };
  const deadlineMs = deps.requestDeadlineMs ?? Math.min(9_500, config.upstreamTimeoutMs + 1_500);
  const pipeline = compose(
    dispatch(ROUTES, services, deadlineMs),
    observe(services),
    mapErrors(services),
  );
  const handle = (req: Request, ctx: ReturnType<typeof newContext>) => {
    const kept = keptAnswer(req, ctx, services);
    return kept ? Promise.resolve(kept) : pipeline(req, ctx);
  };
  const settle = async () => {
    await source.settle?.();
    await modules.settle();
    await metadata.settle();
    await upkeep.settle();
    await tier?.settle();
  };
  return {
    config,
    log,
    cache,
    packages,
    downloads,
    source,
    telemetry,
    inventory,
    verifier,
    modules,
    handle(req) {
      const ctx = newContext(req, services);
      return tracer ? tracer.request(req, ctx, handle) : handle(req, ctx);
    },
    settle,
    async close() {
      shutdown.abort();
      await upkeep.close();
      await settle();
      // Whatever an aborted download left behind goes now, not at next start.
      await cache.close();
      telemetry.close();
    },
  };
}
