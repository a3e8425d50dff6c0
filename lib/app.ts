/**
 * The Repoxy application: `createApp(config, deps)` wires the stores, the
 * source (the upstream registries, or the cache alone when offline) and the
 * route table into one request handler. Everything with a side effect outside
 * the cache dir (fetch, clock, logging) is injected, so most tests call
 * `app.handle(new Request(...))` without a socket.
 *
 * A request goes: {@link keptAnswer} (finished metadata answers from memory)
 * → {@link observe} (metrics, access log) → {@link mapErrors} (JSON errors)
 * → {@link dispatch} (route, deadline) → the handler named in {@link ROUTES}.
 * @module
 */
import { AccessControl } from "./auth/access.ts";
import { loadUrlKey } from "./auth/url_key.ts";
import { createLogger, type Logger } from "./base/log.ts";
import { USER_AGENT, VERSION } from "./base/version.ts";
import { BackgroundVerifier } from "./cache/background_verify.ts";
import { type CacheDir, openCacheDir } from "./cache/cache_dir.ts";
import { DiskHealth } from "./cache/disk_health.ts";
import { Downloads } from "./cache/download.ts";
import { CacheInventory } from "./cache/inventory.ts";
import type { PackageStore } from "./cache/package_store.ts";
import { QuotaKeeper } from "./cache/quota.ts";
import type { Config } from "./config/config.ts";
import { compose } from "./http/middleware.ts";
import { ResponseCache } from "./http/response_cache.ts";
import { type RunningServer, startServer } from "./http/server.ts";
import { Telemetry } from "./ops/telemetry.ts";
import type { Services } from "./routes/context.ts";
import { archive, mirrorIndex, mirrorVersion } from "./routes/mirror.ts";
import { health, metrics, ready, status } from "./routes/operator.ts";
import {
  dispatch,
  keptAnswer,
  mapErrors,
  newContext,
  observe,
  type RouteTable,
} from "./routes/pipeline.ts";
import {
  moduleDownload,
  moduleVersions,
  registryDownload,
  registryLegacyLookup,
  registrySums,
  registryVersions,
  wellKnown,
} from "./routes/registry.ts";
import { CacheSource } from "./sources/cache_source.ts";
import type { ProviderSource } from "./sources/source.ts";
import { UpstreamSource } from "./sources/upstream_source.ts";
import { type FetchFn, upstreamClients, type UpstreamRequestInfo } from "./upstream/client.ts";
import type { Resolver } from "./upstream/egress.ts";
import { Metadata } from "./upstream/metadata.ts";

/** How long shutdown waits for `h1:` jobs before abandoning them. */
const H1_SHUTDOWN_GRACE_MS = 2_000;

/** Every route Repoxy serves, by the kind `parseRoute` gives it. */
export const ROUTES: RouteTable = {
  // Network mirror protocol (archives are the registry protocol's downloads too).
  mirrorIndex: { handler: mirrorIndex },
  mirrorVersion: { handler: mirrorVersion },
  archive: { handler: archive, streams: true },
  // Provider and module registry protocol.
  wellKnown: { handler: wellKnown },
  registryVersions: { handler: registryVersions },
  registryLegacyLookup: { handler: registryLegacyLookup },
  registryDownload: { handler: registryDownload },
  registrySums: { handler: registrySums },
  moduleVersions: { handler: moduleVersions },
  moduleDownload: { handler: moduleDownload },
  // Operators.
  health: { handler: health },
  ready: { handler: ready },
  metrics: { handler: metrics },
  status: { handler: status },
};

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
  const log = deps.log ?? createLogger(config.logFormat);
  const now = deps.now ?? Date.now;
  const shutdown = new AbortController();

  const cache = await openCacheDir(config.cacheDir, log, {
    onSwept: (removed) => {
      if (removed > 0) {
        log.warn("removed leftover temp files from an earlier run", { count: removed });
      }
    },
  });
  const { refs, packages } = cache;
  // limits.metadataMemory bounds all metadata held: 5/8 for refs entries (and
  // what is parsed from them), 1/8 for `{version}.json` renderings
  // (routes/mirror.ts), 1/4 for finished answers.
  refs.setMemoryBytes(Math.floor(config.limits.metadataMemoryBytes * 5 / 8));
  // Walked once here; afterwards every stored archive is added as it comes,
  // and with a quota may evict others.
  const inventory = new CacheInventory(cache.storage);
  await inventory.scan();
  const quota: QuotaKeeper | undefined = config.maxCacheSizeBytes === undefined
    ? undefined
    : new QuotaKeeper(cache, config.maxCacheSizeBytes, log, (): number => downloads.reservedBytes);
  const diskHealth = new DiskHealth(cache.storage, log, {
    cacheDir: config.cacheDir,
    ...(deps.diskProbeIntervalMs ? { probeIntervalMs: deps.diskProbeIntervalMs } : {}),
  });
  packages.onStored((p, v, pl, size, key) => {
    inventory.add(p, v, pl, size);
    quota?.afterStore(key);
  });
  packages.onRemoved((p, v, pl) => inventory.remove(p, v, pl));
  const background = new AbortController();
  const watching = inventory.watch({
    marker: () => packages.changeMarker(),
    signal: background.signal,
    now,
    ...(deps.backgroundSleep ? { sleep: deps.backgroundSleep } : {}),
    onError: (e) => log.warn("cannot rescan the cache", { error: e.message }),
  });
  const verifier = new BackgroundVerifier(cache, {
    ...config.backgroundVerify,
    log,
    now,
    ...(deps.backgroundSleep ? { sleep: deps.backgroundSleep } : {}),
  });
  verifier.start();
  const downloads: Downloads = new Downloads(packages, log, {
    ...(deps.downloadIdleTimeoutMs ? { idleTimeoutMs: deps.downloadIdleTimeoutMs } : {}),
    now,
    limits: config.limits,
    health: diskHealth,
    ...(config.maxCacheSizeBytes === undefined ? {} : { maxCacheBytes: config.maxCacheSizeBytes }),
    // Prunes only when archives and reservations together pass the quota.
    ...(quota
      ? {
        onReserve: () => {
          if (inventory.totalBytes + downloads.reservedBytes > quota.maxBytes) quota.makeRoom();
        },
      }
      : {}),
  });
  const telemetry = new Telemetry({
    version: VERSION,
    upstreams: [...config.upstreams.keys()],
    inventory,
    inflightDownloads: () => downloads.count,
    backgroundVerify: verifier.stats,
    now,
  });
  const clients = upstreamClients(config, {
    fetch: deps.fetch ?? ((input, init) => fetch(input, init)),
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

  const access = config.auth
    ? new AccessControl(config.auth, await loadUrlKey(config.cacheDir, config.auth.urlKey))
    : undefined;
  const services: Services = {
    config,
    log,
    ...(access ? { access } : {}),
    source,
    packages,
    refs,
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
    now,
    version: VERSION,
  };
  const deadlineMs = deps.requestDeadlineMs ?? Math.min(9_500, config.upstreamTimeoutMs + 1_500);
  const pipeline = compose(
    dispatch(ROUTES, services, deadlineMs),
    observe(services),
    mapErrors(services),
  );

  const settle = async () => {
    await metadata.settle();
    await downloads.settle();
    await packages.settle();
    await quota?.idle();
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
    handle(req) {
      const ctx = newContext(req, services);
      const kept = keptAnswer(req, ctx, services);
      return kept ? Promise.resolve(kept) : pipeline(req, ctx);
    },
    settle,
    async close() {
      shutdown.abort();
      background.abort();
      await verifier.stop();
      await watching;
      await diskHealth.close();
      // h1: jobs get a short grace (what was just stored gets its hash),
      // then are abandoned: a huge or hostile archive must not hold shutdown up.
      let grace: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        packages.settle(),
        new Promise((r) => grace = setTimeout(r, H1_SHUTDOWN_GRACE_MS)),
      ]);
      clearTimeout(grace);
      packages.abortH1Jobs();
      await settle();
      // Whatever an aborted download left behind goes now, not at next start.
      await cache.close();
    },
  };
}

/**
 * Serves `app` on its configured address; shutting the server down also
 * closes the app (stops downloads, removes their temp files).
 */
export function serveApp(app: App): RunningServer {
  return startServer(app.handle, {
    ...app.config.listen,
    tls: app.config.tls,
    log: app.log,
    limits: app.config.limits,
    onDrained: () => app.close(),
  });
}
