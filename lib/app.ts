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
import { createLogger, type Logger } from "./base/log.ts";
import { USER_AGENT, VERSION } from "./base/version.ts";
import { resetDir } from "./cache/atomic_write.ts";
import { type CacheDir, defaultTmpDir, openCacheDir } from "./cache/cache_dir.ts";
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
  registrySums,
  registryVersions,
  wellKnown,
} from "./routes/registry.ts";
import { CacheSource } from "./sources/cache_source.ts";
import type { ProviderSource } from "./sources/source.ts";
import { UpstreamSource } from "./sources/upstream_source.ts";
import { type FetchFn, upstreamClients, type UpstreamRequestInfo } from "./upstream/client.ts";
import { Metadata } from "./upstream/metadata.ts";

/** Every route Repoxy serves, by the kind `parseRoute` gives it. */
export const ROUTES: RouteTable = {
  // Network mirror protocol (archives are the registry protocol's downloads too).
  mirrorIndex: { handler: mirrorIndex },
  mirrorVersion: { handler: mirrorVersion },
  archive: { handler: archive, streams: true },
  // Provider and module registry protocol.
  wellKnown: { handler: wellKnown },
  registryVersions: { handler: registryVersions },
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
  /** Idle timeout of archive downloads, in ms. */
  downloadIdleTimeoutMs?: number;
  /** Deadline for a whole metadata answer, in ms (default: upstreamTimeout + 1.5 s, at most 9.5 s). */
  requestDeadlineMs?: number;
  /** Temp dir (emptied at start); default `<cacheDir>/tmp`. CLI commands use their own. */
  tmpDir?: string;
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
  /** Handles one request. Never throws: errors become JSON responses. */
  handle(req: Request): Promise<Response>;
  /** Waits for in-flight downloads and background jobs. */
  settle(): Promise<void>;
  /** Aborts upstream work (downloads in flight fail and clean up). */
  close(): Promise<void>;
}

/**
 * Creates the application. Prepares the cache directory (and empties its
 * temp dir).
 */
export async function createApp(config: Config, deps: AppDeps = {}): Promise<App> {
  const log = deps.log ?? createLogger(config.logFormat);
  const now = deps.now ?? Date.now;
  const shutdown = new AbortController();

  const tmpDir = deps.tmpDir ?? defaultTmpDir(config.cacheDir);
  const removed = await resetDir(tmpDir);
  if (removed > 0) log.warn("removed leftover temp files from an earlier run", { count: removed });

  const cache = await openCacheDir(config.cacheDir, log, { tmpDir });
  const { refs, packages } = cache;
  // limits.metadataMemory bounds all metadata held: 5/8 for refs entries (and
  // what is parsed from them), 1/8 for `{version}.json` renderings
  // (routes/mirror.ts), 1/4 for finished answers.
  refs.setMemoryBytes(Math.floor(config.limits.metadataMemoryBytes * 5 / 8));
  // Walked once here; afterwards every stored archive is added as it comes,
  // and with a quota may evict others.
  const inventory = new CacheInventory(cache.storage);
  await inventory.scan();
  const quota = config.maxCacheSizeBytes === undefined
    ? undefined
    : new QuotaKeeper(cache, config.maxCacheSizeBytes, log);
  packages.onStored((p, v, pl, size, key) => {
    inventory.add(p, v, pl, size);
    quota?.afterStore(key);
  });
  const downloads = new Downloads(packages, log, {
    ...(deps.downloadIdleTimeoutMs ? { idleTimeoutMs: deps.downloadIdleTimeoutMs } : {}),
    now,
  });
  const telemetry = new Telemetry({
    version: VERSION,
    upstreams: [...config.upstreams.keys()],
    inventory,
    inflightDownloads: () => downloads.count,
    now,
  });
  const clients = upstreamClients(config, {
    fetch: deps.fetch ?? ((input, init) => fetch(input, init)),
    log,
    userAgent: USER_AGENT,
    timeoutMs: config.upstreamTimeoutMs,
    signal: shutdown.signal,
    ...(deps.sleep ? { sleep: deps.sleep } : {}),
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

  const services: Services = {
    config,
    log,
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
    handle(req) {
      const ctx = newContext(req, services);
      const kept = keptAnswer(req, ctx, services);
      return kept ? Promise.resolve(kept) : pipeline(req, ctx);
    },
    settle,
    async close() {
      shutdown.abort();
      await settle();
      // Whatever an aborted download left behind goes now, not at next start.
      await resetDir(tmpDir).catch(() => {});
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
    onDrained: () => app.close(),
  });
}
